"""Timing steps against each other in the same run: interleaved rounds, the median, images per second.

Below every benchmark (``bench``, ``ort_bench``): it imports torch and ``progress`` only, so a benchmark module
never imports another to time its steps. Invariant: every variant is timed once per round, in the same order, with
the device synchronised around each step, so that load drift on a shared machine hits all variants alike.
"""
from __future__ import annotations

import statistics
import time
from typing import Callable, Dict, List, Optional

import torch

from .progress import progress

__all__ = ['sync', 'time_variants']


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); nothing on the CPU."""
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_variants(steps: Dict[str, Callable[[], None]], device: torch.device, rounds: int, warmup: int,
                  batch: int, warm_s: Optional[Dict[str, float]] = None) -> Dict[str, float]:
    """Images/s per variant: warm-up, then `rounds` interleaved timed steps, median. ``warm_s`` receives each
    variant's warm-up seconds (for a torch.compile'd one: mostly its compilation)."""
    for k, fn in steps.items():
        t = time.perf_counter()
        for _ in range(warmup):
            fn()
        sync(device)
        if warm_s is not None:
            warm_s[k] = time.perf_counter() - t
    times: Dict[str, List[float]] = {k: [] for k in steps}
    for _ in progress(range(rounds), desc='timing', unit='round'):
        for k, fn in steps.items():
            sync(device)
            t = time.perf_counter()
            fn()
            sync(device)
            times[k].append(time.perf_counter() - t)
    return {k: batch / statistics.median(v) for k, v in times.items()}
