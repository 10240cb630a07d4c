"""Writing a user's output file so that it is either the old file or the new one, never half of one."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

from .errors import UserError

__all__ = ['replace_when_done']


@contextlib.contextmanager
def replace_when_done(dest: Path, overwrite: bool, during: str) -> Iterator[Path]:
    """A temporary path beside ``dest`` to write (and check) the new file at; when the block ends without an error
    it replaces ``dest``. An error leaves ``dest`` as it was, and the temporary file never outlives the block.

    Args:
        dest: the output file; its folder must exist.
        overwrite: replace a ``dest`` that appeared while the block ran (without it: UserError).
        during: what was running, for that message ('during the export').

    An OSError (disk full, no permission) becomes a one-line UserError.
    """
    tmp = dest.with_name(f'.{dest.name}.{os.getpid()}.tmp')
    try:
        yield tmp
        if dest.exists() and not overwrite:
            raise UserError(f'{dest} appeared {during}; use --force to replace it')
        os.replace(tmp, dest)
    except OSError as e:
        raise UserError(f'cannot write {dest}: {e.strerror or e}') from None
    finally:
        tmp.unlink(missing_ok=True)
