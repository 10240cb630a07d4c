"""Process-level settings that make CPU training of this network faster.

glibc's malloc hands large freed blocks back to the kernel (mmap for blocks above a threshold that
it raises only up to 32 MiB, and heap trimming), so every fresh activation of a training step
(tens of MB each for AlexNet at batch 32) is page-faulted in again. Keeping freed memory in the
process removes that: on a 2-core CPU it raised alexnet_split_2's training throughput by about 25%
(docs/benchmarks.md). The price is that the process keeps its peak memory.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_done = False


def tune_malloc() -> bool:
    """Keep freed memory in the process (glibc only). Returns whether it was applied.

    Called by the ``timm-alexnet-split`` commands that train or time models; set
    TIMM_ALEXNET_SPLIT_MALLOC=default to leave malloc as it is.
    """
    global _done
    if _done:
        return True
    if not sys.platform.startswith('linux') or os.environ.get('TIMM_ALEXNET_SPLIT_MALLOC') == 'default':
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
        ok = all(libc.mallopt(opt, val) == 1 for opt, val in (
            (_M_MMAP_THRESHOLD, 32 << 20), (_M_TRIM_THRESHOLD, 1 << 30), (_M_TOP_PAD, 256 << 20)))
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return False
    _done = ok
    return ok
