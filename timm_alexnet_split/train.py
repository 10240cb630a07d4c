"""The trainer: timm's train.py recipe, built from timm's parts, with what the paper's experiments need.

``timm-alexnet-split train --config recipes/X.yaml [options]`` (also ``python -m timm_alexnet_split.train``)
takes timm train.py's option names (YAML keys are the argparse dest names, as in train.py) for what it
supports and refuses the rest by name. Our own options: PCA lighting, the paper's crops, ten-crop
evaluation, a plateau schedule on a chosen metric with a decay limit, the demo data, conv1 snapshots,
safetensors copies of the checkpoints, towers on several devices (--model-parallel) and, under torchrun,
data parallel with a collective timeout (--dist-backend, --dist-timeout; docs/distributed.md).
``timm-alexnet-split validate`` evaluates a checkpoint.

A run writes into OUTPUT/EXPERIMENT/: args.yaml, log.txt, summary.csv, last/model_best .pth.tar and
.safetensors, conv1/epoch_NNNN.npy with conv1/towers.json, acc.png, loss.png, class_map.txt.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import difflib
import importlib
import json
import logging
import logging.handlers
import math
import os
import random
import signal
import sys
import threading
import time
from collections import OrderedDict
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml

from .checkpoint import load_into, read_training_checkpoint
from .errors import UserError

__all__ = [
    'main', 'validate_main', 'build_parser', 'parse_args', 'create_train_model', 'evaluate', 'SkipUnreadable',
    'TenCrop', 'PaperCrop', 'RunSaver', 'conv1_kernels', 'OWN_OPTIONS', 'UNSUPPORTED', 'model_parallel_spec',
    'model_parallel_devices', 'weights_digest',
]

PROG = 'timm-alexnet-split train'
_logger = logging.getLogger('timm_alexnet_split.train')

# Our options (dest -> what it does); the README/docs list them as ours. Upstream train.py ignores these keys.
OWN_OPTIONS = {
    'pca_lighting': 'PCA lighting noise std (paper section 4.1: 0.1); 0 = off',
    'pca_eig': "RGB eigen-decomposition for PCA lighting: 'imagenet' or a JSON file from pca-stats",
    'paper_crop': "the paper's training crops: shorter side to size/crop_pct, centre square, random crop",
    'ten_crop': 'evaluate on ten crops (corners, centre, mirrors), softmax averaged',
    'plateau_metric': 'with --sched plateau: the metric watched (train_top1, val_top1, val_loss)',
    'plateau_patience': 'with --sched plateau: epochs without improvement before a decay (default --patience-epochs)',
    'plateau_max_decays': 'with --sched plateau: most decays in all (default: no limit)',
    'model_parallel': 'towers on devices: DEVICE per tower (cuda:0 cuda:1), or K = K GPUs per process; none = off',
    'dist_backend': 'torch.distributed backend (default: nccl on CUDA, gloo on CPU)',
    'dist_timeout': 'seconds a collective waits for the other processes before the job stops (default 600)',
    'demo_data': 'train on the embedded demo dataset (generated on first use)',
    'demo_dataset': 'with --demo-data: which embedded dataset, demo (default), demo-hard or leaves',
    'save_conv1': 'save conv1 kernels per epoch to conv1/epoch_NNNN.npy',
    'safetensors': 'write weights-only last.safetensors and model_best.safetensors',
    'decode': 'image decoding: cpu (PIL, timm), draft (PIL draft mode: folders), gpu (nvjpeg batches: wds shards)',
}

_MIXUP = 'mixup/cutmix (soft targets leave no training accuracy for the plateau schedule)'
_NO_BN = 'the split AlexNet has no batch norm'
_DROP = 'the split AlexNet has no drop-path or drop-block (--drop is its dropout after fc6 and fc7)'
_EMA = 'weight EMA'
_WANDB = 'wandb logging (summary.csv holds every epoch)'
_SCHED_RES = 'scheduled-resolution training'
_NAFLEX = 'NaFlex loading (for vision transformers)'
_KD = 'knowledge distillation'
# timm train.py options this trainer does not support: dest -> (upstream default, why). A config key equal to the
# default (the option off) is accepted; any other value, or the option on the command line, is refused.
UNSUPPORTED: Dict[str, Tuple[Any, str]] = {
    'fuser': ('', 'TorchScript fusers (TorchScript is not supported; use --torchcompile)'),
    'fast_norm': (False, 'the split AlexNet has no normalisation layer it changes'),
    'torchscript': (False, 'TorchScript (use --torchcompile)'),
    'aug_splits': (0, 'AugMix augmentation splits'),
    'jsd_loss': (False, 'the JSD loss (needs AugMix splits)'),
    'mixup': (0.0, _MIXUP), 'cutmix': (0.0, _MIXUP), 'cutmix_minmax': (None, _MIXUP), 'mixup_prob': (1.0, _MIXUP),
    'mixup_switch_prob': (0.5, _MIXUP), 'mixup_mode': ('batch', _MIXUP), 'mixup_off_epoch': (0, _MIXUP),
    'drop_connect': (None, _DROP), 'drop_path': (None, _DROP), 'drop_block': (None, _DROP),
    'bn_momentum': (None, _NO_BN), 'bn_eps': (None, _NO_BN), 'sync_bn': (False, _NO_BN), 'split_bn': (False, _NO_BN),
    'model_ema': (False, _EMA), 'model_ema_force_cpu': (False, _EMA), 'model_ema_decay': (0.9998, _EMA),
    'model_ema_warmup': (False, _EMA),
    'tta': (0, 'test-time augmentation (use --ten-crop, the paper\'s ten-crop test)'),
    'log_wandb': (False, _WANDB), 'wandb_project': (None, _WANDB), 'wandb_tags': ([], _WANDB),
    'wandb_resume_id': ('', _WANDB),
    'train_img_sizes': (None, _SCHED_RES), 'train_batch_sizes': (None, _SCHED_RES), 'train_size_probs': (None, _SCHED_RES),
    'train_size_schedule': ('constant', _SCHED_RES), 'train_size_schedule_spread': (0.65, _SCHED_RES),
    'train_size_random_mix': (0.1, _SCHED_RES), 'train_batches_per_epoch': (None, _SCHED_RES),
    'variable_batch_loss_scale': ('none', _SCHED_RES),
    'naflex_loader': (False, _NAFLEX), 'naflex_train_seq_lens': ([128, 256, 576, 784, 1024], _NAFLEX),
    'naflex_max_seq_len': (576, _NAFLEX), 'naflex_patch_sizes': (None, _NAFLEX), 'naflex_patch_size_probs': (None, _NAFLEX),
    'naflex_loss_scale': ('linear', _NAFLEX), 'naflex_patchify_channels_first': (False, _NAFLEX),
    'kd_model_name': (None, _KD), 'kd_distill_type': ('logit', _KD), 'kd_loss_type': ('kl', _KD),
    'distill_loss_weight': (None, _KD), 'task_loss_weight': (None, _KD), 'kd_temperature': (4.0, _KD),
    'kd_student_feature_dim': (None, _KD), 'kd_teacher_feature_dim': (None, _KD), 'kd_token_distill_type': ('soft', _KD),
}
_UNSUPPORTED_FLAGS = {'--' + d.replace('_', '-'): d for d in UNSUPPORTED}
_UNSUPPORTED_FLAGS['--train-steps-per-epoch'] = 'train_batches_per_epoch'

# resuming takes the checkpoint's options as defaults, except these (they describe the machine or the resume itself)
_NOT_INHERITED = ('resume', 'start_epoch', 'device', 'local_rank', 'config', 'no_resume_opt', 'model_parallel',
                  'dist_backend', 'dist_timeout')
_UNREADABLE = 'unreadable images'


# ---------------------------------------------------------------------------------------------------------------------
# options
# ---------------------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The ``train`` parser: timm train.py's names, flags and defaults for what is supported, then ours."""
    from timm.utils import ParseKwargs
    p = argparse.ArgumentParser(
        prog=PROG, allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter,
        description='Train a timm model (by default the split AlexNet) with timm\'s data pipeline, optimisers and '
                    'schedulers.\nOptions and YAML config keys are timm train.py\'s (keys = argparse dest names); '
                    'options it has that this trainer does not support are refused by name.\n'
                    'Writes OUTPUT/EXPERIMENT/: args.yaml, log.txt, summary.csv, last.pth.tar, model_best.pth.tar '
                    '(+ .safetensors),\nconv1/epoch_NNNN.npy + conv1/towers.json, acc.png, loss.png, class_map.txt.',
        epilog='examples:\n'
               '  timm-alexnet-split train --config recipes/demo.yaml\n'
               '  timm-alexnet-split train --config recipes/catsdogs_split2.yaml --data-dir data/catsdogs --epochs 5\n'
               '  timm-alexnet-split train --resume output/train/demo/last.pth.tar --epochs 20\n'
               'Precedence: defaults < checkpoint args (with --resume) < --config FILE < command line.')
    p.add_argument('-c', '--config', default='', metavar='FILE', help='YAML file of options (keys = dest names)')
    p.add_argument('data', nargs='?', metavar='DIR', help='dataset root (deprecated positional, use --data-dir)')

    g = p.add_argument_group('dataset (timm train.py)')
    g.add_argument('--data-dir', metavar='DIR', help='dataset root: ImageFolder with train/ and validation/ sub-folders')
    g.add_argument('--dataset', default='', metavar='NAME', help='"" (folders), torch/NAME, hfds/NAME, ... as timm')
    g.add_argument('--train-split', default='train', metavar='NAME', help='training split (default: train)')
    g.add_argument('--val-split', default='validation', metavar='NAME', help='validation split; "" for none')
    g.add_argument('--train-num-samples', type=int, default=None, metavar='N', help='samples in the train split (iterable)')
    g.add_argument('--val-num-samples', type=int, default=None, metavar='N', help='samples in the val split (iterable)')
    g.add_argument('--dataset-download', action='store_true', default=False, help='allow torch/ datasets to download')
    g.add_argument('--class-map', default='', metavar='FILE', help='class -> index map file (.txt: one class per line)')
    g.add_argument('--input-img-mode', default=None, help='PIL mode of loaded images (default RGB)')
    g.add_argument('--input-key', default=None, help='dataset key of images (hfds/wds)')
    g.add_argument('--target-key', default=None, help='dataset key of labels (hfds/wds)')
    g.add_argument('--dataset-trust-remote-code', action='store_true', default=False, help='hfds: allow remote code')

    g = p.add_argument_group('model (timm train.py)')
    g.add_argument('--model', default='alexnet_split_2', metavar='MODEL', help='timm model name (default: alexnet_split_2)')
    g.add_argument('--pretrained', action='store_true', default=False, help='start from the model\'s pretrained weights')
    g.add_argument('--pretrained-path', default=None, help='load this file as the pretrained weights (head adapted)')
    g.add_argument('--initial-checkpoint', default='', metavar='PATH', help='load these weights after creation')
    g.add_argument('--resume', default='', metavar='PATH', help='continue a run from its checkpoint (in its folder)')
    g.add_argument('--no-resume-opt', action='store_true', default=False, help='do not restore the optimizer state')
    g.add_argument('--num-classes', type=int, default=None, metavar='N', help='classes (default: the training set\'s)')
    g.add_argument('--gp', default=None, metavar='POOL', help="global pool ('' flattens 6x6, the paper; 'avg')")
    g.add_argument('--img-size', type=int, default=None, metavar='N', help='square input size (default: model\'s, 224)')
    g.add_argument('--in-chans', type=int, default=None, metavar='N', help='input channels (default 3)')
    g.add_argument('--input-size', default=None, nargs=3, type=int, metavar='N', help='input C H W')
    g.add_argument('--crop-pct', default=None, type=float, metavar='PCT', help='centre-crop fraction for evaluation')
    g.add_argument('--mean', type=float, nargs='+', default=None, metavar='MEAN', help='mean pixel (0-1 units)')
    g.add_argument('--std', type=float, nargs='+', default=None, metavar='STD', help='std (0-1 units; 1/255 = 0-255 scale)')
    g.add_argument('--interpolation', default='', metavar='NAME', help='resize interpolation (default: model\'s)')
    g.add_argument('-b', '--batch-size', type=int, default=128, metavar='N', help='batch size (default 128)')
    g.add_argument('-vb', '--validation-batch-size', type=int, default=None, metavar='N', help='validation batch size')
    g.add_argument('--channels-last', action='store_true', default=False, help='channels_last memory layout')
    g.add_argument('--grad-accum-steps', type=int, default=1, metavar='N', help='batches per optimizer update')
    g.add_argument('--grad-checkpointing', action='store_true', default=False, help='recompute activations per stage')
    g.add_argument('--model-kwargs', nargs='*', default={}, action=ParseKwargs, help='model options, e.g. init=caffe')
    g.add_argument('--head-init-scale', default=None, type=float, help='scale the classifier\'s initial weights')
    g.add_argument('--head-init-bias', default=None, type=float, help='initial classifier bias')
    g.add_argument('--torchcompile-mode', type=str, default=None, help='torch.compile mode')
    g.add_argument('--torchcompile', nargs='?', type=str, default=None, const='inductor', help='torch.compile backend')

    g = p.add_argument_group('device (timm train.py)')
    g.add_argument('--device', default=None, help='cuda, cuda:1, cpu ... (default: cuda if available, else cpu)')
    g.add_argument('--amp', action='store_true', default=False, help='mixed precision')
    g.add_argument('--amp-dtype', default='float16', choices=('float16', 'bfloat16'), help='AMP dtype')
    g.add_argument('--model-dtype', default=None, choices=('float32', 'float16', 'bfloat16'), help='model dtype (no AMP)')
    g.add_argument('--no-ddp-bb', action='store_true', default=False, help='DDP without broadcast buffers')
    g.add_argument('--synchronize-step', action='store_true', default=False, help='synchronize the device every step')
    g.add_argument('--local_rank', default=0, type=int, help=argparse.SUPPRESS)
    g.add_argument('--device-modules', default=None, type=str, nargs='+', help='modules to import first')

    g = p.add_argument_group('optimizer (timm train.py)')
    g.add_argument('--opt', default='sgd', metavar='OPTIMIZER', help="timm optimizer ('momentum': the paper's SGD)")
    g.add_argument('--opt-eps', default=None, type=float, metavar='EPSILON', help='optimizer epsilon')
    g.add_argument('--opt-betas', default=None, type=float, nargs='+', metavar='BETA', help='optimizer betas')
    g.add_argument('--momentum', type=float, default=0.9, metavar='M', help='momentum (default 0.9)')
    g.add_argument('--weight-decay', type=float, default=2e-5, help='weight decay (default 2e-5; the paper 5e-4)')
    g.add_argument('--clip-grad', type=float, default=None, metavar='NORM', help='clip gradients')
    g.add_argument('--clip-mode', type=str, default='norm', help='norm, value or agc')
    g.add_argument('--layer-decay', type=float, default=None, help='layer-wise lr decay')
    g.add_argument('--layer-decay-min-scale', type=float, default=0, help='layer-wise lr decay minimum scale')
    g.add_argument('--layer-decay-no-opt-scale', type=float, default=None, help='layer-wise lr decay: freeze below')
    g.add_argument('--opt-kwargs', nargs='*', default={}, action=ParseKwargs, help='more optimizer options')

    g = p.add_argument_group('learning-rate schedule (timm train.py)')
    g.add_argument('--sched', type=str, default='cosine', metavar='SCHEDULER',
                   help="timm scheduler; 'plateau' uses this package's plateau schedule (state saved)")
    g.add_argument('--sched-on-updates', action='store_true', default=False, help='step the schedule per update')
    g.add_argument('--lr', type=float, default=None, metavar='LR', help='learning rate (default: from --lr-base)')
    g.add_argument('--lr-base', type=float, default=0.1, metavar='LR', help='rate for --lr-base-size samples')
    g.add_argument('--lr-base-size', type=int, default=256, metavar='DIV', help='batch size of --lr-base')
    g.add_argument('--lr-base-scale', type=str, default='', metavar='SCALE', help='linear or sqrt')
    g.add_argument('--lr-noise', type=float, nargs='+', default=None, metavar='pct, pct', help='lr noise on/off')
    g.add_argument('--lr-noise-pct', type=float, default=0.67, metavar='PERCENT', help='lr noise limit')
    g.add_argument('--lr-noise-std', type=float, default=1.0, metavar='STDDEV', help='lr noise std')
    g.add_argument('--lr-cycle-mul', type=float, default=1.0, metavar='MULT', help='cycle length multiplier')
    g.add_argument('--lr-cycle-decay', type=float, default=0.5, metavar='MULT', help='decay per cycle')
    g.add_argument('--lr-cycle-limit', type=int, default=1, metavar='N', help='cycles')
    g.add_argument('--lr-k-decay', type=float, default=1.0, help='k-decay')
    g.add_argument('--warmup-lr', type=float, default=1e-5, metavar='LR', help='rate at the start of warm-up')
    g.add_argument('--min-lr', type=float, default=0, metavar='LR', help='lower bound of the rate')
    g.add_argument('--epochs', type=int, default=300, metavar='N', help='epochs (default 300)')
    g.add_argument('--epoch-repeats', type=float, default=0., metavar='N', help='dataset repeats per epoch (iterable)')
    g.add_argument('--start-epoch', default=None, type=int, metavar='N', help='first epoch (overrides resume)')
    g.add_argument('--decay-milestones', default=[90, 180, 270], type=int, nargs='+', metavar='MILESTONES',
                   help='multistep milestones')
    g.add_argument('--decay-epochs', type=float, default=90, metavar='N', help='step schedule interval')
    g.add_argument('--warmup-epochs', type=int, default=5, metavar='N', help='warm-up epochs (default 5)')
    g.add_argument('--warmup-prefix', action='store_true', default=False, help='warm-up before the schedule')
    g.add_argument('--cooldown-epochs', type=int, default=0, metavar='N', help='epochs at min_lr / after a plateau decay')
    g.add_argument('--patience-epochs', type=int, default=10, metavar='N', help='plateau patience (default 10)')
    g.add_argument('--decay-rate', '--dr', type=float, default=0.1, metavar='RATE', help='decay factor (default 0.1)')

    g = p.add_argument_group('augmentation and regularisation (timm train.py)')
    g.add_argument('--no-aug', action='store_true', default=False, help='no training augmentation')
    g.add_argument('--train-crop-mode', type=str, default=None, help='rrc, rkrc or rkrr')
    g.add_argument('--scale', type=float, nargs='+', default=[0.08, 1.0], metavar='PCT', help='random-resized-crop area')
    g.add_argument('--ratio', type=float, nargs='+', default=[3. / 4., 4. / 3.], metavar='RATIO', help='crop aspect')
    g.add_argument('--hflip', type=float, default=0.5, help='horizontal flip probability')
    g.add_argument('--vflip', type=float, default=0., help='vertical flip probability')
    g.add_argument('--color-jitter', type=float, default=0.4, metavar='PCT', help='colour jitter (default 0.4)')
    g.add_argument('--color-jitter-prob', type=float, default=None, metavar='PCT', help='colour jitter probability')
    g.add_argument('--grayscale-prob', type=float, default=None, metavar='PCT', help='grayscale probability')
    g.add_argument('--gaussian-blur-prob', type=float, default=None, metavar='PCT', help='blur probability')
    g.add_argument('--aa', type=str, default=None, metavar='NAME', help='AutoAugment policy')
    g.add_argument('--aug-repeats', type=float, default=0, help='repeated augmentation (distributed only)')
    g.add_argument('--bce-loss', action='store_true', default=False, help='binary cross-entropy loss')
    g.add_argument('--bce-sum', action='store_true', default=False, help='BCE: sum over classes')
    g.add_argument('--bce-target-thresh', type=float, default=None, help='BCE: binarise targets')
    g.add_argument('--bce-pos-weight', type=float, default=None, help='BCE: positive weight')
    g.add_argument('--reprob', type=float, default=0., metavar='PCT', help='random erasing probability')
    g.add_argument('--remode', type=str, default='pixel', help='random erasing mode')
    g.add_argument('--recount', type=int, default=1, help='random erasing count')
    g.add_argument('--resplit', action='store_true', default=False, help='random erasing: spare the first split')
    g.add_argument('--smoothing', type=float, default=0.1, help='label smoothing (default 0.1; the paper 0)')
    g.add_argument('--train-interpolation', type=str, default='random', help='training interpolation')
    g.add_argument('--drop', type=float, default=0.0, metavar='PCT', help='dropout (default 0; the paper 0.5)')
    g.add_argument('--dist-bn', type=str, default='reduce', help='distribute batch-norm stats (no-op here)')

    g = p.add_argument_group('miscellaneous (timm train.py)')
    g.add_argument('--seed', type=int, default=42, metavar='S', help='random seed (default 42)')
    g.add_argument('--worker-seeding', type=str, default='all', help='worker seeding: all or part')
    g.add_argument('--log-interval', type=int, default=50, metavar='N', help='batches between log lines')
    g.add_argument('--val-interval', type=int, default=1, metavar='N', help='epochs between validations')
    g.add_argument('--recovery-interval', type=int, default=0, metavar='N', help='updates between recovery.pth.tar')
    g.add_argument('--checkpoint-hist', type=int, default=10, metavar='N', help='numbered checkpoints kept (best N)')
    g.add_argument('-j', '--workers', type=int, default=4, metavar='N', help='data-loading processes (default 4)')
    g.add_argument('--save-images', action='store_true', default=False, help='save input batches as JPEG')
    g.add_argument('--pin-mem', action='store_true', default=False, help='pin loader memory')
    g.add_argument('--no-prefetcher', action='store_true', default=False, help='no device prefetch/normalise')
    g.add_argument('--output', default='', metavar='PATH', help='output root (default ./output/train)')
    g.add_argument('--experiment', default='', metavar='NAME', help='run folder name (default: date-model-size)')
    g.add_argument('--eval-metric', default='top1', choices=('top1', 'top5', 'loss'), help='best-checkpoint metric')
    g.add_argument('--use-multi-epochs-loader', action='store_true', default=False, help='keep loader workers')

    g = p.add_argument_group('timm-alexnet-split options (ours; upstream train.py ignores these keys)')
    g.add_argument('--pca-lighting', type=float, default=0.0, metavar='STD', help=OWN_OPTIONS['pca_lighting'])
    g.add_argument('--pca-eig', default='imagenet', metavar='imagenet|FILE', help=OWN_OPTIONS['pca_eig'])
    g.add_argument('--paper-crop', action='store_true', default=False, help=OWN_OPTIONS['paper_crop'])
    g.add_argument('--ten-crop', action='store_true', default=False, help=OWN_OPTIONS['ten_crop'])
    from .schedule import PLATEAU_METRICS
    g.add_argument('--plateau-metric', default=None, choices=tuple(PLATEAU_METRICS), help=OWN_OPTIONS['plateau_metric'])
    g.add_argument('--plateau-patience', type=int, default=None, metavar='P', help=OWN_OPTIONS['plateau_patience'])
    g.add_argument('--plateau-max-decays', type=int, default=None, metavar='K', help=OWN_OPTIONS['plateau_max_decays'])
    g.add_argument('--model-parallel', nargs='+', default=None, metavar='DEVICE', help=OWN_OPTIONS['model_parallel'])
    g.add_argument('--dist-backend', default=None, metavar='NAME', help=OWN_OPTIONS['dist_backend'])
    g.add_argument('--dist-timeout', type=float, default=600.0, metavar='SECONDS', help=OWN_OPTIONS['dist_timeout'])
    g.add_argument('--demo-data', action='store_true', default=False, help=OWN_OPTIONS['demo_data'])
    g.add_argument('--demo-dataset', default='demo', choices=('demo', 'demo-hard', 'leaves'), metavar='NAME',
                   help=OWN_OPTIONS['demo_dataset'])
    g.add_argument('--save-conv1', action=argparse.BooleanOptionalAction, default=True, help=OWN_OPTIONS['save_conv1'])
    g.add_argument('--safetensors', action=argparse.BooleanOptionalAction, default=True, help=OWN_OPTIONS['safetensors'])
    g.add_argument('--decode', default='cpu', choices=('cpu', 'draft', 'gpu'), help=OWN_OPTIONS['decode'])
    return p


