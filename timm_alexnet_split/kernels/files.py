"""The kernel tool's name, its output folder and its small file helpers (atomic writes, JSON-safe values, progress).

Torch-free (standard library and numpy only), like every module of the kernel tool, so the tool runs as a plain
script. The error class (``KernelsError``) and ``one_line`` live in ``errors``, which the ONNX reader shares.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any, Dict, Sequence

import numpy as np

from ..atomic import replace_when_done
from ..errors import KernelsError, one_line

PROG = 'timm-alexnet-split kernels'


DURING = 'while the kernel tool ran'


def save_figure(fig, path: Path) -> None:
    """Write a matplotlib figure atomically (``atomic.replace_when_done``; format from the suffix)."""
    with replace_when_done(path, True, DURING) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip('.'))


def write_json(obj: Dict[str, Any], path: Path) -> None:
    """Write ``obj`` as indented JSON atomically; NaN is refused (``clean`` it first)."""
    text = json.dumps(obj, indent=1, allow_nan=False) + '\n'
    with replace_when_done(path, True, DURING) as tmp:
        tmp.write_text(text)


def clean(x: Any) -> Any:
    """JSON-safe copy: NaN/inf become None, numpy scalars and arrays become Python numbers and lists."""
    if isinstance(x, dict):
        return {k: clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [clean(v) for v in x]
    if isinstance(x, np.ndarray):
        return clean(x.tolist())
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.generic):  # np.bool_ and the other numpy scalars
        return clean(x.item())
    return x


def progress(i: int, n: int, what: str) -> None:
    """'what: i/n' on a terminal (one updating line), nothing otherwise."""
    if sys.stderr.isatty():
        end = '\n' if i == n else ''
        print(f'\r{what}: {i}/{n}', end=end, file=sys.stderr, flush=True)


def check_out(out: Path, names: Sequence[str], force: bool) -> None:
    """Refuse an --out that is a file, or that already holds one of ``names`` unless ``force``."""
    if out.exists() and not out.is_dir():
        raise KernelsError(f'--out {out} is a file, not a folder; choose another --out')
    existing = [n for n in names if (out / n).exists()]
    if existing and not force:
        raise KernelsError(f'{out} already holds a report ({", ".join(existing)}); pass --force to overwrite it '
                           'or choose another --out')


def make_out(out: Path) -> None:
    """Create the output folder, or fail with one line."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise KernelsError(f'cannot create --out {out} ({e.strerror or one_line(e)})') from None
