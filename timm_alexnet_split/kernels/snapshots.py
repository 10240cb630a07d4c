"""A training run's conv1 snapshots (conv1/epoch_NNNN.npy, conv1/towers.json), read with every header checked.

Torch-free (numpy only). A snapshot is checked (shape, size, dtype, length) before anything is allocated, so a
truncated or foreign file is one KernelsError line, never a traceback or an absurd allocation.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .. import run_files as RF
from ..errors import KernelsError, one_line
from ..onnx_graph import MAX_ELEMENTS
from .files import progress


def split(w: np.ndarray, counts: Sequence[int]) -> List[np.ndarray]:
    """``w`` cut along its first axis into consecutive blocks of ``counts``."""
    return list(np.split(w, np.cumsum(counts)[:-1]))


def read_npy(path: Path, shape: Optional[Tuple[int, ...]]) -> np.ndarray:
    """A float .npy array, its header checked (shape, size, dtype) before anything is allocated."""
    try:
        with open(path, 'rb') as f:
            version = np.lib.format.read_magic(f)
            reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            arr_shape, _, dtype = reader(f)
            header_end = f.tell()
    except Exception as e:
        raise KernelsError(f'{path} is not a .npy array ({one_line(e)})') from None
    if dtype.kind != 'f':
        raise KernelsError(f'{path} holds {dtype}, not floating-point kernels')
    if len(arr_shape) != 4 or arr_shape[1] != 3 or (shape is not None and tuple(arr_shape) != shape):
        want = 'kernels (K, 3, h, w)' if shape is None else f'{shape} like the other epochs'
        raise KernelsError(f'{path} has shape {arr_shape}; expected {want}')
    if math.prod(arr_shape) > MAX_ELEMENTS:
        raise KernelsError(f'{path} declares shape {arr_shape}: refused as an absurd size')
    if path.stat().st_size < header_end + math.prod(arr_shape) * dtype.itemsize:
        raise KernelsError(f'{path} is truncated; the training run did not finish writing it')
    try:
        return np.load(path, allow_pickle=False).astype(np.float64)
    except Exception as e:
        raise KernelsError(f'cannot read {path} ({one_line(e)})') from None


def read_snapshots(run_dir: Path, only: Optional[Sequence[int]] = None) -> Tuple[List[int], List[np.ndarray], Dict[str, Any]]:
    """(epochs, conv1 per epoch as (K, 3, h, w), towers.json) from a run folder's conv1/ snapshots.

    ``only``: positions in the sorted snapshot list to read (e.g. [0, -1] for the first and last).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise KernelsError(f'{run_dir}: no such folder; give a training run folder holding conv1/epoch_*.npy')
    folder = run_dir / RF.CONV1 if (run_dir / RF.CONV1).is_dir() else run_dir
    meta_path = folder / RF.TOWERS
    if not meta_path.is_file():
        raise KernelsError(f'{folder} has no towers.json: not a training run with conv1 snapshots')
    try:
        meta = json.loads(meta_path.read_text())
        counts = [int(c) for c in meta['kernels_per_tower']]
        num = int(meta.get('num_towers', len(counts)))
        order = str(meta.get('channel_order', 'RGB')).upper()
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as e:
        raise KernelsError(f'{meta_path} is not valid ({one_line(e)}); expected '
                           '{"num_towers": N, "kernels_per_tower": [...], "channel_order": "RGB"}') from None
    if num != len(counts) or num < 1 or min(counts) < 1:
        raise KernelsError(f'{meta_path}: num_towers={num} does not match kernels_per_tower={counts}')
    if order not in ('RGB', 'BGR'):
        raise KernelsError(f'{meta_path}: channel_order {order!r} is neither RGB nor BGR')
    files = sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := re.fullmatch(RF.SNAPSHOT_PATTERN, p.name)))
    if not files:
        raise KernelsError(f'{folder} has no epoch_NNNN.npy snapshots')
    if only is not None:
        files = [files[i] for i in sorted({i % len(files) for i in only})]
    shape: Optional[Tuple[int, ...]] = None
    arrays = []
    for i, (_, p) in enumerate(files, 1):
        arrays.append(read_npy(p, shape))
        shape = arrays[-1].shape
        if shape[0] != sum(counts):
            raise KernelsError(f'{p} holds {shape[0]} kernels but towers.json says {counts} (sum {sum(counts)})')
        progress(i, len(files), 'reading snapshots')
    return [e for e, _ in files], arrays, {'num_towers': num, 'kernels_per_tower': counts, 'channel_order': order}