def _option_dests(parser: argparse.ArgumentParser) -> Dict[str, argparse.Action]:
    return {a.dest: a for a in parser._actions if a.dest not in ('help', 'config')}


def _coerce(action: argparse.Action, key: str, value: Any, where: str) -> Any:
    """A config value checked and converted as the command line would convert it."""
    def bad(what: str) -> UserError:
        return UserError(f'{where}: {key}: {what} (got {value!r})')

    flag_actions = (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse.BooleanOptionalAction)
    if isinstance(action, flag_actions):
        if not isinstance(value, bool):
            raise bad('expected true or false')
        return value
    if action.dest in ('model_kwargs', 'opt_kwargs'):
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise bad('expected a mapping, e.g. {init: caffe}')
        return dict(value)
    if value is None:
        return None

    def one(v: Any) -> Any:
        if action.type is None:
            if not isinstance(v, (str, int, float)):
                raise bad('expected a string')
            return str(v) if not isinstance(v, str) else v
        if action.type is float and isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
        if action.type is int and isinstance(v, int) and not isinstance(v, bool):
            return v
        if isinstance(v, str):
            try:
                return action.type(v)
            except (TypeError, ValueError):
                raise bad(f'expected {getattr(action.type, "__name__", "a value")}') from None
        if action.type is str:
            return str(v)
        raise bad(f'expected {getattr(action.type, "__name__", "a value")}')

    if action.nargs in ('+', '*') or isinstance(action.nargs, int):
        seq = value if isinstance(value, (list, tuple)) else [value]
        if isinstance(action.nargs, int) and len(seq) != action.nargs:
            raise bad(f'expected {action.nargs} values')
        if action.nargs == '+' and not seq:
            raise bad('expected at least one value')
        out = [one(v) for v in seq]
    else:
        if isinstance(value, (list, dict)):
            raise bad('expected a single value')
        out = one(value)
    if action.choices is not None:
        for v in (out if isinstance(out, list) else [out]):
            if v not in action.choices:
                raise bad(f'expected one of {", ".join(map(str, action.choices))}')
    return out


def _check_unsupported(dest: str, value: Any, where: str) -> None:
    default, why = UNSUPPORTED[dest]
    if value != default and not (isinstance(value, (list, tuple)) and list(value) == default):
        raise UserError(f'{where}: {dest} = {value!r} is not supported by this trainer: {why}')


def _config_defaults(parser: argparse.ArgumentParser, cfg: Dict[str, Any], where: str) -> Dict[str, Any]:
    """Validate a config mapping (dest name -> value) against the parser; refuse unknown and unsupported keys."""
    actions = _option_dests(parser)
    out = {}
    for key, value in cfg.items():
        key = str(key)
        if key in actions:
            out[key] = _coerce(actions[key], key, value, where)
        elif key in UNSUPPORTED:
            _check_unsupported(key, value, where)
        elif key == 'config':
            raise UserError(f'{where}: a config file cannot name another config file')
        else:
            close = _suggest(key, list(actions) + list(UNSUPPORTED))
            hint = f' (did you mean {close}?)' if close else ''
            raise UserError(f'{where}: unknown option {key!r}{hint}; keys are timm train.py dest names or ours '
                            f'(see {PROG} --help)')
    return out


# what other trainers call timm train.py's options: checked before spelling, which would suggest a look-alike
# ('learning_rate' is closest to 'decay_rate' by spelling)
_ALIASES = {
    'learning_rate': 'lr', 'base_lr': 'lr', 'lr_rate': 'lr', 'batch': 'batch_size', 'bs': 'batch_size',
    'train_batch_size': 'batch_size', 'eval_batch_size': 'validation_batch_size', 'val_batch_size': 'validation_batch_size',
    'wd': 'weight_decay', 'num_epochs': 'epochs', 'n_epochs': 'epochs', 'max_epochs': 'epochs', 'epoch': 'epochs',
    'optimizer': 'opt', 'optim': 'opt', 'scheduler': 'sched', 'lr_scheduler': 'sched', 'schedule': 'sched',
    'data_path': 'data_dir', 'dataset_dir': 'data_dir', 'root': 'data_dir', 'model_name': 'model', 'arch': 'model',
    'image_size': 'img_size', 'resolution': 'img_size', 'dropout': 'drop', 'drop_rate': 'drop',
    'label_smoothing': 'smoothing', 'num_workers': 'workers', 'warmup': 'warmup_epochs', 'output_dir': 'output',
    'random_seed': 'seed', 'gpu': 'device', 'momentum_rate': 'momentum', 'classes': 'num_classes',
}


