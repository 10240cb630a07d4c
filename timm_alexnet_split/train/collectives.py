"""Collectives that keep the processes of a distributed run in step, and what a failed one means."""
from __future__ import annotations

import argparse
import contextlib
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterator, List, Optional

import torch
import torch.distributed as dist

from ..errors import one_line
from .stops import StopRequest, signal_flags, signal_from_flags


class PeerLost(Exception):
    """A collective operation failed: another process died or did not answer within --dist-timeout."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


_COMM_ERROR_WORDS = ('gloo', 'NCCL', 'ProcessGroup', 'Connection reset by peer', 'Connection closed by peer',
                     'Broken pipe')


def is_comm_failure(e: BaseException) -> bool:
    """A failed collective (a dead or silent peer), as gloo, NCCL and c10d report it."""
    if not (dist.is_available() and dist.is_initialized()):
        return False
    return isinstance(e, dist.DistError) or (isinstance(e, RuntimeError) and any(w in str(e) for w in _COMM_ERROR_WORDS))


def peer_lost_message(e: BaseException, timeout: Optional[float] = None, last: Optional[Path] = None) -> str:
    """One line: which process, what failed, what to do."""
    detail = one_line(e, 300)
    if last is not None and last.is_file():
        resume = f'the last complete epoch is in {last}: run the same command again with --resume {last}'
    elif last is not None:
        resume = 'no epoch was completed: start the run again'
    else:
        resume = 'see the other processes\' messages'
    within = f'--dist-timeout {timeout:g} s' if timeout is not None else '--dist-timeout'
    return (f'process {dist.get_rank()} of {dist.get_world_size()}: distributed training stopped: a collective '
            f'operation failed, so another process has died or did not answer within {within} '
            f'({type(e).__name__}: {detail}); {resume}')


@contextlib.contextmanager
def collective_timeout(seconds: float) -> Iterator[None]:
    """torch.distributed.init_process_group gets ``timeout=seconds`` while timm's init_distributed_device calls it:
    every collective of the job then fails after that long instead of waiting (gloo: 30 min, NCCL: 10 min)."""

    original = dist.init_process_group

    def init_process_group(*a: Any, **k: Any) -> Any:
        k.setdefault('timeout', timedelta(seconds=seconds))
        return original(*a, **k)

    dist.init_process_group = init_process_group
    try:
        yield
    finally:
        dist.init_process_group = original


def broadcast_from_primary(obj: Any) -> Any:
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(obj: Any, world_size: int) -> List[Any]:
    out: List[Any] = [None] * world_size
    dist.all_gather_object(out, obj)
    return out


def agreed_signal(stop: StopRequest, args: argparse.Namespace, device: torch.device) -> Optional[int]:
    """The stop request of this process, or in a distributed run of any process (so that all stop together)."""
    if not args.distributed:
        return stop.signum
    flags = torch.tensor(signal_flags(stop), device=device)
    dist.all_reduce(flags)
    return signal_from_flags(*flags.tolist())
