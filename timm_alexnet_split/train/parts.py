"""timm's parts built from the options: schedule, loss functions, PCA lighting; the metrics they watch."""
from __future__ import annotations

import argparse
import importlib
import math
from typing import Any, Callable, Dict, Optional, Tuple

import torch
import torch.nn as nn
from timm.loss import BinaryCrossEntropy, LabelSmoothingCrossEntropy
from timm.scheduler import create_scheduler_v2, scheduler_kwargs

from ..errors import UserError
from ..schedule import PLATEAU_METRICS, PlateauDecay


def build_scheduler(args: argparse.Namespace, optimizer: torch.optim.Optimizer, updates_per_epoch: int,
                     has_eval: bool) -> Tuple[Any, int]:

    if args.sched == 'plateau':
        if args.sched_on_updates:
            raise UserError('--sched plateau steps per epoch; leave out --sched-on-updates')
        metric = plateau_metric_name(args, has_eval)
        if metric.startswith('val_') and not has_eval:
            raise UserError(f'--plateau-metric {metric}: there is no validation split to watch, so the rate would never '
                            'decay; use --plateau-metric train_top1 or give a validation split')
        return PlateauDecay(
            optimizer, patience=args.plateau_patience or args.patience_epochs, max_decays=args.plateau_max_decays,
            decay_rate=args.decay_rate, mode=PLATEAU_METRICS[metric], warmup_t=args.warmup_epochs,
            warmup_lr_init=args.warmup_lr, min_lr=args.min_lr, cooldown=args.cooldown_epochs), args.epochs
    try:
        return create_scheduler_v2(optimizer, **scheduler_kwargs(args, decreasing_metric=args.eval_metric == 'loss'),
                                   updates_per_epoch=updates_per_epoch)
    except (AssertionError, ValueError) as e:
        raise UserError(f'--sched {args.sched}: {e}') from None


def plateau_metric_name(args: argparse.Namespace, has_eval: bool) -> str:
    if args.plateau_metric:
        return args.plateau_metric
    return 'val_' + args.eval_metric if has_eval and args.eval_metric != 'top5' else 'train_top1'


def metric_value(name: str, train_m: Dict[str, float], eval_m: Optional[Dict[str, float]]) -> Optional[float]:
    split, key = name.split('_', 1)
    src = train_m if split == 'train' else eval_m
    if not src or key not in src or math.isnan(src[key]):
        return None
    return float(src[key])


def build_pca(args: argparse.Namespace, data_config: Dict[str, Any]) -> Optional[Callable]:
    if not args.pca_lighting:
        return None
    try:
        augment = importlib.import_module('timm_alexnet_split.data.augment')
    except ImportError as e:
        raise UserError(f'--pca-lighting needs timm_alexnet_split.data.augment, which is missing ({e})') from None
    try:
        eigval, eigvec = augment.load_eig(args.pca_eig)
    except UserError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f'--pca-eig {args.pca_eig}: {e}') from None
    return augment.BatchPCALighting(std=args.pca_lighting, eigval=eigval, eigvec=eigvec,
                                    norm_std=tuple(data_config['std']))


def loss_fns(args: argparse.Namespace, device: torch.device) -> Tuple[nn.Module, nn.Module]:
    if args.bce_loss:
        train = BinaryCrossEntropy(smoothing=args.smoothing, target_threshold=args.bce_target_thresh,
                                   sum_classes=args.bce_sum, pos_weight=args.bce_pos_weight)
    elif args.smoothing:
        train = LabelSmoothingCrossEntropy(smoothing=args.smoothing)
    else:
        train = nn.CrossEntropyLoss()
    return train.to(device), nn.CrossEntropyLoss().to(device)