def _suggest(name: str, known: Sequence[str]) -> Optional[str]:
    """The option a misspelled or foreign ``name`` (dest or --flag form) most likely means, or None."""
    key = name.lstrip('-').replace('-', '_').lower()
    if _ALIASES.get(key) in known:
        return _ALIASES[key]
    close = difflib.get_close_matches(key, list(known), n=1)
    return close[0] if close else None


def load_config(path: str) -> Dict[str, Any]:
    """Read a YAML mapping of options; a problem with the file is a UserError."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f'config file {path} not found')
    try:
        cfg = yaml.safe_load(p.read_text(encoding='utf-8'))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        mark = getattr(e, 'problem_mark', None)
        at = f' at line {mark.line + 1}' if mark is not None else ''
        raise UserError(f'config file {path} is not valid YAML{at}: {getattr(e, "problem", None) or e}') from None
    if cfg is None:
        return {}
    if not isinstance(cfg, dict):
        raise UserError(f'config file {path} must be a mapping of option: value, got {type(cfg).__name__}')
    return cfg


def _check_cli_leftovers(rest: Sequence[str]) -> None:
    for tok in rest:
        if not tok.startswith('-') or tok == '-':
            raise UserError(f'unexpected argument {tok!r} (the data folder goes in --data-dir)')
        name = tok.split('=', 1)[0]
        if name in _UNSUPPORTED_FLAGS:
            dest = _UNSUPPORTED_FLAGS[name]
            raise UserError(f'{name} is not supported by this trainer: {UNSUPPORTED[dest][1]}')
        close = _suggest(name, list(_option_dests(build_parser())))
        hint = f' (did you mean --{close.replace("_", "-")}?)' if close else ''
        raise UserError(f'unknown option {name}{hint} (see {PROG} --help)')


def parse_args(argv: Sequence[str], resume_args: Optional[Dict[str, Any]] = None) -> argparse.Namespace:
    """Options from defaults < ``resume_args`` (a checkpoint's) < ``--config`` file < command line."""
    parser = build_parser()
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument('-c', '--config', default='')
    pre_args, _ = pre.parse_known_args(list(argv))
    defaults: Dict[str, Any] = {}
    actions = _option_dests(parser)
    if resume_args:
        inherited = {k: v for k, v in resume_args.items() if k in actions and k not in _NOT_INHERITED}
        defaults.update(_config_defaults(parser, inherited, 'checkpoint args'))
    if pre_args.config:
        defaults.update(_config_defaults(parser, load_config(pre_args.config), pre_args.config))
    parser.set_defaults(**defaults)
    args, rest = parser.parse_known_args(list(argv))
    _check_cli_leftovers(rest)
    return args


def check_args(args: argparse.Namespace) -> None:
    """Refuse combinations that would be ignored or fail later."""
    if args.model_parallel is not None and len(args.model_parallel) > 1 and \
            'none' in [str(d).lower() for d in args.model_parallel]:
        raise UserError('--model-parallel none cannot be combined with devices')
    if not args.dist_timeout > 0:
        raise UserError(f'--dist-timeout must be > 0 seconds, got {args.dist_timeout}')
    if args.plateau_metric is not None and args.sched != 'plateau':
        raise UserError(f'--plateau-metric needs --sched plateau (got --sched {args.sched})')
    if args.sched != 'plateau' and (args.plateau_patience is not None or args.plateau_max_decays is not None):
        raise UserError('--plateau-patience / --plateau-max-decays need --sched plateau')
    if args.sched == 'plateau' and (args.plateau_metric or 'val').startswith('val') and not args.val_split:
        raise UserError('the plateau schedule watches a validation metric but --val-split is empty; '
                        'use --plateau-metric train_top1 or give a validation split')
    if getattr(args, 'demo_dataset', 'demo') != 'demo' and not args.demo_data:
        raise UserError(f'--demo-dataset {args.demo_dataset} needs --demo-data (without it the data comes from --data-dir)')
    if args.pca_lighting < 0:
        raise UserError(f'--pca-lighting must be >= 0, got {args.pca_lighting}')
    if args.pca_lighting == 0 and args.pca_eig != 'imagenet':
        raise UserError('--pca-eig has no effect without --pca-lighting STD > 0')
    if args.paper_crop:
        changed = [n for n, v, d in (('--scale', args.scale, [0.08, 1.0]), ('--ratio', args.ratio, [3. / 4., 4. / 3.]),
                                     ('--train-crop-mode', args.train_crop_mode, None)) if v != d]
        if changed:
            raise UserError(f'--paper-crop replaces timm\'s random-resized crop, so {", ".join(changed)} would have no '
                            'effect; drop one or the other')
    for name, lo in (('batch_size', 1), ('epochs', 1), ('grad_accum_steps', 1), ('checkpoint_hist', 1),
                     ('val_interval', 1), ('log_interval', 1), ('workers', 0)):
        if getattr(args, name) < lo:
            raise UserError(f'--{name.replace("_", "-")} must be >= {lo}, got {getattr(args, name)}')
    if args.plateau_patience is not None and args.plateau_patience < 1:
        raise UserError(f'--plateau-patience must be >= 1, got {args.plateau_patience}')
    if args.plateau_max_decays is not None and args.plateau_max_decays < 0:
        raise UserError(f'--plateau-max-decays must be >= 0, got {args.plateau_max_decays}')
    if args.aug_repeats and not args.distributed:
        raise UserError('--aug-repeats needs distributed training (torchrun)')
    if args.amp and args.model_dtype not in (None, 'float32'):
        raise UserError('--amp needs a float32 model (leave --model-dtype out)')


def args_dict(args: argparse.Namespace) -> Dict[str, Any]:
    """The options as a plain dict of YAML/weights_only-safe values (dest names only, loadable as --config)."""
    dests = _option_dests(build_parser())
    return {k: _plain(getattr(args, k)) for k in dests if hasattr(args, k)}


def _plain(obj: Any) -> Any:
    """Lists, dicts, str, int, float, bool, None and tensors only (safe for yaml.safe_dump and weights_only)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (bool, int, float, str)) or obj is None or isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    return str(obj)


# ---------------------------------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------------------------------
class SkipUnreadable(torch.utils.data.Dataset):
    """A map-style image dataset whose unreadable images are skipped, recorded and counted, never fatal.

    Training (``substitute=True``): the next readable image takes the bad one's place, so batches stay
    full. Evaluation (``substitute=False``): the item is None and ``SkipNoneCollate`` drops it, so no
    image counts twice. Each failure appends "split<TAB>path<TAB>reason" to ``log_path``, a file shared
    by the loader's worker processes, so the main process can count and report skips per epoch.
    """

    max_consecutive = 50

    def __init__(self, dataset: torch.utils.data.Dataset, split: str = '', log_path: Optional[str] = None,
                 substitute: bool = True) -> None:
        self.dataset = dataset
        self.split = split
        self.log_path = log_path
        self.substitute = substitute
        if hasattr(dataset, '_max_retries'):  # timm's ImageDataset substitutes bad samples itself: let us see them
            dataset._max_retries = 1

    @property
    def transform(self) -> Optional[Callable]:
        return getattr(self.dataset, 'transform', None)

    @transform.setter
    def transform(self, t: Optional[Callable]) -> None:
        self.dataset.transform = t

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str) -> Any:
        if name == 'dataset':
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def filename(self, index: int) -> str:
        ds = self.dataset
        with contextlib.suppress(Exception):
            if hasattr(ds, 'filename'):
                return os.path.abspath(ds.filename(index, absolute=True))
            if hasattr(ds, 'samples'):
                return os.path.abspath(ds.samples[index][0])
        return f'index {index}'

    def _reason(self, path: str, err: Exception) -> str:
        if os.path.isfile(path):
            from PIL import Image
            try:
                with Image.open(path) as im:
                    im.convert('RGB')
            except Exception as e:  # the decoder's own words beat timm's "failed to load"
                return f'{type(e).__name__}: {e}'
        return f'{type(err).__name__}: {err}'

    def __getitem__(self, index: int) -> Any:
        n = len(self.dataset)
        err: Optional[Exception] = None
        for k in range(min(self.max_consecutive, n)):
            i = (index + k) % n
            try:
                return self.dataset[i]
            except Exception as e:  # any failure to read or decode one image: skip it, never the run
                err = e
                path = self.filename(i)
                reason = ' '.join(self._reason(path, e).split())
                if self.log_path:
                    with open(self.log_path, 'a', encoding='utf-8') as f:
                        f.write(f'{self.split}\t{path}\t{reason}\n')
                if not self.substitute:
                    return None
        raise RuntimeError(f'{_UNREADABLE}: {min(self.max_consecutive, n)} images in a row could not be read '
                           f'(last: {self.filename((index + min(self.max_consecutive, n) - 1) % n)}: {err})')


class SkipNoneCollate:
    """Collate the items that loaded; an all-unreadable batch becomes an empty one of ``empty_shape``."""

    def __init__(self, collate: Callable, empty_shape: Sequence[int], dtype: torch.dtype = torch.uint8) -> None:
        self.collate = collate
        self.empty_shape = tuple(empty_shape)
        self.dtype = dtype

    def __call__(self, batch: List[Any]) -> Any:
        batch = [b for b in batch if b is not None]
        if batch:
            return self.collate(batch)
        return torch.zeros((0, *self.empty_shape), dtype=self.dtype), torch.zeros(0, dtype=torch.long)


def _skip_counts(log_path: Optional[Path]) -> Tuple[int, int]:
    """(lines, distinct paths) recorded so far."""
    if log_path is None or not log_path.is_file():
        return 0, 0
    lines = [ln.split('\t') for ln in log_path.read_text(encoding='utf-8').splitlines() if ln.strip()]
    return len(lines), len({ln[1] for ln in lines if len(ln) > 1})


def _class_names(ds: Any) -> Optional[List[str]]:
    """Class names in index order for folder / torchvision datasets, else None."""
    c2i = None
    reader = getattr(ds, 'reader', None)
    if reader is not None and isinstance(getattr(reader, 'class_to_idx', None), dict):
        c2i = reader.class_to_idx
    elif isinstance(getattr(ds, 'class_to_idx', None), dict):
        c2i = ds.class_to_idx
    if c2i:
        if sorted(c2i.values()) == list(range(len(c2i))):
            return [str(name) for name, _ in sorted(c2i.items(), key=lambda kv: kv[1])]
        return None
    classes = getattr(ds, 'classes', None)
    return [str(c) for c in classes] if isinstance(classes, (list, tuple)) else None


def _split_root(ds: Any) -> Optional[str]:
    reader = getattr(ds, 'reader', None)
    root = getattr(reader, 'root', None) or getattr(ds, 'root', None)
    return os.path.realpath(root) if isinstance(root, (str, os.PathLike)) else None


def _folder_like(dataset: str) -> bool:
    """Datasets read from --data-dir on disk (which is then required and must exist): folders, tars, shards."""
    return dataset.lower().startswith('wds/') or _image_folder(dataset)


def _image_folder(dataset: str) -> bool:
    """Datasets whose splits are sub-folders of --data-dir, looked up as timm does (see splits.py)."""
    name = dataset.lower()
    return name in ('', 'folder', 'tar') or name.startswith(('folder/', 'tar/', 'torch/image_folder', 'torch/folder'))


def _create_dataset(args: argparse.Namespace, split: str, is_training: bool, class_map: Any, label: str) -> Any:
    from timm.data import create_dataset
    in_chans = args.in_chans or (args.input_size[0] if args.input_size else 3)
    kwargs: Dict[str, Any] = dict(
        root=args.data_dir, split=split, is_training=is_training, class_map=class_map,
        download=args.dataset_download, batch_size=args.batch_size,
        input_img_mode=args.input_img_mode or ('RGB' if in_chans == 3 else 'L'))
    if is_training:
        kwargs.update(seed=args.seed, repeats=args.epoch_repeats)
    for key, opt in (('input_key', 'input_key'), ('target_key', 'target_key'),
                     ('num_samples', 'train_num_samples' if is_training else 'val_num_samples')):
        if getattr(args, opt) is not None:
            kwargs[key] = getattr(args, opt)
    if args.dataset_trust_remote_code:
        kwargs['trust_remote_code'] = True
    where = args.data_dir or args.dataset
    wds_names = None
    if args.dataset.lower().startswith('wds/'):
        from .shard_reader import check_wds
        wds_names = check_wds(args.data_dir, split, class_map)
    try:
        ds = create_dataset(args.dataset, **kwargs)
    except Exception as e:  # timm and torchvision raise many kinds for a missing or malformed dataset
        msg = ' '.join(str(e).split()) or type(e).__name__
        raise UserError(f'cannot load the {label} split {split!r} of {where}: {msg}') from None
    if isinstance(ds, torch.utils.data.Dataset) and hasattr(ds, '__len__') \
            and not isinstance(ds, torch.utils.data.IterableDataset) and len(ds) == 0:
        raise UserError(f'no images in the {label} split {split!r} of {where}')
    if args.dataset.lower().startswith('wds/'):
        from .shard_reader import adopt_wds
        adopt_wds(ds, args.data_dir, wds_names)
    return ds


def build_datasets(args: argparse.Namespace) -> Tuple[Any, Optional[Any], Optional[List[str]]]:
    """The training and validation datasets (timm's create_dataset) and the class names, checked."""
    if args.demo_data:
        try:
            data = importlib.import_module('timm_alexnet_split.data')
        except ImportError as e:
            raise UserError(f'--demo-data needs timm_alexnet_split.data, which is missing ({e})') from None
        name = getattr(args, 'demo_dataset', 'demo')
        ensure = data.ensure_demo_data if name == 'demo' else lambda root, **kw: data.ensure_dataset(name, root, **kw)
        if getattr(args, 'distributed', False):
            # one writer at a time: process 0 generates, then the first process on each other machine (nothing to
            # do on a shared disk), then the rest find it there
            import torch.distributed as dist
            for turn in (args.rank == 0, args.local_rank == 0 and args.rank != 0, args.local_rank != 0):
                if turn:
                    args.data_dir = str(ensure(args.data_dir or None, progress=args.rank == 0))
                dist.barrier()
        else:
            args.data_dir = str(ensure(args.data_dir or None))
        _logger.info(f'demo data: {args.data_dir}')
    if args.data and not args.data_dir:
        args.data_dir = args.data
    if not args.data_dir and _folder_like(args.dataset):
        raise UserError('no data: give --data-dir DIR (ImageFolder with train/ and validation/), '
                        '--dataset torch/NAME, or --demo-data')
    if args.data_dir and _folder_like(args.dataset) and not os.path.exists(args.data_dir):
        raise UserError(f'data folder {args.data_dir} not found')
    class_map = args.class_map or None
    has_val = _check_folder_splits(args)
    train_ds = _create_dataset(args, args.train_split, True, class_map, 'training')
    names = _class_names(train_ds)
    eval_ds = None
    if has_val:
        eval_ds = _create_dataset(args, args.val_split, False, class_map, 'validation')
        eval_ds = _align_classes(args, eval_ds, names, lambda cmap: _create_dataset(
            args, args.val_split, False, cmap, 'validation'))
        tr, ev = _split_root(train_ds), _split_root(eval_ds)
        if tr is not None and tr == ev:
            _logger.warning(f'WARNING: the {args.val_split!r} split of {args.data_dir or args.dataset} is the training '
                            'split itself: training without validation metrics')
            eval_ds = None
    return train_ds, eval_ds, names


def _check_folder_splits(args: argparse.Namespace) -> bool:
    """For a folder dataset, check that the training split is there (UserError naming the splits that are) and say
    whether there is a validation split. A folder without split folders is itself the training data. Training without
    validation data is said once here; it is never another split's images under the validation name."""
    from .splits import EVAL_NAMES, find_split, split_folders
    if not args.val_split:
        return False
    if not (args.data_dir and _image_folder(args.dataset) and os.path.isdir(args.data_dir)):
        return True
    root = Path(args.data_dir)
    train_dir = find_split(root, args.train_split)
    if train_dir is None:
        _logger.warning(f'WARNING: {root} has no split folders: training on all of it, without validation metrics '
                        f'(give it {args.train_split}/ and {args.val_split}/ sub-folders to validate)')
        return False
    present = split_folders(root)
    if not any(p.lower() in EVAL_NAMES for p in present) and args.val_split.split('[')[0] not in present:
        _logger.warning(f'WARNING: no validation split {args.val_split!r} in {root} (it has {", ".join(present)}): '
                        'training without validation metrics; model_best.pth.tar is not written, last.pth.tar holds '
                        'the final weights')
        return False
    find_split(root, args.val_split)  # a validation folder under another name: the error names what is there
    return True


def _align_classes(args: Any, ds: Any, names: Optional[List[str]], recreate: Callable[[Dict[str, int]], Any]) -> Any:
    """Give a dataset the class indices of ``names``; refuse classes ``names`` lacks."""
    got = _class_names(ds)
    if names is None or got is None or got == names:
        return ds
    extra = sorted(set(got) - set(names))
    if extra:
        shown = ', '.join(extra[:5]) + (' ...' if len(extra) > 5 else '')
        raise UserError(f'the evaluation data has classes the model was not trained on: {shown}')
    if getattr(args, 'class_map', ''):
        return ds
    _logger.info(f'evaluation data has {len(got)} of the {len(names)} classes: using the training class indices')
    return recreate({n: i for i, n in enumerate(names)})


class PaperCrop:
    """The paper's training crop: shorter side to ``size / crop_pct`` (256 for 224), centre square, random crop."""

    def __init__(self, size: Tuple[int, int], crop_pct: float, interpolation: str = 'bilinear') -> None:
        from timm.data.transforms import str_to_interp_mode
        from torchvision import transforms
        scale = int(math.floor(max(size) / crop_pct))
        self.size = tuple(size)
        self.resize = transforms.Resize(scale, interpolation=str_to_interp_mode(interpolation))
        self.square = transforms.CenterCrop(scale)
        self.crop = transforms.RandomCrop(self.size)

    def __call__(self, img: Any) -> Any:
        return self.crop(self.square(self.resize(img)))

    def __repr__(self) -> str:
        return f'{type(self).__name__}(resize={self.resize.size}, square, random_crop={self.size})'


class TenCrop:
    """Ten crops for evaluation: resize the shorter side to ``size / crop_pct``, then the four corners and the
    centre of the image and of its mirror image (torchvision's ten_crop), as a uint8 tensor (10, C, H, W)."""

    def __init__(self, size: Tuple[int, int], crop_pct: float, interpolation: str = 'bilinear') -> None:
        from timm.data.transforms import str_to_interp_mode
        from torchvision import transforms
        h, w = size
        scale = int(math.floor(h / crop_pct)) if h == w else (int(math.floor(h / crop_pct)), int(math.floor(w / crop_pct)))
        self.size = (h, w)
        self.resize = transforms.Resize(scale, interpolation=str_to_interp_mode(interpolation))

    def __call__(self, img: Any) -> torch.Tensor:
        import torchvision.transforms.functional as TF
        img = self.resize(img)
        return torch.stack([TF.pil_to_tensor(c) for c in TF.ten_crop(img, list(self.size))])


def _use_paper_crop(loader: Any, data_config: Dict[str, Any], interpolation: str) -> None:
    from timm.data.transforms import RandomResizedCropAndInterpolation
    tf = loader.dataset.transform
    steps = getattr(tf, 'transforms', None)
    idx = [i for i, t in enumerate(steps or []) if isinstance(t, RandomResizedCropAndInterpolation)]
    if not idx:
        raise UserError("--paper-crop: timm's training transform has no random-resized crop to replace")
    steps[idx[0]] = PaperCrop(tuple(data_config['input_size'][1:]), data_config['crop_pct'], interpolation)


def build_loaders(args: argparse.Namespace, data_config: Dict[str, Any], device: torch.device, train_ds: Any,
                  eval_ds: Optional[Any], img_dtype: torch.dtype) -> Tuple[Any, Optional[Any]]:
    """timm's create_loader for training (and centre-crop evaluation); a ten-crop loader when asked.
    ``--decode gpu``: shard bytes decoded on the device (decode.py); ``--decode draft``: PIL draft mode."""
    from timm.data import create_loader

    from .decode import decode_mode, device_decode_loaders
    decode = decode_mode(args, device, _logger)
    if decode == 'gpu':
        return device_decode_loaders(args, data_config, device, eval_ds, img_dtype, _logger)
    common = dict(mean=data_config['mean'], std=data_config['std'], pin_memory=args.pin_mem, img_dtype=img_dtype,
                  device=device, distributed=args.distributed, use_prefetcher=args.prefetcher)
    train_interpolation = args.train_interpolation
    if args.no_aug or not train_interpolation:
        train_interpolation = data_config['interpolation']
    loader_train = create_loader(
        train_ds, input_size=data_config['input_size'], batch_size=args.batch_size, is_training=True,
        no_aug=args.no_aug, re_prob=args.reprob, re_mode=args.remode, re_count=args.recount, re_split=args.resplit,
        train_crop_mode=args.train_crop_mode, scale=args.scale, ratio=args.ratio, hflip=args.hflip, vflip=args.vflip,
        color_jitter=args.color_jitter, color_jitter_prob=args.color_jitter_prob,
        grayscale_prob=args.grayscale_prob or 0., gaussian_blur_prob=args.gaussian_blur_prob or 0.,
        auto_augment=args.aa, num_aug_repeats=int(args.aug_repeats), interpolation=train_interpolation,
        num_workers=args.workers, worker_seeding=args.worker_seeding,
        use_multi_epochs_loader=args.use_multi_epochs_loader,
        persistent_workers=False,  # fresh workers each epoch, seeded from the saved RNG: exact resume
        **common)
    if args.paper_crop and not args.no_aug:
        interp = data_config['interpolation'] if train_interpolation == 'random' else train_interpolation
        _use_paper_crop(loader_train, data_config, interp)
    if decode == 'draft':
        from .decode import draft_target, use_draft
        use_draft(loader_train, draft_target(data_config))
    if isinstance(train_ds, torch.utils.data.IterableDataset):
        from .shard_reader import wds_train_loader
        loader_train = wds_train_loader(args, train_ds, loader_train, _logger)
    loader_eval = None
    if eval_ds is not None:
        loader_eval = eval_loader(eval_ds, data_config, args.validation_batch_size or args.batch_size, args.workers,
                                  device, ten_crop=args.ten_crop, prefetcher=args.prefetcher,
                                  distributed=args.distributed, pin_memory=args.pin_mem, img_dtype=img_dtype,
                                  draft=decode == 'draft')
    return loader_train, loader_eval


def eval_loader(ds: Any, data_config: Dict[str, Any], batch_size: int, workers: int, device: torch.device, *,
                ten_crop: bool = False, prefetcher: bool = True, distributed: bool = False, pin_memory: bool = False,
                img_dtype: torch.dtype = torch.float32, draft: bool = False) -> Any:
    """Evaluation batches: timm's centre-crop loader, or (B, 10, C, H, W) uint8 ten-crop batches that
    ``evaluate(..., ten_crop=True)`` normalises on the device. Unreadable images (None items) are dropped.
    ``draft``: JPEGs decoded in PIL's draft mode (decode.DraftDecode)."""
    from timm.data import create_loader
    from timm.data.loader import fast_collate
    c, h, w = data_config['input_size']
    if isinstance(ds, SkipUnreadable) and isinstance(ds.dataset, torch.utils.data.IterableDataset):
        ds = ds.dataset  # no random access to skip by: timm's wds reader skips unreadable samples itself
    iterable = isinstance(ds, torch.utils.data.IterableDataset)  # timm's wds reader shares itself out by rank
    if ten_crop:
        from timm.data.distributed_sampler import OrderedDistributedSampler
        from torchvision import transforms

        from .decode import DraftDecode, draft_bytes, draft_target
        ds.transform = TenCrop((h, w), data_config['crop_pct'], data_config['interpolation'])
        if draft:
            draft_bytes(ds)
            ds.transform = transforms.Compose([DraftDecode(draft_target(data_config)), ds.transform])
        sampler = OrderedDistributedSampler(ds) if distributed and not iterable else None
        collate = SkipNoneCollate(torch.utils.data.default_collate, (10, c, h, w))
        return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False, sampler=sampler,
                                           num_workers=workers, pin_memory=pin_memory, drop_last=False,
                                           collate_fn=collate)
    collate = SkipNoneCollate(fast_collate, (c, h, w)) if prefetcher else \
        SkipNoneCollate(torch.utils.data.default_collate, (c, h, w), torch.float32)
    loader = create_loader(ds, input_size=data_config['input_size'], batch_size=batch_size, is_training=False,
                           interpolation=data_config['interpolation'], mean=data_config['mean'], std=data_config['std'],
                           num_workers=workers, crop_pct=data_config['crop_pct'], collate_fn=collate,
                           pin_memory=pin_memory, img_dtype=img_dtype, device=device,
                           distributed=distributed and not iterable, use_prefetcher=prefetcher, persistent_workers=False)
    if draft:
        from .decode import draft_target, use_draft
        use_draft(loader, draft_target(data_config))
    return loader


# ---------------------------------------------------------------------------------------------------------------------
# model
# ---------------------------------------------------------------------------------------------------------------------
def model_parallel_spec(args: argparse.Namespace) -> Optional[List[str]]:
    """The ``--model-parallel`` value as strings, or None when it is off (left out, or ``none``)."""
    spec = getattr(args, 'model_parallel', None)
    if spec is None or [str(d).lower() for d in spec] == ['none']:
        return None
    return [str(d) for d in spec]


def model_parallel_devices(args: argparse.Namespace) -> Optional[List[torch.device]]:
    """This process's devices for ``--model-parallel`` (by its local rank when a count K is given), checked;
    None when model parallelism is off."""
    from .parallel import is_device_count, process_devices
    spec = model_parallel_spec(args)
    if spec is None:
        return None
    local_rank = getattr(args, 'local_rank', 0)
    local_world = int(os.environ.get('LOCAL_WORLD_SIZE', '1'))
    try:
        devs = process_devices(spec, local_rank)
    except ValueError as e:
        hint = ''
        if is_device_count(spec) and int(spec[0]) > 0:
            k = int(spec[0])
            hint = (f' (process {local_rank} of {local_world} on this machine takes cuda:{local_rank * k}..'
                    f'cuda:{local_rank * k + k - 1}: processes per machine x K must not exceed its GPUs)')
        raise UserError(f'--model-parallel {" ".join(spec)}: {e}{hint}') from None
    if len({d.type for d in devs}) > 1:
        raise UserError(f'--model-parallel {" ".join(spec)}: the devices must all be of one kind (all cuda or all cpu)')
    if getattr(args, 'distributed', False) and devs[0].type == 'cuda' and not is_device_count(spec) and local_world > 1:
        raise UserError(f'--model-parallel {" ".join(spec)}: with {local_world} processes on this machine every process '
                        'would take the same GPUs; give a count K instead (process i takes cuda:i*K .. cuda:i*K+K-1)')
    return devs


def _model_parallel_kind(args: argparse.Namespace) -> None:
    """Before the device is set up: --device follows --model-parallel's kind of device (or must agree with it)."""
    from .parallel import is_device_count
    spec = model_parallel_spec(args)
    if spec is None:
        return
    try:
        kind = 'cuda' if is_device_count(spec) else torch.device(spec[0]).type
    except RuntimeError:
        raise UserError(f'--model-parallel: not a device: {spec[0]!r} (give devices such as cuda:0 cuda:1, '
                        'or a count K of GPUs per process)') from None
    if args.device is None:
        args.device = kind
        return
    try:
        given = torch.device(args.device).type
    except RuntimeError:
        raise UserError(f'--device {args.device}: not a device') from None
    if given != kind:
        raise UserError(f'--device {args.device} and --model-parallel {" ".join(spec)} disagree: leave --device out')


def create_train_model(args: argparse.Namespace, device: torch.device, dtype: Optional[torch.dtype] = None) -> nn.Module:
    """timm.create_model from the options, on ``device``; with ``--model-parallel``, the split AlexNet's towers on
    this process's devices (``model_parallel_devices``) and its head on the first of them."""
    import timm
    spec = model_parallel_spec(args)
    in_chans = args.in_chans or (args.input_size[0] if args.input_size else 3)
    factory: Dict[str, Any] = {}
    if args.pretrained_path:
        factory['pretrained_cfg_overlay'] = dict(file=args.pretrained_path, num_classes=-1)
    try:
        model = timm.create_model(
            args.model, pretrained=args.pretrained, in_chans=in_chans, num_classes=args.num_classes,
            drop_rate=args.drop, global_pool=args.gp, checkpoint_path=args.initial_checkpoint or None,
            **factory, **args.model_kwargs)
    except (RuntimeError, TypeError, ValueError, KeyError, FileNotFoundError, OSError) as e:
        msg = ' '.join(str(e).split())
        if not timm.is_model(args.model):
            close = difflib.get_close_matches(args.model, timm.list_models(), n=1)
            raise UserError(f'unknown model {args.model!r}' + (f' (did you mean {close[0]}?)' if close else '')) from None
        raise UserError(f'cannot create {args.model} with these options: {msg}') from None
    if args.head_init_scale is not None:
        with torch.no_grad():
            model.get_classifier().weight.mul_(args.head_init_scale)
            model.get_classifier().bias.mul_(args.head_init_scale)
    if args.head_init_bias is not None:
        nn.init.constant_(model.get_classifier().bias, args.head_init_bias)
    if spec is None:
        return model.to(device=device, dtype=dtype)
    from .model import AlexNetSplit
    from .parallel import place_towers
    if not isinstance(model, AlexNetSplit):
        raise UserError(f'--model-parallel places the towers of the split AlexNet on devices; {args.model} has no towers')
    devs = model_parallel_devices(args)
    assert devs is not None
    if len(devs) > model.num_towers:
        raise UserError(f'--model-parallel {" ".join(spec)}: {len(devs)} devices for {model.num_towers} towers would '
                        f'leave {len(devs) - model.num_towers} idle')
    place_towers(model, [devs[t % len(devs)] for t in range(model.num_towers)], head_device=devs[0])
    return model.to(dtype=dtype) if dtype is not None else model


def conv1_kernels(model: nn.Module) -> Tuple[np.ndarray, List[int]]:
    """All towers' first-layer kernels concatenated in tower order (K, C, kh, kw) float32, and K per tower."""
    from timm.utils import unwrap_model
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


# ---------------------------------------------------------------------------------------------------------------------
# checkpoints
# ---------------------------------------------------------------------------------------------------------------------
def _fsync_replace(tmp: Path, dst: Path) -> None:
    with open(tmp, 'rb+') as f:
        os.fsync(f.fileno())
    os.replace(tmp, dst)


def atomic_torch_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary file in the same folder, then os.replace: the file is old or new, never half."""
    path = Path(path)
    tmp = path.with_name(f'.{path.name}.tmp')
    try:
        torch.save(obj, tmp)
        _fsync_replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_save_safetensors(tensors: Dict[str, torch.Tensor], path: Path, metadata: Dict[str, str]) -> None:
    from safetensors.torch import save_file
    path = Path(path)
    tmp = path.with_name(f'.{path.name}.tmp')
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
        umask = os.umask(0o022)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        _fsync_replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _atomic_link(src: Path, dst: Path) -> None:
    """dst becomes a hard link to (or a copy of) src, atomically."""
    import shutil
    tmp = dst.with_name(f'.{dst.name}.tmp')
    tmp.unlink(missing_ok=True)
    try:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copy2(src, tmp)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


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
    import hashlib
    h = hashlib.sha256()
    for name, t in state_dict.items():
        t = t.detach()
        h.update(f'{name}:{t.dtype}:{tuple(t.shape)};'.encode())
        h.update(t.reshape(-1).cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------------------------------
# distributed: collectives that keep the processes in step, and what a failed one means
# ---------------------------------------------------------------------------------------------------------------------
class _PeerLost(Exception):
    """A collective operation failed: another process died or did not answer within --dist-timeout."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


_COMM_ERROR_WORDS = ('gloo', 'NCCL', 'ProcessGroup', 'Connection reset by peer', 'Connection closed by peer',
                     'Broken pipe')


def _is_comm_failure(e: BaseException) -> bool:
    """A failed collective (a dead or silent peer), as gloo, NCCL and c10d report it."""
    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()):
        return False
    return isinstance(e, dist.DistError) or (isinstance(e, RuntimeError) and any(w in str(e) for w in _COMM_ERROR_WORDS))


