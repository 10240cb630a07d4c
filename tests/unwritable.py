"""Places no output can be written to, for root too (CI runs as root, for whom chmod changes nothing).

``unwritable_folder(tmp_path, kind)`` gives a folder in which nothing can be created:

- 'read-only': a folder holding one user file (``kept.txt``), made read-only by a read-only bind mount (root with
  CAP_SYS_ADMIN), else ``chattr +i`` (root), else chmod 555 (any other user); skipped where none of these works;
- 'under-a-file': a path below a regular file (ENOTDIR for everyone).
"""
from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

KINDS = ('read-only', 'under-a-file')
KEPT = 'kept.txt'


def _can_create_in(folder: Path) -> bool:
    probe = folder / '.probe'
    try:
        probe.write_text('x')
    except OSError:
        return False
    probe.unlink()
    return True


def _run(*cmd: str) -> bool:
    try:
        return subprocess.run(cmd, capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@contextlib.contextmanager
def _read_only(folder: Path) -> Iterator[None]:
    ways = []
    if os.geteuid() == 0:
        ways += [(('mount', '--bind', '-o', 'ro', str(folder), str(folder)), ('umount', str(folder))),
                 (('chattr', '+i', str(folder)), ('chattr', '-i', str(folder)))]
    else:
        ways += [(('chmod', '555', str(folder)), ('chmod', '755', str(folder)))]
    for make, undo in ways:
        if not _run(*make):
            continue
        try:
            if not _can_create_in(folder):
                yield
                return
        finally:
            _run(*undo)
    pytest.skip('no way to make a read-only folder here (no mount, chattr or non-root chmod)')


@contextlib.contextmanager
def unwritable_folder(tmp_path: Path, kind: str) -> Iterator[Path]:
    """A folder under ``tmp_path`` in which no file or folder can be created (see the module docstring)."""
    if kind == 'under-a-file':
        (tmp_path / 'a-file').write_text('mine')
        yield tmp_path / 'a-file'
        return
    folder = tmp_path / 'read-only'
    folder.mkdir()
    (folder / KEPT).write_text('mine')
    with _read_only(folder):
        yield folder
    assert (folder / KEPT).read_text() == 'mine' and [p.name for p in folder.iterdir()] == [KEPT]
