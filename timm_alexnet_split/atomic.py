"""Writing a user's output file so that it is either the old file or the new one, never half of one.

Every way the output can be unwritable (read-only folder or file system, no permission, a file where a folder
should be, disk full) ends in one UserError line, raised as early as it can be known and never replaced by an
error from cleaning up.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import sys
from pathlib import Path
from typing import Iterator, List

from .errors import UserError

__all__ = ['check_writable', 'replace_when_done', 'write_text']


def _why(e: OSError) -> str:
    return e.strerror or str(e)


def _temp_path(dest: Path, keep_suffix: bool = False) -> Path:
    """The hidden name beside ``dest`` that the new file is written under (``keep_suffix``: ending in dest's suffix,
    for writers that choose the format by the name, such as matplotlib's GIF writer)."""
    if keep_suffix:
        return dest.with_name(f'.{dest.stem}.{os.getpid()}.tmp{dest.suffix}')
    return dest.with_name(f'.{dest.name}.{os.getpid()}.tmp')


def _missing_folders(dest: Path) -> List[Path]:
    """The folders above ``dest`` that do not exist yet, outermost first; UserError if a file stands where one must be."""
    missing = []
    for folder in [dest.parent, *dest.parent.parents]:
        try:
            if folder.is_dir():
                break
            if folder.exists() or folder.is_symlink():
                raise UserError(f'cannot write {dest}: {folder} is not a folder')
        except OSError as e:  # no permission to look
            raise UserError(f'cannot write {dest}: {_why(e)}') from None
        missing.append(folder)
    return missing[::-1]


def _make_folders(dest: Path, folders: List[Path]) -> None:
    for folder in folders:
        try:
            folder.mkdir(exist_ok=True)
        except OSError as e:
            raise UserError(f'cannot write {dest}: cannot create the folder {folder} ({_why(e)})') from None


def _remove_quietly(path: Path, what: str, tree: bool = False) -> None:
    """Remove our temporary file or folder (``tree``: with what is in it; else only an empty one); a failure is a note,
    never an error that hides the real one."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path) if tree else path.rmdir()
        else:
            path.unlink(missing_ok=True)
    except FileNotFoundError:
        pass
    except OSError as e:
        if what:
            print(f'note: could not remove the {what} {path} ({_why(e)})', file=sys.stderr)


def _fsync(path: Path) -> None:
    """The file's data on disk before it replaces the old file (else a crash can leave an empty file in its place)."""
    with open(path, 'rb+') as f:
        os.fsync(f.fileno())


def _create(tmp: Path, folder: bool) -> None:
    """An empty file or folder at ``tmp`` (with the usual mode, not tempfile's 0600 / 0700)."""
    if not folder:
        tmp.open('wb').close()
        return
    try:
        tmp.mkdir()
    except FileExistsError:
        raise UserError(f'{tmp} is left from an earlier run that stopped; remove it and try again') from None


def check_writable(dest: Path, make_folder: bool = False) -> None:
    """UserError now, before long work, if a new file cannot be created beside ``dest``.

    Creates and removes the temporary file that :func:`replace_when_done` would use. With ``make_folder`` missing
    folders are created (and kept); without it a missing folder is an error.
    """
    dest = Path(dest)
    missing = _missing_folders(dest)
    if missing and not make_folder:
        raise UserError(f'cannot write {dest}: the folder {missing[0]} does not exist; create it first')
    _make_folders(dest, missing)
    tmp = _temp_path(dest)
    try:
        tmp.open('wb').close()
    except OSError as e:
        raise UserError(f'cannot write {dest}: {_why(e)}') from None
    _remove_quietly(tmp, 'temporary file')


@contextlib.contextmanager
def replace_when_done(dest: Path, overwrite: bool, during: str, make_folder: bool = False,
                      folder: bool = False, keep_suffix: bool = False) -> Iterator[Path]:
    """A temporary path beside ``dest`` to write (and check) the new file at; when the block ends without an error
    it replaces ``dest``. An error leaves ``dest`` as it was, and the temporary file never outlives the block.

    Args:
        dest: the output file.
        overwrite: replace a ``dest`` that appeared while the block ran (without it: UserError).
        during: what was running, for that message ('during the export').
        make_folder: create ``dest``'s missing folders (removed again, if still empty, when the block fails);
            without it a missing folder is a UserError.
        folder: the output is a folder: the temporary path is an empty folder to fill, and it can replace only a
            ``dest`` that is missing or an empty folder (a folder with files in it is never replaced).
        keep_suffix: the temporary name ends in ``dest``'s suffix ('.gif'), for a writer that picks the format
            from the name.

    The temporary file is created before the block runs, so an unwritable place is reported before any work, and
    is synced to disk before it replaces ``dest``.
    An OSError (disk full, no permission, read-only file system) becomes a one-line UserError; cleaning up never
    replaces the error that ended the block.
    """
    dest = Path(dest)
    missing = _missing_folders(dest)
    if missing and not make_folder:
        raise UserError(f'cannot write {dest}: the folder {missing[0]} does not exist; create it first')
    tmp = _temp_path(dest, keep_suffix)
    created = done = False
    try:
        _make_folders(dest, missing)
        try:
            _create(tmp, folder)
            created = True
            yield tmp
            if dest.exists() and not overwrite:
                raise UserError(f'{dest} appeared {during}; use --force to replace it')
            if not folder:
                _fsync(tmp)
            os.replace(tmp, dest)
            done = True
        except OSError as e:
            raise UserError(f'cannot write {dest}: {_why(e)}') from None
        finally:
            if created and not done:
                _remove_quietly(tmp, 'temporary folder' if folder else 'temporary file', tree=folder)
    finally:
        if not done:
            for made in reversed(missing):
                _remove_quietly(made, '')


def write_text(dest: Path, text: str, during: str, make_folder: bool = False) -> None:
    """``text`` (UTF-8) as the new content of ``dest`` through :func:`replace_when_done`, replacing what is there:
    for outputs a command owns (a benchmark's JSON, a class map), which are the old or the new file, never half."""
    with replace_when_done(Path(dest), overwrite=True, during=during, make_folder=make_folder) as tmp:
        tmp.write_text(text, encoding='utf-8')