def _peer_lost_message(e: BaseException, timeout: Optional[float] = None, last: Optional[Path] = None) -> str:
    """One line: which process, what failed, what to do."""
    import torch.distributed as dist
    detail = ' '.join(str(e).split())
    detail = detail[:300] + (' ...' if len(detail) > 300 else '')
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
def _collective_timeout(seconds: float) -> Iterator[None]:
    """torch.distributed.init_process_group gets ``timeout=seconds`` while timm's init_distributed_device calls it:
    every collective of the job then fails after that long instead of waiting (gloo: 30 min, NCCL: 10 min)."""
    from datetime import timedelta

    import torch.distributed as dist
    original = dist.init_process_group

    def init_process_group(*a: Any, **k: Any) -> Any:
        k.setdefault('timeout', timedelta(seconds=seconds))
        return original(*a, **k)

    dist.init_process_group = init_process_group
    try:
        yield
    finally:
        dist.init_process_group = original


def _broadcast_from_primary(obj: Any) -> Any:
    import torch.distributed as dist
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _gather_objects(obj: Any, world_size: int) -> List[Any]:
    import torch.distributed as dist
    out: List[Any] = [None] * world_size
    dist.all_gather_object(out, obj)
    return out


def _signal_flags(stop: Optional['StopRequest']) -> Tuple[float, float]:
    sig = stop.signum if stop is not None else None
    return float(sig == signal.SIGINT), float(sig is not None and sig != signal.SIGINT)


