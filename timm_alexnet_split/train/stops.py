"""A stop request (SIGINT/SIGTERM) in the main process, and its encoding for agreeing on it across processes.

What the training loop (which checks it between batches) and the collectives (which share it among processes)
both need, below both of them: nothing here imports the rest of the trainer. Invariant: a stop signal is the main
process's (a forked loader worker's delivery is ignored), the same signal again within ``ECHO_SECONDS`` is one
request delivered twice, a later one stops at once.
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from typing import Any, Dict, Optional, Tuple


class Interrupted(Exception):
    """The run stops because of signal ``signum`` (exit status 128 + signum, after the checkpoint)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class StopRequest:
    """SIGINT/SIGTERM set a flag that the loops check between batches; a second signal stops at once."""

    def __init__(self) -> None:
        self.signum: Optional[int] = None
        self.last_batch: Optional[int] = None  # the training batch after which the loop stopped
        self._old: Dict[int, Any] = {}
        self._pid = os.getpid()
        self._when = 0.0

    ECHO_SECONDS = 1.0  # the same signal again this soon is one request delivered twice, not a second one

    def _handle(self, signum: int, frame: Any) -> None:
        if os.getpid() != self._pid:  # a loader worker (forked with this handler): the main process stops and tells
            return
        if self.signum is not None:
            # GNU timeout sends its signal to the command and then to the command's process group: two deliveries
            # of one request, which must not turn a clean stop into an immediate one
            if signum == self.signum and time.monotonic() - self._when < self.ECHO_SECONDS:
                return
            raise KeyboardInterrupt
        self.signum, self._when = signum, time.monotonic()
        # not through logging: the handler may run while the main thread is inside a logging call (reentrant write)
        with contextlib.suppress(OSError):
            os.write(2, f'{signal.Signals(signum).name}: stopping after this batch and saving a checkpoint '
                        '(signal again, a second later, to stop at once)\n'.encode())

    def __enter__(self) -> 'StopRequest':
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)

    def check(self) -> None:
        if self.signum is not None:
            raise Interrupted(self.signum)


def signal_flags(stop: Optional[StopRequest]) -> Tuple[float, float]:
    """(SIGINT asked, another signal asked) as numbers, to be summed over processes (``signal_from_flags``)."""
    sig = stop.signum if stop is not None else None
    return float(sig == signal.SIGINT), float(sig is not None and sig != signal.SIGINT)


def signal_from_flags(n_int: float, n_other: float) -> Optional[int]:
    """The stop request any process got, the same answer on every process (SIGINT before SIGTERM)."""
    return int(signal.SIGINT) if n_int > 0 else int(signal.SIGTERM) if n_other > 0 else None
