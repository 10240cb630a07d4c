"""The error classes a user can cause (bad path, unknown model, corrupt file...) and the one way to put an
exception's message into such an error.

The command line turns a UserError into one line on stderr and exit status 2, never a traceback. Torch-free
(standard library only): the kernel tool and the ONNX reader import it.
"""
from __future__ import annotations

import argparse
from typing import NoReturn, Optional, Type


class UserError(Exception):
    """A problem with the user's input, with a message that says what to do."""


class KernelsError(UserError):
    """Bad input to the kernel tool or the ONNX reader (file, graph or option): the message says what is wrong and
    what to do."""


class CommandParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors (unknown option, bad value, missing argument) are a UserError of one line
    that names the command's --help, instead of argparse's usage block and exit: the command line prints it as every
    other bad input (``cli.main``). ``--help`` prints and exits as usual."""

    error_class: Type[UserError] = UserError

    def error(self, message: str) -> NoReturn:
        raise self.error_class(f'{message} (see {self.prog} --help)')


def worker_message(text: str) -> str:
    """The error's own message where a DataLoader worker raised it: PyTorch re-raises it in the main process as
    "Caught X in DataLoader worker process N.\\nOriginal Traceback ...\\nX: message"; the last line's message then
    (the text unchanged otherwise)."""
    if not text.startswith('Caught ') or 'Original Traceback' not in text:
        return text
    last = text.rstrip().splitlines()[-1]
    head, sep, message = last.partition(': ')
    return message if sep and ' ' not in head else last


def one_line(e: BaseException, limit: Optional[int] = 160, first_line: bool = False) -> str:
    """An exception's message on one line (its type's name when it has none), for quoting in a UserError.

    Args:
        e: the exception.
        limit: at most this many characters (longer ends in '...'); None: no limit.
        first_line: keep only the first line of the message (a library's multi-line report), cut at ``limit``
            without '...'; otherwise every line is joined with single spaces.
    """
    if first_line:
        text = str(e).strip()
        text = text.splitlines()[0] if text else type(e).__name__
        return text if limit is None else text[:limit]
    text = ' '.join(str(e).split()) or type(e).__name__
    return text if limit is None or len(text) <= limit else text[:limit - 3] + '...'