def _signal_from_flags(n_int: float, n_other: float) -> Optional[int]:
    """The stop request any process got, the same answer on every process (SIGINT before SIGTERM)."""
    return int(signal.SIGINT) if n_int > 0 else int(signal.SIGTERM) if n_other > 0 else None


def _agreed_signal(stop: 'StopRequest', args: argparse.Namespace, device: torch.device) -> Optional[int]:
    """The stop request of this process, or in a distributed run of any process (so that all stop together)."""
    if not args.distributed:
        return stop.signum
    import torch.distributed as dist
    flags = torch.tensor(_signal_flags(stop), device=device)
    dist.all_reduce(flags)
    return _signal_from_flags(*flags.tolist())


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
        return self.run_dir / 'last.pth.tar'

    @property
    def best(self) -> Path:
        return self.run_dir / 'model_best.pth.tar'

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
            history.append((f'checkpoint-{epoch}.pth.tar', float(metric), int(epoch)))
            history.sort(key=lambda h: h[1], reverse=not self.decreasing)
            history, dropped = history[:self.max_history], history[self.max_history:]
            keep = any(h[2] == epoch for h in history)
        if is_best:
            self.best_metric, self.best_epoch = float(metric), int(epoch)
        self.history = history
        state['saver'] = self.state_dict()
        atomic_torch_save(state, self.last)
        if self.safetensors:
            atomic_save_safetensors(weights, self.run_dir / 'last.safetensors', metadata)
        if keep:
            _atomic_link(self.last, self.run_dir / f'checkpoint-{epoch}.pth.tar')
        if is_best:
            _atomic_link(self.last, self.best)
            if self.safetensors:
                _atomic_link(self.run_dir / 'last.safetensors', self.run_dir / 'model_best.safetensors')
        for f, _, e in dropped:
            if e != epoch:
                (self.run_dir / f).unlink(missing_ok=True)
        self.recovery.unlink(missing_ok=True)
        return is_best

    def save_recovery(self, state: Dict[str, Any]) -> Path:
        state['saver'] = self.state_dict()
        atomic_torch_save(state, self.recovery)
        return self.recovery


# ---------------------------------------------------------------------------------------------------------------------
# run folder artefacts
# ---------------------------------------------------------------------------------------------------------------------
def _new_run_dir(base: Path, name: str) -> Path:
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


def _save_npy(path: Path, arr: np.ndarray) -> None:
    tmp = path.with_name(f'.{path.name}.tmp')
    with open(tmp, 'wb') as f:
        np.save(f, arr)
    os.replace(tmp, path)


def _read_summary(path: Path) -> List[Dict[str, float]]:
    rows = []
    if path.is_file():
        with open(path, newline='') as f:
            for r in csv.DictReader(f):
                rows.append({k: (float(v) if v not in ('', None) else math.nan) for k, v in r.items() if k})
    return rows


def _trim_summary(path: Path, start_epoch: int) -> None:
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
    tmp = path.with_name(f'.{path.name}.tmp')
    with open(tmp, 'w', newline='') as f:
        csv.writer(f).writerows([rows[0], *keep] if keep else [])
    os.replace(tmp, path)


