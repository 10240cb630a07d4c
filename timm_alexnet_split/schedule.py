"""Divide the learning rate when a chosen metric stops improving: the paper's schedule, with state that survives resume.

Krizhevsky et al. divided the rate by 10 when the validation error stopped improving (three times in
about 90 epochs); the Cats vs Dogs run did so when training accuracy had not improved for 10 epochs.
timm's own ``PlateauLRScheduler`` is deprecated and keeps its counters out of checkpoints, so this one
is a timm ``Scheduler`` (warm-up, ``lr_scale`` per parameter group, ``state_dict``) with a plain state.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch
from timm.scheduler.scheduler import Scheduler

__all__ = ['PlateauDecay', 'PLATEAU_METRICS']

# metric name -> direction ('max': higher is better)
PLATEAU_METRICS = {'train_top1': 'max', 'val_top1': 'max', 'val_loss': 'min'}


class PlateauDecay(Scheduler):
    """Multiply the rate by ``decay_rate`` after ``patience`` epochs without improvement, at most ``max_decays`` times.

    Call ``step(epoch + 1, metric)`` at the end of each epoch, as timm's train loop does; ``metric=None``
    (no measurement that epoch) only sets the rate. An epoch improves when its metric is strictly better
    than the best so far. After a decay the count of epochs without improvement starts again, and
    ``cooldown`` further epochs pass before any counts.

    Args:
        optimizer: the optimizer whose parameter groups' ``lr`` this sets.
        patience: epochs without improvement that trigger a decay (>= 1).
        max_decays: decays allowed in all (None: no limit).
        decay_rate: factor applied at each decay (the paper: 0.1).
        mode: 'max' (accuracy) or 'min' (loss).
        warmup_t: epochs of linear warm-up from ``warmup_lr_init``; metrics of those epochs are not counted.
        warmup_lr_init: rate at the start of warm-up.
        min_lr: the rate never decays below this.
        cooldown: epochs after a decay during which no epoch counts as without improvement.
    """

    def __init__(
            self,
            optimizer: torch.optim.Optimizer,
            patience: int = 10,
            max_decays: Optional[int] = None,
            decay_rate: float = 0.1,
            mode: str = 'max',
            warmup_t: int = 0,
            warmup_lr_init: float = 0.0,
            min_lr: float = 0.0,
            cooldown: int = 0,
    ) -> None:
        if patience < 1:
            raise ValueError(f'patience must be >= 1, got {patience}')
        if max_decays is not None and max_decays < 0:
            raise ValueError(f'max_decays must be >= 0 or None, got {max_decays}')
        if mode not in ('max', 'min'):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        if not 0.0 < decay_rate <= 1.0:
            raise ValueError(f'decay_rate must be in (0, 1], got {decay_rate}')
        super().__init__(optimizer, 'lr', t_in_epochs=True)
        self.patience = int(patience)
        self.max_decays = None if max_decays is None else int(max_decays)
        self.decay_rate = float(decay_rate)
        self.mode = mode
        self.warmup_t = int(warmup_t)
        self.warmup_lr_init = float(warmup_lr_init)
        self.min_lr = float(min_lr)
        self.cooldown = int(cooldown)
        self.warmup_steps = [(v - self.warmup_lr_init) / self.warmup_t for v in self.base_values] if self.warmup_t else []
        self.best: Optional[float] = None
        self.bad_epochs = 0
        self.cooldown_left = 0
        self.num_decays = 0
        self.decay_epochs: List[int] = []  # the epochs (as passed to step) whose rate was the first decayed one
        self.update_groups(self._get_lr(0))

    @property
    def scale(self) -> float:
        """The factor applied to the base rate by the decays so far."""
        return self.decay_rate ** self.num_decays

    def _get_lr(self, t: int) -> List[float]:
        if t < self.warmup_t:
            return [self.warmup_lr_init + t * s for s in self.warmup_steps]
        return [max(v * self.scale, self.min_lr) for v in self.base_values]

    def _improved(self, metric: float) -> bool:
        if self.best is None:
            return True
        return metric > self.best if self.mode == 'max' else metric < self.best

    def observe(self, epoch: int, metric: float) -> bool:
        """Record the metric of the epoch before ``epoch``; return True when it triggered a decay."""
        if self._improved(metric):
            self.best = float(metric)
            self.bad_epochs = 0
            return False
        if self.cooldown_left > 0:
            self.cooldown_left -= 1
            return False
        self.bad_epochs += 1
        if self.bad_epochs < self.patience or (self.max_decays is not None and self.num_decays >= self.max_decays):
            return False
        self.num_decays += 1
        self.decay_epochs.append(int(epoch))
        self.bad_epochs = 0
        self.cooldown_left = self.cooldown
        return True

    def step(self, epoch: int, metric: Optional[float] = None) -> None:
        """Set the rate for ``epoch``; count ``metric`` (of the epoch just finished) once warm-up is over."""
        if metric is not None and epoch > self.warmup_t:
            self.observe(epoch, float(metric))
        super().step(epoch, None)

    def state_dict(self) -> Dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in super().state_dict().items()}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        super().load_state_dict(dict(state_dict))
