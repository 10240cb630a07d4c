"""Checkpoints: RunSaver (last, best, history, recovery), random generator state, weight digests, resume."""
from __future__ import annotations

import argparse
import hashlib
import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import save_file
from timm import utils

from .. import run_files as RF
from ..atomic import replace_when_done
from ..errors import UserError, one_line
from ..schedule import PlateauDecay

_logger = logging.getLogger('timm_alexnet_split.train')


def atomic_torch_save(obj: Any, path: Path) -> None:
    """torch.save beside ``path``, then replace it: the file is old or new, never half. An unwritable place or a full
    disk is a one-line UserError, and no temporary file is left."""
    path = Path(path)
    with replace_when_done(path, True, 'while saving') as tmp:
        try:
            torch.save(obj, tmp)
        except RuntimeError as e:  # torch's zip writer reports a full disk as a RuntimeError
            raise UserError(f'cannot write {path}: {one_line(e, 200)}') from None


def atomic_save_safetensors(tensors: Dict[str, torch.Tensor], path: Path, metadata: Dict[str, str]) -> None:
    """The weights alone as safetensors, written as ``atomic_torch_save`` writes."""
    path = Path(path)
    with replace_when_done(path, True, 'while saving') as tmp:
        try:
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
        except SafetensorError as e:  # safetensors reports I/O failures as its own error, not OSError
            raise UserError(f'cannot write {path}: {e}') from None


def atomic_link(src: Path, dst: Path) -> None:
    """dst becomes a hard link to (or a copy of) src, atomically."""
    with replace_when_done(Path(dst), True, 'while saving') as tmp:
        tmp.unlink()
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copy2(src, tmp)


def rng_state() -> Dict[str, Any]:
    """Python, numpy, torch and CUDA generator states as lists and tensors (weights_only-loadable)."""
    py = random.getstate()
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        'python': [py[0], list(py[1]), py[2]],
        'numpy': [str(name), torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
        'torch': torch.get_rng_state(),
        'cuda': list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
    }


def set_rng_state(state: Dict[str, Any]) -> None:
    py = state['python']
    random.setstate((py[0], tuple(py[1]), py[2]))
    name, keys, pos, has_gauss, gauss = state['numpy']
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state['torch'])
    if state.get('cuda') and torch.cuda.is_available() and len(state['cuda']) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state['cuda'])


def weights_digest(state_dict: Dict[str, torch.Tensor]) -> str:
    """SHA-256 of a state_dict's names, dtypes, shapes and bytes: equal digests mean bit-identical weights."""
    h = hashlib.sha256()
    for name, t in state_dict.items():
        t = t.detach()
        h.update(f'{name}:{t.dtype}:{tuple(t.shape)};'.encode())
        h.update(t.reshape(-1).cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class RunSaver:
    """last.pth.tar every epoch; model_best.pth.tar and the best ``max_history`` checkpoint-E.pth.tar by metric.

    Every write is atomic; best and history files are hard links of last where the file system allows.
    With ``safetensors``, last.safetensors and model_best.safetensors hold the weights alone.
    """

    def __init__(self, run_dir: Path, decreasing: bool = False, max_history: int = 10, safetensors: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.decreasing = decreasing
        self.max_history = max(1, int(max_history))
        self.safetensors = safetensors
        self.history: List[Tuple[str, float, int]] = []  # (file, metric, epoch), best first
        self.best_metric: Optional[float] = None
        self.best_epoch: Optional[int] = None

    @property
    def last(self) -> Path:
        return self.run_dir / RF.LAST

    @property
    def best(self) -> Path:
        return self.run_dir / RF.BEST

    @property
    def recovery(self) -> Path:
        return self.run_dir / 'recovery.pth.tar'

    def _better(self, a: float, b: float) -> bool:
        return a < b if self.decreasing else a > b

    def state_dict(self) -> Dict[str, Any]:
        return {'history': [[f, m, e] for f, m, e in self.history], 'best_metric': self.best_metric,
                'best_epoch': self.best_epoch}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.history = [(f, m, e) for f, m, e in state.get('history', []) if (self.run_dir / f).exists()]
        self.best_metric = state.get('best_metric')
        self.best_epoch = state.get('best_epoch')

    def save(self, epoch: int, metric: Optional[float], state: Dict[str, Any], weights: Dict[str, torch.Tensor],
             metadata: Dict[str, str]) -> bool:
        """Write the epoch's checkpoint; return True when it is the best so far."""
        is_best = metric is not None and (self.best_metric is None or self._better(metric, self.best_metric))
        history, dropped, keep = [h for h in self.history if h[2] != epoch], [], False
        if metric is not None and (len(history) < self.max_history or self._better(metric, history[-1][1])):
            keep = True
            history.append((RF.numbered(epoch), float(metric), int(epoch)))
            history.sort(key=lambda h: h[1], reverse=not self.decreasing)
            history, dropped = history[:self.max_history], history[self.max_history:]
            keep = any(h[2] == epoch for h in history)
        if is_best:
            self.best_metric, self.best_epoch = float(metric), int(epoch)
        self.history = history
        state['saver'] = self.state_dict()
        atomic_torch_save(state, self.last)
        if self.safetensors:
            atomic_save_safetensors(weights, self.run_dir / RF.LAST_WEIGHTS, metadata)
        if keep:
            atomic_link(self.last, self.run_dir / RF.numbered(epoch))
        if is_best:
            atomic_link(self.last, self.best)
            if self.safetensors:
                atomic_link(self.run_dir / RF.LAST_WEIGHTS, self.run_dir / RF.BEST_WEIGHTS)
        for f, _, e in dropped:
            if e != epoch:
                (self.run_dir / f).unlink(missing_ok=True)
        self.recovery.unlink(missing_ok=True)
        return is_best

    def save_recovery(self, state: Dict[str, Any]) -> Path:
        state['saver'] = self.state_dict()
        atomic_torch_save(state, self.recovery)
        return self.recovery


def restore_scheduler(lr_scheduler: Any, ckpt: Optional[Dict[str, Any]]) -> None:
    """On resume, the plateau schedule gets back what it observed (best metric, counters, decays). timm's schedules
    are functions of the epoch and the options, so they are built from the options, as timm's train.py does: a resume
    with a new --epochs follows the new length (loading their saved state would keep the old one, e.g. a finished
    cosine at its minimum)."""
    if ckpt is not None and isinstance(lr_scheduler, PlateauDecay) and isinstance(ckpt.get('scheduler'), dict):
        lr_scheduler.load_state_dict(ckpt['scheduler'])


def restore_rng(ckpt: Dict[str, Any], args: argparse.Namespace, start_epoch: int) -> None:
    """Every generator as the checkpoint left it: per process when it was written by as many processes."""
    saved_world = int(ckpt.get('world_size', 1))
    ranks = ckpt.get('rng_ranks')
    if saved_world != args.world_size:
        why = f'the checkpoint was written by {saved_world} process(es), this run has {args.world_size}'
    elif args.world_size == 1 and isinstance(ckpt.get('rng'), dict):
        set_rng_state(ckpt['rng'])
        return
    elif isinstance(ranks, list) and len(ranks) == args.world_size:
        set_rng_state(ranks[args.rank])
        return
    else:
        why = 'the checkpoint holds no random generator states for these processes'
    utils.random_seed(args.seed + 1000 * start_epoch, args.rank)
    if utils.is_primary(args):
        _logger.warning(f'{why}: the random generators are seeded afresh, so this resume is not bit-exact')