def plot_curves(run_dir: Path, title: str = '') -> None:
    """acc.png (top-1 train/validation, top-5) and loss.png from summary.csv, with the learning rate on a second
    axis when it changed (log scale unless it reaches 0); dotted lines mark the changes when they are few and far
    apart (steps, plateau decays), not the every-epoch changes of a cosine schedule."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator
    rows = _read_summary(run_dir / 'summary.csv')
    if not rows:
        return
    ep = [r['epoch'] + 1 for r in rows]
    lr_changes = [(ep[i], rows[i]['lr']) for i in range(1, len(rows))
                  if 'lr' in rows[i] and not math.isclose(rows[i]['lr'], rows[i - 1]['lr'], rel_tol=1e-6)]
    specs = [
        ('acc.png', 'accuracy (%)', [('train_top1', 'train top-1', '-'), ('eval_top1', 'validation top-1', '-'),
                                     ('eval_top5', 'validation top-5', '--')]),
        ('loss.png', 'cross-entropy loss', [('train_loss', 'train', '-'), ('eval_loss', 'validation', '-')]),
    ]
    for fname, ylabel, series in specs:
        fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
        for key, label, style in series:
            ys = [r.get(key, math.nan) for r in rows]
            if any(not math.isnan(y) for y in ys):
                ax.plot(ep, ys, style, marker='o' if len(ep) <= 30 else None, ms=3, label=label)
        handles, labels = ax.get_legend_handles_labels()
        lrs = [r.get('lr', math.nan) for r in rows]
        if lr_changes and all(lr >= 0 for lr in lrs):
            ax2 = ax.twinx()
            line, = ax2.plot(ep, lrs, color='grey', lw=1, alpha=0.7, drawstyle='steps-mid')
            if min(lrs) > 0:
                ax2.set_yscale('log')
            else:
                ax2.set_ylim(bottom=0)
            ax2.set_ylabel('learning rate', color='grey', fontsize=8)
            ax2.tick_params(axis='y', colors='grey', labelsize=7)
            handles.append(line)
            labels.append('learning rate (right)')
        if len(lr_changes) <= 5 and 3 * len(lr_changes) <= len(rows):
            for x, lr in lr_changes:
                ax.axvline(x - 0.5, color='grey', ls=':', lw=1)
                ax.annotate(f'lr {lr:.0e}', (x - 0.5, 1.0), xycoords=('data', 'axes fraction'), fontsize=7,
                            color='grey', rotation=90, ha='right', va='top')
        if fname == 'acc.png':
            ax.set_ylim(-2, 102)
        else:
            finite = [y for key, _, _ in series for y in (r.get(key, math.nan) for r in rows) if y > 0]
            if finite and max(finite) / min(finite) > 30:
                ax.set_yscale('log')
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel('epoch (completed)')
        ax.set_ylabel(ylabel)
        ax.set_xlim(0.5, max(ep) + 0.5)
        ax.grid(alpha=0.3)
        ax.legend(handles, labels, loc='best', fontsize=8)
        if title:
            ax.set_title(title, fontsize=9)
        fig.tight_layout()
        tmp = run_dir / f'.{fname}.tmp.png'
        fig.savefig(tmp)
        plt.close(fig)
        os.replace(tmp, run_dir / fname)


# ---------------------------------------------------------------------------------------------------------------------
# loops
# ---------------------------------------------------------------------------------------------------------------------
class _Interrupted(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class _Diverged(Exception):
    def __init__(self, epoch: int, batch: int, value: float) -> None:
        super().__init__(epoch, batch, value)
        self.epoch, self.batch, self.value = epoch, batch, value


class StopRequest:
    """SIGINT/SIGTERM set a flag that the loops check between batches; a second signal stops at once."""

    def __init__(self) -> None:
        self.signum: Optional[int] = None
        self.last_batch: Optional[int] = None  # the training batch after which the loop stopped
        self._old: Dict[int, Any] = {}
        self._pid = os.getpid()

    def _handle(self, signum: int, frame: Any) -> None:
        if os.getpid() != self._pid:  # a loader worker (forked with this handler): the main process stops and tells
            return
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        # not through logging: the handler may run while the main thread is inside a logging call (reentrant write)
        with contextlib.suppress(OSError):
            os.write(2, f'{signal.Signals(signum).name}: stopping after this batch and saving a checkpoint '
                        '(signal again to stop at once)\n'.encode())

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
            raise _Interrupted(self.signum)


def _progress(iterable: Any, total: int, desc: str) -> Any:
    from tqdm import tqdm
    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True, disable=not sys.stderr.isatty())


def train_one_epoch(epoch: int, model: nn.Module, loader: Any, optimizer: torch.optim.Optimizer, loss_fn: nn.Module,
                    args: argparse.Namespace, device: torch.device, lr_scheduler: Any = None,
                    amp_autocast: Callable = contextlib.nullcontext, loss_scaler: Any = None,
                    model_dtype: Optional[torch.dtype] = None, pca: Optional[Callable] = None,
                    stop: Optional[StopRequest] = None, on_recovery: Optional[Callable[[int, int], None]] = None,
                    run_dir: Optional[Path] = None) -> 'OrderedDict[str, float]':
    """One pass over the training data: loss and top-1 of the training batches (as trained on).

    Distributed: one all-reduce per batch carries the loss, top-1 and any stop request, so every process sees the
    global values, stops after the same batch, and a NaN on one process stops all of them.

    Also returns ``lr``, the mean learning rate of the epoch's updates (the rate used). An epoch without a single
    batch is a UserError, never an epoch of zeros."""
    from timm import utils
    second_order = getattr(optimizer, 'is_second_order', False)
    losses_m, top1_m, time_m = utils.AverageMeter(), utils.AverageMeter(), utils.AverageMeter()
    model.train()
    accum = args.grad_accum_steps
    n = len(loader)
    last_accum = n % accum
    updates_per_epoch = (n + accum - 1) // accum
    num_updates = epoch * updates_per_epoch
    last_idx_to_accum = n - last_accum
    optimizer.zero_grad()
    t_update, samples = time.perf_counter(), 0
    lr_sum, updates, batches = 0.0, 0, 0
    bar = _progress(loader, n, f'train {epoch}')
    for batch_idx, (input, target) in enumerate(bar):
        last_batch = batch_idx == n - 1
        need_update = last_batch or (batch_idx + 1) % accum == 0
        update_idx = batch_idx // accum
        if batch_idx >= last_idx_to_accum:
            accum = last_accum
        if not args.prefetcher:
            input, target = input.to(device=device, dtype=model_dtype), target.to(device=device)
        if pca is not None:
            input = pca(input)
        if args.channels_last:
            input = input.contiguous(memory_format=torch.channels_last)
        no_sync = model.no_sync() if hasattr(model, 'no_sync') and not need_update else contextlib.nullcontext()
        with no_sync:  # DDP: gradients are all-reduced once per update, not per accumulated batch
            with amp_autocast():
                output = model(input)
                if target.device != output.device:
                    target = target.to(output.device)
                loss = loss_fn(output, target)
            with torch.no_grad():
                acc1 = utils.accuracy(output.detach().float(), target, topk=(1,))[0]
            agreed: Optional[int] = None
            if args.distributed:
                import torch.distributed as dist
                t = torch.stack([loss.detach().float().reshape(()), acc1.float().reshape(()),
                                 *loss.new_tensor(_signal_flags(stop), dtype=torch.float32)])
                dist.all_reduce(t)
                loss_value, acc1_value, n_int, n_other = t.tolist()
                loss_value, acc1_value = loss_value / args.world_size, acc1_value / args.world_size
                agreed = _signal_from_flags(n_int, n_other)
            else:
                loss_value, acc1_value = loss.item(), acc1.item()
            if not math.isfinite(loss_value):
                raise _Diverged(epoch, batch_idx, loss_value)
            if accum > 1:
                loss = loss / accum
            if loss_scaler is not None:
                loss_scaler(loss, optimizer, clip_grad=args.clip_grad, clip_mode=args.clip_mode,
                            parameters=model.parameters(), create_graph=second_order, need_update=need_update)
            else:
                loss.backward(create_graph=second_order)
                if need_update:
                    if args.clip_grad is not None:
                        utils.dispatch_clip_grad(model.parameters(), value=args.clip_grad, mode=args.clip_mode)
                    optimizer.step()
        bs = input.shape[0]
        batches += 1
        losses_m.update(loss_value, bs)
        top1_m.update(acc1_value, bs)
        samples += bs * args.world_size
        if args.save_images and run_dir is not None and batch_idx % args.log_interval == 0:
            import torchvision.utils
            torchvision.utils.save_image(input.float(), run_dir / f'train-batch-{batch_idx}.jpg', padding=0, normalize=True)
        if need_update:
            num_updates += 1
            optimizer.zero_grad()
            if args.synchronize_step:
                for d in {p.device for p in model.parameters() if p.device.type == 'cuda'}:
                    torch.cuda.synchronize(d)
            now = time.perf_counter()
            time_m.update(now - t_update)
            lr = sum(g['lr'] for g in optimizer.param_groups) / len(optimizer.param_groups)
            lr_sum, updates = lr_sum + lr, updates + 1
            if sys.stderr.isatty():
                bar.set_postfix(loss=f'{losses_m.avg:.3f}', top1=f'{top1_m.avg:.1f}', lr=f'{lr:.2e}')
            elif args.rank == 0 and (update_idx % args.log_interval == 0 or last_batch):
                _logger.info(f'Train: {epoch} [{update_idx:>4d}/{updates_per_epoch} '
                             f'({100. * (update_idx + 1) / updates_per_epoch:>3.0f}%)]  '
                             f'Loss: {losses_m.val:#.3g} ({losses_m.avg:#.3g})  Top-1: {top1_m.avg:.2f}  '
                             f'LR: {lr:.3e}  {samples / max(now - t_update, 1e-9):.1f} img/s')
            t_update, samples = now, 0
            if on_recovery is not None and args.recovery_interval and (update_idx + 1) % args.recovery_interval == 0:
                on_recovery(epoch, batch_idx)
            if lr_scheduler is not None:
                lr_scheduler.step_update(num_updates=num_updates, metric=losses_m.avg)
        sig = agreed if args.distributed else (stop.signum if stop is not None else None)
        if stop is not None and sig is not None:
            stop.signum = stop.signum or sig
            stop.last_batch = batch_idx
            stop.check()
    if hasattr(optimizer, 'sync_lookahead'):
        optimizer.sync_lookahead()
    if not batches:
        raise UserError(f'epoch {epoch} had no training batch: the training data is empty or smaller than one batch '
                        f'of {args.batch_size} (lower --batch-size)')
    return OrderedDict([('loss', losses_m.avg), ('top1', top1_m.avg), ('lr', lr_sum / max(updates, 1))])


def evaluate(model: nn.Module, loader: Any, loss_fn: nn.Module, device: torch.device, *, prefetcher: bool = True,
             ten_crop: bool = False, data_config: Optional[Dict[str, Any]] = None, channels_last: bool = False,
             amp_autocast: Callable = contextlib.nullcontext, model_dtype: Optional[torch.dtype] = None,
             distributed: bool = False, world_size: int = 1, stop: Optional[StopRequest] = None,
             desc: str = 'eval') -> 'OrderedDict[str, float]':
    """Top-1, top-5 (%) and cross-entropy over a loader. ``ten_crop``: batches (B, 10, C, H, W) of uint8 crops,
    normalised here; the softmax of the ten is averaged, and the loss is -log of that average at the label.

    ``distributed``: each process evaluates its share (timm's OrderedDistributedSampler, whose padding repeats are
    left out here) and the sums are all-reduced once at the end, so the metrics are those of the whole split."""
    loss_sum, correct1, correct5, count = 0.0, 0.0, 0.0, 0
    keep = _own_share(loader) if distributed else None
    model.eval()
    if ten_crop:
        assert data_config is not None
        mean = torch.tensor([m * 255 for m in data_config['mean']], device=device).view(1, -1, 1, 1)
        std = torch.tensor([s * 255 for s in data_config['std']], device=device).view(1, -1, 1, 1)
    with torch.inference_mode():
        for input, target in _progress(loader, len(loader), desc):
            if target.shape[0] == 0:
                continue
            if ten_crop:
                b, k = input.shape[:2]
                x = input.to(device).flatten(0, 1).float().sub_(mean).div_(std).to(model_dtype or torch.float32)
                target = target.to(device)
            elif not prefetcher:
                x, target = input.to(device=device, dtype=model_dtype), target.to(device)
            else:
                x = input
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with amp_autocast():
                output = model(x)
            if isinstance(output, (tuple, list)):
                output = output[0]
            output = output.float()
            target = target.to(output.device)
            if ten_crop:
                scores = output.softmax(-1).view(b, k, -1).mean(1)
            else:
                scores = output
            if keep is not None:
                n_keep = max(0, min(target.shape[0], keep - count))
                scores, target = scores[:n_keep], target[:n_keep]
            n = target.shape[0]
            if n:
                loss = F.nll_loss(scores.clamp_min(1e-12).log(), target) if ten_crop else loss_fn(scores, target)
                hits = scores.topk(min(5, scores.shape[1]), 1).indices.eq(target[:, None])  # as timm's accuracy
                loss_sum += loss.item() * n
                correct1 += hits[:, :1].sum().item()
                correct5 += hits.sum().item()
                count += n
            if stop is not None and not distributed:
                stop.check()
    if distributed:
        import torch.distributed as dist
        totals = torch.tensor([loss_sum, correct1, correct5, count], dtype=torch.float64, device=device)
        dist.all_reduce(totals)
        loss_sum, correct1, correct5, count = totals.tolist()
    if not count:
        return OrderedDict([('loss', math.nan), ('top1', math.nan), ('top5', math.nan), ('images', 0)])
    return OrderedDict([('loss', loss_sum / count), ('top1', 100 * correct1 / count), ('top5', 100 * correct5 / count),
                        ('images', int(count))])


def _own_share(loader: Any) -> Optional[int]:
    """How many items of a distributed evaluation loader are this process's own (not padding), when known."""
    from timm.data.distributed_sampler import OrderedDistributedSampler
    sampler = getattr(loader, 'sampler', None)
    if isinstance(sampler, OrderedDistributedSampler):
        return len(range(sampler.rank, len(sampler.dataset), sampler.num_replicas))
    return None


# ---------------------------------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _logging_to() -> Iterator[Callable[[Path], None]]:
    """Log lines to stderr now, and to RUN/log.txt once the run folder exists; undone on exit."""
    from tqdm.contrib.logging import logging_redirect_tqdm
    handlers: List[logging.Handler] = []
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(logging.Formatter('%(message)s'))
    handlers.append(stream)
    old_level, old_prop = _logger.level, _logger.propagate
    _logger.setLevel(logging.INFO)
    _logger.propagate = False
    _logger.addHandler(stream)
    early = logging.handlers.MemoryHandler(capacity=1 << 16, flushLevel=logging.CRITICAL + 1)
    handlers.append(early)  # lines logged before the run folder exists, for log.txt
    _logger.addHandler(early)

    def attach(run_dir: Path) -> None:
        fh = logging.FileHandler(run_dir / 'log.txt', encoding='utf-8')
        fh.setFormatter(logging.Formatter('%(asctime)s %(message)s', '%Y-%m-%d %H:%M:%S'))
        handlers.append(fh)
        early.setTarget(fh)
        early.flush()
        _logger.removeHandler(early)
        _logger.addHandler(fh)

    try:
        with _quiet_timm_skips(), logging_redirect_tqdm([_logger]) if sys.stderr.isatty() else contextlib.nullcontext():
            yield attach
    finally:
        for h in handlers:
            _logger.removeHandler(h)
            h.close()
        _logger.setLevel(old_level)
        _logger.propagate = old_prop


@contextlib.contextmanager
def _quiet_timm_skips() -> Iterator[None]:
    """Silence timm's own "Skipped sample" warnings: SkipUnreadable records and reports skips itself."""
    timm_ds = logging.getLogger('timm.data.dataset')
    old = timm_ds.level
    timm_ds.setLevel(logging.ERROR)
    try:
        yield
    finally:
        timm_ds.setLevel(old)


def _init_device(args: argparse.Namespace) -> torch.device:
    from timm import utils
    if args.device is None:
        args.device = 'cuda' if torch.cuda.is_available() else 'cpu'
    towers_on_gpus = model_parallel_spec(args) is not None and str(args.device).startswith('cuda')
    try:
        with _collective_timeout(args.dist_timeout):
            if not towers_on_gpus:
                return utils.init_distributed_device(args)
            # --model-parallel picks this process's GPUs; timm would make cuda:LOCAL_RANK current (and create a
            # CUDA context on a GPU another process owns), so it sets up the process group only
            requested, args.device = args.device, 'cpu'
            if utils.is_distributed_env():
                args.dist_backend = args.dist_backend or 'nccl'
            try:
                utils.init_distributed_device(args)
            finally:
                args.device = requested
            return torch.device(requested)
    except (AssertionError, RuntimeError, ValueError) as e:
        msg = " ".join(str(e).split()) or "not available"
        if utils.is_distributed_env() and not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            raise UserError(f'cannot join the distributed job (--dist-backend {args.dist_backend or "default"}, '
                            f'--device {args.device}, --dist-timeout {args.dist_timeout:g} s): {msg[:300]}') from None
        raise UserError(f'--device {args.device}: {msg}') from None


def _build_scheduler(args: argparse.Namespace, optimizer: torch.optim.Optimizer, updates_per_epoch: int,
                     has_eval: bool) -> Tuple[Any, int]:
    from timm.scheduler import create_scheduler_v2, scheduler_kwargs

    from .schedule import PLATEAU_METRICS, PlateauDecay
    if args.sched == 'plateau':
        if args.sched_on_updates:
            raise UserError('--sched plateau steps per epoch; leave out --sched-on-updates')
        metric = _plateau_metric(args, has_eval)
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


def _plateau_metric(args: argparse.Namespace, has_eval: bool) -> str:
    if args.plateau_metric:
        return args.plateau_metric
    return 'val_' + args.eval_metric if has_eval and args.eval_metric != 'top5' else 'train_top1'


def _metric_value(name: str, train_m: Dict[str, float], eval_m: Optional[Dict[str, float]]) -> Optional[float]:
    split, key = name.split('_', 1)
    src = train_m if split == 'train' else eval_m
    if not src or key not in src or math.isnan(src[key]):
        return None
    return float(src[key])


def _build_pca(args: argparse.Namespace, data_config: Dict[str, Any]) -> Optional[Callable]:
    if not args.pca_lighting:
        return None
    try:
        augment = importlib.import_module('timm_alexnet_split.augment')
    except ImportError as e:
        raise UserError(f'--pca-lighting needs timm_alexnet_split.augment, which is missing ({e})') from None
    try:
        eigval, eigvec = augment.load_eig(args.pca_eig)
    except UserError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f'--pca-eig {args.pca_eig}: {e}') from None
    return augment.BatchPCALighting(std=args.pca_lighting, eigval=eigval, eigvec=eigvec,
                                    norm_std=tuple(data_config['std']))


def _loss_fns(args: argparse.Namespace, device: torch.device) -> Tuple[nn.Module, nn.Module]:
    from timm.loss import BinaryCrossEntropy, LabelSmoothingCrossEntropy
    if args.bce_loss:
        train = BinaryCrossEntropy(smoothing=args.smoothing, target_threshold=args.bce_target_thresh,
                                   sum_classes=args.bce_sum, pos_weight=args.bce_pos_weight)
    elif args.smoothing:
        train = LabelSmoothingCrossEntropy(smoothing=args.smoothing)
    else:
        train = nn.CrossEntropyLoss()
    return train.to(device), nn.CrossEntropyLoss().to(device)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``timm-alexnet-split train``: returns 0, or 128 + signal number after SIGINT/SIGTERM (checkpoint saved)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    import torch.distributed as dist
    failed = False
    with _logging_to() as attach_log, StopRequest() as stop:
        try:
            return _run(argv, attach_log, stop)
        except _PeerLost as e:
            failed = True
            _logger.error(e.message)
            return 1
        except RuntimeError as e:
            if not _is_comm_failure(e):
                raise
            failed = True
            _logger.error(_peer_lost_message(e))
            return 1
        finally:
            if dist.is_available() and dist.is_initialized() and not failed:
                dist.destroy_process_group()


