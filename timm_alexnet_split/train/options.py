"""The trainer's options: timm train.py's names and defaults, ours, the refused ones, config files."""
from __future__ import annotations

import argparse
import difflib
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import torch
import yaml
from timm.utils import ParseKwargs as _TimmParseKwargs

from ..errors import CommandParser, UserError
from ..schedule import PLATEAU_METRICS

PROG = 'timm-alexnet-split train'


class ParseKwargs(_TimmParseKwargs):
    """timm's KEY=VALUE option (--model-kwargs, --opt-kwargs), with a word that is not KEY=VALUE an argparse error
    (one line through errors.CommandParser) instead of timm's ValueError traceback."""

    def __call__(self, parser, namespace, values, option_string=None):
        bad = [v for v in values or [] if v and '=' not in v]
        if bad:
            raise argparse.ArgumentError(self, f'expected KEY=VALUE words, got {bad[0]!r}')
        super().__call__(parser, namespace, values, option_string)


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
    'decode': 'image decoding: cpu (PIL, timm), draft (PIL draft mode: folders), gpu (nvjpeg batches: wds shards), '
              'device (the gpu path on the training device, whatever it is: checks it on a CPU)',
    'synthetic_input': "train every step on the first training batch, kept on the device: the step's speed without "
                       "the input path (bench --train-input's baseline); the run's metrics mean nothing",
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


def _dataset_options(p: argparse.ArgumentParser) -> None:
    """The group 'dataset (timm train.py)'."""
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


def _model_options(p: argparse.ArgumentParser) -> None:
    """The group 'model (timm train.py)'."""
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


def _device_options(p: argparse.ArgumentParser) -> None:
    """The group 'device (timm train.py)'."""
    g = p.add_argument_group('device (timm train.py)')
    g.add_argument('--device', default=None, help='cuda, cuda:1, cpu ... (default: cuda if available, else cpu)')
    g.add_argument('--amp', action='store_true', default=False, help='mixed precision')
    g.add_argument('--amp-dtype', default='float16', choices=('float16', 'bfloat16'), help='AMP dtype')
    g.add_argument('--model-dtype', default=None, choices=('float32', 'float16', 'bfloat16'), help='model dtype (no AMP)')
    g.add_argument('--no-ddp-bb', action='store_true', default=False, help='DDP without broadcast buffers')
    g.add_argument('--synchronize-step', action='store_true', default=False, help='synchronize the device every step')
    g.add_argument('--local_rank', default=0, type=int, help=argparse.SUPPRESS)
    g.add_argument('--device-modules', default=None, type=str, nargs='+', help='modules to import first')


def _optimizer_options(p: argparse.ArgumentParser) -> None:
    """The group 'optimizer (timm train.py)'."""
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


def _schedule_options(p: argparse.ArgumentParser) -> None:
    """The group 'learning-rate schedule (timm train.py)'."""
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


def _augmentation_options(p: argparse.ArgumentParser) -> None:
    """The group 'augmentation and regularisation (timm train.py)'."""
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


def _misc_options(p: argparse.ArgumentParser) -> None:
    """The group 'miscellaneous (timm train.py)'."""
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


def _own_options(p: argparse.ArgumentParser) -> None:
    """The group 'timm-alexnet-split options (ours; upstream train.py ignores these keys)'."""
    g = p.add_argument_group('timm-alexnet-split options (ours; upstream train.py ignores these keys)')
    g.add_argument('--pca-lighting', type=float, default=0.0, metavar='STD', help=OWN_OPTIONS['pca_lighting'])
    g.add_argument('--pca-eig', default='imagenet', metavar='imagenet|FILE', help=OWN_OPTIONS['pca_eig'])
    g.add_argument('--paper-crop', action='store_true', default=False, help=OWN_OPTIONS['paper_crop'])
    g.add_argument('--ten-crop', action='store_true', default=False, help=OWN_OPTIONS['ten_crop'])
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
    g.add_argument('--decode', default='cpu', choices=('cpu', 'draft', 'gpu', 'device'), help=OWN_OPTIONS['decode'])
    g.add_argument('--synthetic-input', action='store_true', default=False, help=OWN_OPTIONS['synthetic_input'])


_GROUPS = (_dataset_options, _model_options, _device_options, _optimizer_options, _schedule_options,
           _augmentation_options, _misc_options, _own_options)


