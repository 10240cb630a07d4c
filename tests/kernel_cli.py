"""Running the kernel tool in-process and reading its report (shared by the test_kernels* files)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Tuple

from timm_alexnet_split import kernels as K


def run(argv: List, capsys) -> Tuple[int, str, str]:
    """(exit status, stdout, stderr) of ``kernels`` with ``argv`` (paths turned into strings)."""
    rc = K.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def report(out: Path) -> dict:
    """The report.json the tool wrote into ``out``."""
    return json.loads((out / 'report.json').read_text())