def _run(argv: List[str], attach_log: Callable[[Path], None], stop: StopRequest) -> int:
    from timm import utils
    from timm.data import resolve_data_config
    from timm.models import safe_model_name
    from timm.optim import create_optimizer_v2, optimizer_kwargs

    args = parse_args(argv)
    ckpt = None
    if args.resume:
        ckpt = read_training_checkpoint(Path(args.resume))
        args = parse_args(argv, resume_args=ckpt.get('args') if isinstance(ckpt.get('args'), dict) else None)
    for mod in args.device_modules or []:
        try:
            importlib.import_module(mod)
        except ImportError as e:
            raise UserError(f'--device-modules {mod}: {e}') from None
    args.prefetcher = not args.no_prefetcher
    _model_parallel_kind(args)
    device = _init_device(args)
    check_args(args)
    mp_devices = model_parallel_devices(args)
    if mp_devices is not None:  # inputs, the head, loss and metrics on the first of this process's devices
        device = mp_devices[0]
        if device.type == 'cuda':
            torch.cuda.set_device(device)
        args.device = str(device)
    primary = utils.is_primary(args)
    if not primary:
        _logger.setLevel(logging.WARNING)  # one process tells the story
    model_dtype = getattr(torch, args.model_dtype) if args.model_dtype else None
    amp_autocast: Callable = contextlib.nullcontext
    loss_scaler = None
    if args.amp:
        amp_dtype = torch.bfloat16 if args.amp_dtype == 'bfloat16' else torch.float16
        amp_autocast = partial(torch.autocast, device_type=device.type, dtype=amp_dtype)
        if device.type == 'cuda' and amp_dtype == torch.float16:
            loss_scaler = utils.NativeScaler(device=device.type)
    utils.random_seed(args.seed, args.rank)

    train_ds, eval_ds, class_names = build_datasets(args)
    if args.num_classes is None and class_names:
        args.num_classes = len(class_names)
        _logger.info(f'num_classes {args.num_classes} (the training set\'s classes)')
    model = create_train_model(args, device, model_dtype)
    if args.num_classes is None:
        args.num_classes = getattr(model, 'num_classes', None)
    if class_names and args.num_classes is not None and len(class_names) > args.num_classes:
        raise UserError(f'the training data has {len(class_names)} classes but the model {args.num_classes} outputs '
                        '(--num-classes)')
    data_config = resolve_data_config(vars(args), model=model, verbose=False)
    from .model import MIN_INPUT_SIZE, AlexNetSplit
    if isinstance(model, AlexNetSplit) and min(data_config['input_size'][1:]) < MIN_INPUT_SIZE:
        raise UserError(f'input size {tuple(data_config["input_size"])} is too small: the split AlexNet needs at least '
                        f'{MIN_INPUT_SIZE} pixels (--img-size)')
    if args.grad_checkpointing:
        model.set_grad_checkpointing(enable=True)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)

    if not isinstance(train_ds, torch.utils.data.IterableDataset):
        train_ds = SkipUnreadable(train_ds, args.train_split)
    if eval_ds is not None and not isinstance(eval_ds, torch.utils.data.IterableDataset):
        eval_ds = SkipUnreadable(eval_ds, args.val_split, substitute=False)
    loader_train, loader_eval = build_loaders(args, data_config, device, train_ds, eval_ds, model_dtype or torch.float32)
    _check_batches(loader_train, train_ds, args)
    pca = _build_pca(args, data_config) if not args.no_aug else None

    if not args.lr:
        global_batch = args.batch_size * args.world_size * args.grad_accum_steps
        ratio = global_batch / args.lr_base_size
        if not args.lr_base_scale:
            args.lr_base_scale = 'sqrt' if any(o in args.opt.lower() for o in ('ada', 'lamb')) else 'linear'
        args.lr = args.lr_base * (ratio ** 0.5 if args.lr_base_scale == 'sqrt' else ratio)
        _logger.info(f'lr {args.lr:g} from --lr-base {args.lr_base} for a global batch of {global_batch}')
    train_loss_fn, eval_loss_fn = _loss_fns(args, device)
    try:
        optimizer = create_optimizer_v2(model, **optimizer_kwargs(cfg=args), **args.opt_kwargs)
    except (AssertionError, ValueError, TypeError) as e:
        raise UserError(f'--opt {args.opt}: {e}') from None

    start_epoch = 0
    if ckpt is not None:
        load_into(model, ckpt['state_dict'], f'{args.model} with these options', args.resume)
        if not args.no_resume_opt and ckpt.get('optimizer') is not None:
            optimizer.load_state_dict(ckpt['optimizer'])
            if loss_scaler is not None and loss_scaler.state_dict_key in ckpt:
                loss_scaler.load_state_dict(ckpt[loss_scaler.state_dict_key])
        start_epoch = int(ckpt['epoch']) + (1 if ckpt.get('complete', True) else 0)
        _logger.info(f'resumed from {args.resume}: epoch {start_epoch} next')

    train_model: nn.Module = model
    if args.torchcompile:
        train_model = torch.compile(model, backend=args.torchcompile, mode=args.torchcompile_mode)
    if args.distributed:
        from torch.nn.parallel import DistributedDataParallel
        ddp_kwargs = {'broadcast_buffers': False} if args.no_ddp_bb else {}
        # device_ids only for a model on one GPU: None on CPU (gloo) and for towers on several devices
        one_gpu = device.type == 'cuda' and mp_devices is None
        train_model = DistributedDataParallel(train_model, device_ids=[device] if one_gpu else None, **ddp_kwargs)
    eval_model = train_model.module if args.distributed else train_model

    updates_per_epoch = (len(loader_train) + args.grad_accum_steps - 1) // args.grad_accum_steps
    lr_scheduler, num_epochs = _build_scheduler(args, optimizer, updates_per_epoch, loader_eval is not None)
    _restore_scheduler(lr_scheduler, ckpt)
    if args.start_epoch is not None:
        start_epoch = args.start_epoch
    if lr_scheduler is not None and start_epoch > 0:
        if args.sched_on_updates:
            lr_scheduler.step_update(start_epoch * updates_per_epoch)
        else:
            lr_scheduler.step(start_epoch)
    plateau_metric = _plateau_metric(args, loader_eval is not None) if args.sched == 'plateau' else None
    if ckpt is not None and start_epoch >= num_epochs:
        _logger.info(f'{args.resume}: the run is complete (epochs 0..{start_epoch - 1} trained, the schedule has '
                     f'{num_epochs}); nothing to do. To train on, resume with --epochs N, N > {start_epoch}')
        return 0

    # the run folder: made once everything that can refuse the options has accepted them
    if ckpt is not None:
        run_dir = Path(args.resume).resolve().parent
    else:
        name = args.experiment or '-'.join([datetime.now().strftime('%Y%m%d-%H%M%S'), safe_model_name(args.model),
                                            str(data_config['input_size'][-1])])
        run_dir = _new_run_dir(Path(args.output or './output/train'), name) if primary else None
        if args.distributed:  # rank 0 names (and makes) the folder; the others learn its name
            run_dir = Path(_broadcast_from_primary(str(run_dir) if primary else None))
        assert run_dir is not None
    if primary:
        attach_log(run_dir)
        placed = f' (towers on {", ".join(str(t.device) for t in model.towers)})' if mp_devices is not None else ''
        world = f'; {args.world_size} processes ({args.dist_backend or ("nccl" if device.type == "cuda" else "gloo")})' \
            if args.distributed else ''
        _logger.info(f'run folder {run_dir}; device {device}{placed}{world}; model {args.model} '
                     f'({sum(p.numel() for p in model.parameters()):,} parameters)')
    # every process records its unreadable images in the run folder when it can see it (same machine or shared disk)
    skip_log = run_dir / 'skipped_images.txt' if primary or run_dir.is_dir() else None
    for ds in (train_ds, eval_ds):
        if isinstance(ds, SkipUnreadable):
            ds.log_path = str(skip_log) if skip_log else None

    eval_metric = args.eval_metric  # without validation there is no metric: no model_best, no ranked history
    saver = RunSaver(run_dir, decreasing=eval_metric == 'loss', max_history=args.checkpoint_hist,
                     safetensors=args.safetensors)
    if ckpt is not None and isinstance(ckpt.get('saver'), dict):
        saver.load_state_dict(ckpt['saver'])

    conv1_dir = run_dir / 'conv1'
    save_conv1 = args.save_conv1
    if primary:
        resolved = args_dict(args)
        yaml_name = 'args.yaml' if ckpt is None else f'args-resume-epoch{start_epoch}.yaml'
        (run_dir / yaml_name).write_text(yaml.safe_dump(resolved, default_flow_style=False, sort_keys=False))
        if class_names:
            (run_dir / 'class_map.txt').write_text(''.join(f'{c}\n' for c in class_names), encoding='utf-8')
        if save_conv1:
            try:
                k, per_tower = conv1_kernels(model)
            except (ValueError, AttributeError) as e:
                _logger.warning(f'conv1 snapshots off: {e}')
                save_conv1 = False
            else:
                conv1_dir.mkdir(exist_ok=True)
                towers = {'num_towers': len(per_tower), 'kernels_per_tower': per_tower,
                          'channel_order': 'RGB' if k.shape[1] == 3 else 'L'}
                (conv1_dir / 'towers.json').write_text(json.dumps(towers) + '\n')
                if start_epoch == 0:
                    _save_npy(conv1_dir / 'epoch_0000.npy', k)
        _trim_summary(run_dir / 'summary.csv', start_epoch)

    def state(epoch: int, metric: Optional[float], complete: bool = True, batch_idx: Optional[int] = None,
              rng_ranks: Optional[List[Any]] = None) -> Dict[str, Any]:
        s: Dict[str, Any] = {
            'epoch': epoch, 'arch': args.model, 'version': 2, 'complete': complete,
            'state_dict': utils.get_state_dict(train_model, utils.unwrap_model),
            'optimizer': optimizer.state_dict(),
            'scheduler': _plain(lr_scheduler.state_dict()) if lr_scheduler is not None else None,
            'args': args_dict(args), 'data_config': _plain(dict(data_config)), 'class_names': class_names,
            'metric': metric, 'rng': rng_state(), 'world_size': args.world_size,
        }
        if rng_ranks is not None:
            s['rng_ranks'] = rng_ranks  # every process's generators, for an exact resume with as many processes
        if batch_idx is not None:
            s['batch_idx'] = batch_idx
        if loss_scaler is not None:
            s[loss_scaler.state_dict_key] = loss_scaler.state_dict()
        return s

    def weights_meta(epoch: int) -> Dict[str, str]:
        return {'format': 'pt', 'model': args.model, 'num_classes': str(args.num_classes), 'epoch': str(epoch),
                'model_kwargs': json.dumps(_plain(args.model_kwargs)), 'class_names': json.dumps(class_names or []),
                'data_config': json.dumps(_plain(dict(data_config))),
                'gp': json.dumps(getattr(args, 'gp', None)), 'in_chans': json.dumps(getattr(args, 'in_chans', None))}

    def save_recovery(epoch: int, batch_idx: int) -> Path:
        return saver.save_recovery(state(epoch, None, complete=False, batch_idx=batch_idx))

    if ckpt is not None and ckpt.get('complete', True):  # last: everything above may draw random numbers
        _restore_rng(ckpt, args, start_epoch)
    ckpt = None  # free the loaded tensors

    _logger.info(f'training epochs {start_epoch}..{num_epochs - 1}; {len(loader_train)} batches of {args.batch_size}; '
                 f'lr {args.lr:g} ({args.sched}{", watching " + plateau_metric if plateau_metric else ""})')
    skipped_seen = _skip_counts(skip_log)[0]
    epoch = start_epoch
    try:
        for epoch in range(start_epoch, num_epochs):
            t0 = time.perf_counter()
            if hasattr(loader_train.sampler, 'set_epoch'):  # distributed: a new shuffle per epoch, seeded by --seed
                if hasattr(loader_train.sampler, 'seed'):
                    loader_train.sampler.seed = args.seed
                loader_train.sampler.set_epoch(epoch)
            train_m = train_one_epoch(
                epoch, train_model, loader_train, optimizer, train_loss_fn, args, device, lr_scheduler=lr_scheduler,
                amp_autocast=amp_autocast, loss_scaler=loss_scaler, model_dtype=model_dtype, pca=pca, stop=stop,
                on_recovery=save_recovery if primary else None, run_dir=run_dir if primary else None)
            if args.distributed and args.dist_bn in ('broadcast', 'reduce'):
                utils.distribute_bn(train_model, args.world_size, args.dist_bn == 'reduce')
            eval_m = None
            if loader_eval is not None:
                eval_m = OrderedDict([('loss', math.nan), ('top1', math.nan), ('top5', math.nan)])
                if (epoch + 1) % args.val_interval == 0 or epoch + 1 == num_epochs:
                    try:
                        eval_m = evaluate(eval_model, loader_eval, eval_loss_fn, device, prefetcher=args.prefetcher,
                                          ten_crop=args.ten_crop, data_config=data_config,
                                          channels_last=args.channels_last, amp_autocast=amp_autocast,
                                          model_dtype=model_dtype, distributed=args.distributed,
                                          world_size=args.world_size, stop=stop, desc=f'eval {epoch}')
                    except _Interrupted:
                        _logger.warning('validation interrupted: this epoch is saved without validation metrics')
                    if eval_m.pop('images', None) == 0 and primary:
                        _logger.warning(f'WARNING: validation after epoch {epoch} evaluated no image (all unreadable?): '
                                        'no validation metrics this epoch')
            lr_used = train_m.pop('lr')
            if lr_used <= 0 and primary:
                _logger.warning(f'WARNING: the learning rate was 0 throughout epoch {epoch} (--sched {args.sched}, '
                                f'--epochs {args.epochs}, --min-lr {args.min_lr}): its updates did not move the weights')
            metric = _metric_value('val_' + eval_metric, train_m, eval_m) if eval_m is not None else None
            if lr_scheduler is not None:
                watched = _metric_value(plateau_metric, train_m, eval_m) if plateau_metric else metric
                lr_scheduler.step(epoch + 1, watched)
            skipped_now = _skip_counts(skip_log)[0]
            replicas, rng_ranks = '', None
            if args.distributed:  # every process's generators for the checkpoint, and a check that the weights agree
                peers = _gather_objects({'rng': rng_state(), 'digest': weights_digest(utils.get_state_dict(train_model))},
                                        args.world_size)
                rng_ranks = [p['rng'] for p in peers]
                digests = [p['digest'] for p in peers]
                if len(set(digests)) == 1:
                    replicas = f' | weights identical on {args.world_size} processes (sha256 {digests[0][:12]})'
                elif primary:
                    odd = [r for r, d in enumerate(digests) if d != digests[0]]
                    _logger.warning(f'WARNING: after epoch {epoch} the weights of process(es) {odd} differ from process '
                                    '0\'s: the replicas have diverged (checkpoints hold process 0\'s weights)')
            if primary:
                summary = run_dir / 'summary.csv'
                utils.update_summary(epoch, train_m, eval_m, filename=str(summary), lr=lr_used,
                                     write_header=not summary.is_file() or summary.stat().st_size == 0)
                is_best = saver.save(epoch, metric, state(epoch, metric, rng_ranks=rng_ranks),
                                     utils.get_state_dict(train_model), weights_meta(epoch))
                if save_conv1:
                    _save_npy(conv1_dir / f'epoch_{epoch + 1:04d}.npy', conv1_kernels(train_model)[0])
                plot_curves(run_dir, f'{args.model}: {run_dir.name}')
                ev = (f'val loss {eval_m["loss"]:.4f} top-1 {eval_m["top1"]:.2f} top-5 {eval_m["top5"]:.2f}'
                      if eval_m is not None else 'no validation')
                _logger.info(f'epoch {epoch}: train loss {train_m["loss"]:.4f} top-1 {train_m["top1"]:.2f} | {ev} | '
                             f'lr {lr_used:.3g} | {time.perf_counter() - t0:.1f} s'
                             + (' | best' if is_best else '') + replicas)
                if skipped_now > skipped_seen:
                    _logger.warning(f'skipped {skipped_now - skipped_seen} unreadable image(s) this epoch '
                                    f'({_skip_counts(skip_log)[1]} distinct; listed in {skip_log})')
            skipped_seen = skipped_now
            sig = _agreed_signal(stop, args, device)
            if sig is not None:
                stop.signum = stop.signum or sig
                stop.check()
    except _Interrupted as e:
        name = signal.Signals(e.signum).name
        batch = stop.last_batch
        if not primary:  # process 0 saves and tells; all processes stopped after the same batch
            _logger.info(f'process {args.rank}: stopped by {name}')
        elif batch is not None:
            path = save_recovery(epoch, batch)
            exact = (f' or --resume {saver.last} (exact, from the end of the last full epoch)'
                     if saver.last.is_file() else '')
            _logger.warning(f'stopped by {name} in epoch {epoch} after batch {batch + 1}/{len(loader_train)}: saved '
                            f'{path}. Resume with --resume {path} (repeats epoch {epoch} from these weights){exact}')
        elif not saver.last.is_file():
            _logger.warning(f'stopped by {name} in epoch {epoch} before any checkpoint was written: nothing to resume')
        else:
            _logger.warning(f'stopped by {name} after epoch {epoch}: {saver.last} is up to date; resume with '
                            f'--resume {saver.last}')
        return 128 + e.signum
    except _Diverged as e:
        good = f'the last good checkpoint {saver.last} is intact' if saver.last.is_file() else 'no checkpoint was written'
        raise UserError(f'loss is {e.value} at epoch {e.epoch}, batch {e.batch}: training diverged and stopped; {good} '
                        f'(lower --lr, or add --warmup-epochs)') from None
    except RuntimeError as e:
        if _UNREADABLE in str(e):
            raise UserError(str(e).split('Original Traceback')[0].strip().splitlines()[-1]) from None
        if args.distributed and _is_comm_failure(e):
            raise _PeerLost(_peer_lost_message(e, args.dist_timeout, saver.last)) from None
        raise
    if saver.best_metric is not None:
        _logger.info(f'best {eval_metric} {saver.best_metric:.4f} at epoch {saver.best_epoch}: {saver.best}')
    total, distinct = _skip_counts(skip_log)
    if total and primary:
        _logger.warning(f'{distinct} unreadable image(s) skipped {total} time(s) in all: see {skip_log}')
    return 0