def build_parser() -> argparse.ArgumentParser:
    """The ``train`` parser: timm train.py's names, flags and defaults for what is supported, then ours (one
    function per option group, ``_GROUPS``)."""
    p = CommandParser(
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
    for add_group in _GROUPS:   # in this order in --help
        add_group(p)
    return p


def option_dests(parser: argparse.ArgumentParser) -> Dict[str, argparse.Action]:
    return {a.dest: a for a in parser._actions if a.dest not in ('help', 'config')}


def coerce_config_value(action: argparse.Action, key: str, value: Any, where: str) -> Any:
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
    if action.nargs in ('+', '*') or isinstance(action.nargs, int):
        seq = value if isinstance(value, (list, tuple)) else [value]
        if isinstance(action.nargs, int) and len(seq) != action.nargs:
            raise bad(f'expected {action.nargs} values')
        if action.nargs == '+' and not seq:
            raise bad('expected at least one value')
        out = [_coerce_one(action, v, bad) for v in seq]
    else:
        if isinstance(value, (list, dict)):
            raise bad('expected a single value')
        out = _coerce_one(action, value, bad)
    if action.choices is not None:
        for v in (out if isinstance(out, list) else [out]):
            if v not in action.choices:
                raise bad(f'expected one of {", ".join(map(str, action.choices))}')
    return out


def _coerce_one(action: argparse.Action, v: Any, bad: Callable[[str], UserError]) -> Any:
    """One config value converted to the option's type (``bad(what)``: the error to raise)."""
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


def _check_unsupported(dest: str, value: Any, where: str) -> None:
    default, why = UNSUPPORTED[dest]
    if value != default and not (isinstance(value, (list, tuple)) and list(value) == default):
        raise UserError(f'{where}: {dest} = {value!r} is not supported by this trainer: {why}')


def _config_defaults(parser: argparse.ArgumentParser, cfg: Dict[str, Any], where: str) -> Dict[str, Any]:
    """Validate a config mapping (dest name -> value) against the parser; refuse unknown and unsupported keys."""
    actions = option_dests(parser)
    out = {}
    for key, value in cfg.items():
        key = str(key)
        if key in actions:
            out[key] = coerce_config_value(actions[key], key, value, where)
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
        close = _suggest(name, list(option_dests(build_parser())))
        hint = f' (did you mean --{close.replace("_", "-")}?)' if close else ''
        raise UserError(f'unknown option {name}{hint} (see {PROG} --help)')


def parse_args(argv: Sequence[str], resume_args: Optional[Dict[str, Any]] = None) -> argparse.Namespace:
    """Options from defaults < ``resume_args`` (a checkpoint's) < ``--config`` file < command line."""
    parser = build_parser()
    pre = CommandParser(prog=PROG, add_help=False, allow_abbrev=False)
    pre.add_argument('-c', '--config', default='')
    pre_args, _ = pre.parse_known_args(list(argv))
    defaults: Dict[str, Any] = {}
    actions = option_dests(parser)
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
    _check_devices_and_schedule(args)
    _check_augmentation(args)
    _check_counts(args)
    if args.aug_repeats and not args.distributed:
        raise UserError('--aug-repeats needs distributed training (torchrun)')
    if args.amp and args.model_dtype not in (None, 'float32'):
        raise UserError('--amp needs a float32 model (leave --model-dtype out)')


def _check_devices_and_schedule(args: argparse.Namespace) -> None:
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


def _check_augmentation(args: argparse.Namespace) -> None:
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


def _check_counts(args: argparse.Namespace) -> None:
    for name, lo in (('batch_size', 1), ('epochs', 1), ('grad_accum_steps', 1), ('checkpoint_hist', 1),
                     ('val_interval', 1), ('log_interval', 1), ('workers', 0)):
        if getattr(args, name) < lo:
            raise UserError(f'--{name.replace("_", "-")} must be >= {lo}, got {getattr(args, name)}')
    if args.validation_batch_size is not None and args.validation_batch_size < 1:
        raise UserError(f'--validation-batch-size must be >= 1, got {args.validation_batch_size}')
    check_crop_pct(args.crop_pct)
    if args.plateau_patience is not None and args.plateau_patience < 1:
        raise UserError(f'--plateau-patience must be >= 1, got {args.plateau_patience}')
    if args.plateau_max_decays is not None and args.plateau_max_decays < 0:
        raise UserError(f'--plateau-max-decays must be >= 0, got {args.plateau_max_decays}')


def check_crop_pct(crop_pct: Optional[float]) -> None:
    """--crop-pct, for train and validate: None (the model's) or above 0; 0 would silently mean the default."""
    if crop_pct is not None and not crop_pct > 0:
        raise UserError(f'--crop-pct must be > 0, got {crop_pct}')


def args_dict(args: argparse.Namespace) -> Dict[str, Any]:
    """The options as a plain dict of YAML/weights_only-safe values (dest names only, loadable as --config)."""
    dests = option_dests(build_parser())
    return {k: plain(getattr(args, k)) for k in dests if hasattr(args, k)}


def plain(obj: Any) -> Any:
    """Lists, dicts, str, int, float, bool, None and tensors only (safe for yaml.safe_dump and weights_only)."""
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, (bool, int, float, str)) or obj is None or isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    return str(obj)
