"""The run folder: its name, summary.csv rows a resume repeats, conv1 snapshots."""
from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import List, Tuple

import numpy as np
import torch.nn as nn
from timm.utils import unwrap_model

from .. import run_files as RF
from ..atomic import replace_when_done
from ..errors import UserError

_logger = logging.getLogger('timm_alexnet_split.train')


def new_run_dir(base: Path, name: str) -> Path:
    """base/name, or base/name-1, -2 ... when a run is already there: never write into someone's run."""
    d = base / name
    if d.exists() and (not d.is_dir() or any(d.iterdir())):
        i = 1
        while (base / f'{name}-{i}').exists():
            i += 1
        _logger.warning(f'{d} already holds a run: writing to {base / f"{name}-{i}"} instead')
        d = base / f'{name}-{i}'
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # --output names a file, a read-only place, a full disk
        raise UserError(f'cannot make the run folder {d}: {e.strerror or e} (--output {base})') from None
    return d


def write_text(path: Path, text: str) -> None:
    """A UTF-8 text file of the run written atomically (args.yaml, class_map.txt, conv1/towers.json)."""
    with replace_when_done(path, True, 'while saving') as tmp:
        tmp.write_text(text, encoding='utf-8')


def save_npy(path: Path, arr: np.ndarray) -> None:
    """An .npy file written atomically (a conv1 snapshot)."""
    with replace_when_done(path, True, 'while saving') as tmp:
        with open(tmp, 'wb') as f:
            np.save(f, arr)


def conv1_kernels(model: nn.Module) -> Tuple[np.ndarray, List[int]]:
    """All towers' first-layer kernels concatenated in tower order (K, C, kh, kw) float32, and K per tower."""
    m = unwrap_model(model)
    if hasattr(m, 'towers'):
        weights = [t.conv1.weight for t in m.towers]
    else:
        names = (getattr(m, 'pretrained_cfg', None) or {}).get('first_conv')
        if not names:
            raise ValueError(f'{type(m).__name__} names no first_conv in its pretrained_cfg')
        names = [names] if isinstance(names, str) else list(names)
        weights = [m.get_submodule(n).weight for n in names]
    arrays = [w.detach().float().cpu().numpy() for w in weights]
    return np.concatenate(arrays, 0).astype(np.float32), [a.shape[0] for a in arrays]


def completed_epochs(run: Path) -> int:
    """How many epochs a run folder's summary.csv records (0 when there is none)."""
    summary = Path(run) / RF.SUMMARY
    if not summary.is_file():
        return 0
    with open(summary, newline='') as f:
        return sum(1 for _ in csv.DictReader(f))


def trim_summary(path: Path, start_epoch: int) -> None:
    """Drop summary rows of epochs >= start_epoch (a resumed run rewrites them)."""
    if not path.is_file():
        return
    with open(path, newline='') as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    keep = [r for r in rows[1:] if r and int(float(r[0])) < start_epoch]
    if len(keep) == len(rows) - 1:
        return
    with replace_when_done(path, True, 'while resuming') as tmp:
        with open(tmp, 'w', newline='') as f:
            csv.writer(f).writerows([rows[0], *keep] if keep else [])