def _restore_scheduler(lr_scheduler: Any, ckpt: Optional[Dict[str, Any]]) -> None:
    """On resume, the plateau schedule gets back what it observed (best metric, counters, decays). timm's schedules
    are functions of the epoch and the options, so they are built from the options, as timm's train.py does: a resume
    with a new --epochs follows the new length (loading their saved state would keep the old one, e.g. a finished
    cosine at its minimum)."""
    from .schedule import PlateauDecay
    if ckpt is not None and isinstance(lr_scheduler, PlateauDecay) and isinstance(ckpt.get('scheduler'), dict):
        lr_scheduler.load_state_dict(ckpt['scheduler'])


def _check_batches(loader: Any, dataset: Any, args: argparse.Namespace) -> None:
    """Refuse a training loader with no batch: the training loader drops the last partial batch, so a set smaller
    than one batch would train nothing."""
    try:
        n = len(loader)
    except TypeError:  # an iterable dataset of unknown length: train_one_epoch refuses an empty epoch
        return
    if n == 0:
        size = len(dataset) if hasattr(dataset, '__len__') else 'too few'
        per = f' per process ({args.world_size} processes)' if args.world_size > 1 else ''
        raise UserError(f'the training split has {size} images, fewer than one batch of {args.batch_size}{per}, and '
                        f'training drops the last partial batch: nothing would be trained; lower --batch-size')


def _restore_rng(ckpt: Dict[str, Any], args: argparse.Namespace, start_epoch: int) -> None:
    """Every generator as the checkpoint left it: per process when it was written by as many processes."""
    from timm import utils
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


# ---------------------------------------------------------------------------------------------------------------------
# validate
# ---------------------------------------------------------------------------------------------------------------------
def validate_main(argv: Optional[Sequence[str]] = None) -> int:
    """``timm-alexnet-split validate``: top-1, top-5 and loss of a checkpoint on a dataset split, as JSON on stdout."""
    import timm
    from timm.data import resolve_data_config
    from timm.utils import ParseKwargs
    parser = argparse.ArgumentParser(
        prog='timm-alexnet-split validate', allow_abbrev=False,
        description='Evaluate a checkpoint (a training run\'s folder, .pth.tar or .safetensors, timm train.py\'s checkpoints, '
                    'or a plain state_dict / .safetensors with --model) on an image folder split: top-1 and top-5 '
                    'accuracy (%) and cross-entropy, on the centre crop or, with --ten-crop, on the paper\'s ten crops '
                    '(corners, centre, mirrors; softmax averaged). Prints one JSON object on stdout.',
        epilog='example: timm-alexnet-split validate --checkpoint output/train/demo/model_best.pth.tar '
               '--data-dir data/catsdogs --ten-crop')
    parser.add_argument('--checkpoint', required=True, metavar='PATH',
                        help='.pth.tar from training, .pth state_dict, .safetensors, or a run folder (its best checkpoint)')
    parser.add_argument('--use-ema', action='store_true',
                        help='evaluate the EMA weights of a timm training checkpoint (state_dict_ema), as timm validate.py')
    parser.add_argument('--data-dir', metavar='DIR', help='dataset root (the split is looked up under it)')
    parser.add_argument('--demo-data', action='store_true', help='an embedded dataset (generated on first use)')
    parser.add_argument('--demo-dataset', default='demo', choices=('demo', 'demo-hard', 'leaves'), metavar='NAME',
                        help='with --demo-data: demo (default), demo-hard or leaves')
    parser.add_argument('--dataset', default='', metavar='NAME', help='"" (folders) or torch/NAME, as timm')
    parser.add_argument('--split', default='validation', help='split to evaluate (default: validation)')
    parser.add_argument('--ten-crop', action='store_true', help='ten crops, softmax averaged (the paper\'s test)')
    parser.add_argument('-b', '--batch-size', type=int, default=64, help='images per batch (default 64)')
    parser.add_argument('-j', '--workers', type=int, default=2, help='loader processes (default 2)')
    parser.add_argument('--device', default=None, help='default: cuda if available, else cpu')
    parser.add_argument('--model', default=None, help='model name (default: the one the checkpoint names)')
    parser.add_argument('--num-classes', type=int, default=None, help='classes (default: the checkpoint\'s)')
    parser.add_argument('--model-kwargs', nargs='*', default=None, action=ParseKwargs, help='model options')
    parser.add_argument('--img-size', type=int, default=None, help='input size (default: as trained, else the model\'s)')
    parser.add_argument('--crop-pct', type=float, default=None, help='centre-crop fraction (default: as trained)')
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.batch_size < 1 or args.workers < 0:
        raise UserError('--batch-size must be >= 1 and --workers >= 0')
    device = torch.device(args.device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise UserError(f'--device {args.device}: no CUDA device here')

    from .checkpoint import find_run_checkpoint, load_into, read_checkpoint, state_dict_kwargs
    path = Path(args.checkpoint)
    if path.is_dir():
        path = find_run_checkpoint(path)
    # weights_only=True; this trainer's checkpoints, timm train.py's, plain state_dicts and safetensors files
    ckpt = read_checkpoint(path, use_ema=args.use_ema)
    if args.use_ema and 'ema' not in ckpt.source:
        raise UserError(f'--use-ema: {path} holds no EMA weights (state_dict_ema / model_ema)')
    info = ckpt.info
    model_name = args.model or info.model
    if not model_name:
        raise UserError(f'{path} does not name its model: give --model')
    kwargs = {**info.model_kwargs, **(args.model_kwargs or {})}  # the command line's options over the checkpoint's
    if args.num_classes is not None:
        kwargs['num_classes'] = args.num_classes
    elif info.num_classes is not None:
        kwargs.setdefault('num_classes', info.num_classes)
    for key, value in state_dict_kwargs(ckpt.state_dict).items():  # what the shapes fix (fc8, fc6, conv1)
        kwargs.setdefault(key, value)
    try:
        model = timm.create_model(model_name, **kwargs)
    except (RuntimeError, TypeError, ValueError, KeyError) as e:
        raise UserError(f'cannot create {model_name}: {" ".join(str(e).split())[:200]}') from None
    load_into(model, ckpt.state_dict, model_name, str(path))
    class_names = info.class_names
    model.to(device).eval()
    data_config = dict(resolve_data_config(info.data_args(), model=model))
    chans = getattr(model, 'in_chans', None)
    if chans and data_config['input_size'][0] != chans:  # a model of other input channels than its default cfg's
        data_config['input_size'] = (chans, *data_config['input_size'][1:])
    if args.img_size:
        data_config['input_size'] = (data_config['input_size'][0], args.img_size, args.img_size)
    if args.crop_pct:
        data_config['crop_pct'] = args.crop_pct
    from .model import MIN_INPUT_SIZE, AlexNetSplit
    if isinstance(model, AlexNetSplit) and min(data_config['input_size'][1:]) < MIN_INPUT_SIZE:
        raise UserError(f'--img-size must be at least {MIN_INPUT_SIZE} for the split AlexNet')

    vargs = argparse.Namespace(
        data_dir=args.data_dir, data=None, dataset=args.dataset, demo_data=args.demo_data, class_map='',
        in_chans=None, input_size=data_config['input_size'], input_img_mode=None, input_key=None, target_key=None,
        val_num_samples=None, dataset_download=False, dataset_trust_remote_code=False, batch_size=args.batch_size,
        val_split=args.split)
    if args.demo_dataset != 'demo' and not args.demo_data:
        raise UserError(f'--demo-dataset {args.demo_dataset} needs --demo-data')
    if vargs.demo_data:
        data = importlib.import_module('timm_alexnet_split.data')
        vargs.data_dir = str(data.ensure_dataset(args.demo_dataset, args.data_dir or None))
    if not vargs.data_dir and _folder_like(args.dataset):
        raise UserError('give --data-dir DIR (or --dataset torch/NAME, or --demo-data)')
    if vargs.data_dir and _folder_like(args.dataset) and not os.path.exists(vargs.data_dir):
        raise UserError(f'data folder {vargs.data_dir} not found')
    if vargs.data_dir and _image_folder(args.dataset) and os.path.isdir(vargs.data_dir):
        from .splits import find_split
        if find_split(Path(vargs.data_dir), args.split) is None:
            print(f'note: {vargs.data_dir} has no split folders: evaluating every image in it', file=sys.stderr)
    ds = _create_dataset(vargs, args.split, False, None, 'evaluation')
    cmap = {n: i for i, n in enumerate(class_names)} if class_names else None
    if cmap:
        ds = _align_classes(vargs, ds, class_names, lambda m: _create_dataset(vargs, args.split, False, m, 'evaluation'))
    import tempfile
    with tempfile.TemporaryDirectory() as tmp, _quiet_timm_skips():
        skip_log = Path(tmp) / 'skipped.txt'
        ds = SkipUnreadable(ds, args.split, str(skip_log), substitute=False)
        loader = eval_loader(ds, data_config, args.batch_size, args.workers, device, ten_crop=args.ten_crop)
        try:
            m = evaluate(model, loader, nn.CrossEntropyLoss().to(device), device, ten_crop=args.ten_crop,
                         data_config=data_config, desc='validate')
        except RuntimeError as e:
            if _UNREADABLE in str(e):
                raise UserError(str(e).split('Original Traceback')[0].strip().splitlines()[-1]) from None
            raise
        skipped = _skip_counts(skip_log)[1]
    if not m['images']:
        raise UserError(f'no image of the {args.split!r} split could be evaluated'
                        + (f' ({skipped} unreadable)' if skipped else ''))
    result = {'checkpoint': str(path), 'weights': ckpt.source, 'model': model_name, 'split': args.split,
              'images': m['images'],
              'crop': 'ten-crop' if args.ten_crop else 'center', 'top1': round(m['top1'], 4),
              'top5': round(m['top5'], 4), 'loss': round(m['loss'], 6), 'skipped_unreadable': skipped}
    print(json.dumps(result))
    if skipped:
        print(f'warning: {skipped} unreadable image(s) skipped', file=sys.stderr)
    return 0


if __name__ == '__main__':
    from .cli import main as _cli_main
    sys.exit(_cli_main(['train', *sys.argv[1:]]))
