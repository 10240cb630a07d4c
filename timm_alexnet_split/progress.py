"""Progress of long work: a tqdm bar on a terminal, plain lines in a log (no carriage returns), nothing when off.

``progress(total=..., desc=...)`` is used like tqdm: as a context manager with ``update(n)``, or wrapping
an iterable. Off a terminal it prints ``desc: n/total (p%)`` on stderr at most every ``every`` seconds and
at the end (work shorter than ``quiet_under`` seconds prints nothing), so a log file gets a handful of
readable lines instead of thousands of bar redraws.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Iterable, Iterator, Optional, TextIO

__all__ = ['progress', 'PlainProgress']


class PlainProgress:
    """tqdm's counting interface, reported as plain lines (at most one per ``every`` seconds, and the last)."""

    def __init__(self, iterable: Optional[Iterable] = None, total: Optional[int] = None, desc: str = '',
                 unit: str = 'it', every: float = 10.0, file: Optional[TextIO] = None, quiet_under: float = 2.0) -> None:
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, '__len__'):
            total = len(iterable)  # type: ignore[arg-type]
        self.total, self.desc, self.unit, self.every, self.quiet_under = total, desc, unit, every, quiet_under
        self._printed = False
        self.file = file if file is not None else sys.stderr
        self.n = 0
        self._start = self._last = time.monotonic()
        self._closed = False

    def _line(self) -> str:
        elapsed = time.monotonic() - self._start
        done = f'{self.n}/{self.total} {self.unit}' if self.total else f'{self.n} {self.unit}'
        pct = f' ({100 * self.n / self.total:.0f}%)' if self.total else ''
        return f'{self.desc}: {done}{pct}, {elapsed:.0f} s'

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._last >= self.every and (not self.total or self.n < self.total):
            self._last = now
            self._printed = True
            print(self._line(), file=self.file, flush=True)

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        """tqdm's per-bar details have no place in a plain line."""

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self.n and (self._printed or time.monotonic() - self._start >= self.quiet_under):
                print(self._line(), file=self.file, flush=True)

    def __enter__(self) -> 'PlainProgress':
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __iter__(self) -> Iterator[Any]:
        assert self.iterable is not None, 'nothing to iterate'
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()


class _Silent(PlainProgress):
    def update(self, n: int = 1) -> None:
        self.n += n

    def close(self) -> None:
        self._closed = True


def progress(iterable: Optional[Iterable] = None, total: Optional[int] = None, desc: str = '', unit: str = 'it',
             enabled: bool = True, leave: bool = False, every: float = 10.0) -> Any:
    """A tqdm bar when stderr is a terminal, else a :class:`PlainProgress`; a silent counter when not ``enabled``."""
    if not enabled:
        return _Silent(iterable, total, desc, unit)
    if sys.stderr.isatty():
        from tqdm import tqdm
        return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, dynamic_ncols=True)
    return PlainProgress(iterable, total, desc, unit, every)
