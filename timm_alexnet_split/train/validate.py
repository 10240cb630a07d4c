"""``timm-alexnet-split validate``: top-1, top-5 and loss of a checkpoint on a dataset split."""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import timm
import torch
import torch.nn as nn
from timm.data import resolve_data_config

from ..checkpoint import Checkpoint, ModelInfo, find_run_checkpoint, load_into, read_checkpoint, state_dict_kwargs
from ..data.splits import find_split
from ..errors import CommandParser, UserError, one_line
from ..model import MIN_INPUT_SIZE, AlexNetSplit
from .data import UNREADABLE, SkipUnreadable, align_classes, create_split_dataset, is_folder_like, is_image_folder, skip_counts
from .devices import named_device
from .loaders import eval_loader
from .logs import quiet_timm_skips
from .loop import evaluate
from .options import ParseKwargs, check_crop_pct


def validate_main(argv: Optional[Sequence[str]] = None) -> int:
    """``timm-alexnet-split validate``: top-1, top-5 and loss of a checkpoint on a dataset split, as JSON on stdout."""
    args = build_validate_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.batch_size < 1 or args.workers < 0:
        raise UserError('--batch-size must be >= 1 and --workers >= 0')
    check_crop_pct(args.crop_pct)
    device = named_device(args.device)
    ckpt, model, model_name = _load_model(args, device)
    data_config = _data_config(args, model, ckpt.info)
    ds = _dataset(args, data_config, ckpt.info.class_names)
    m, skipped = _evaluate(args, ds, model, data_config, device)
    result = {'checkpoint': str(ckpt.path), 'weights': ckpt.source, 'model': model_name, 'split': args.split,
              'images': m['images'],
              'crop': 'ten-crop' if args.ten_crop else 'center', 'top1': round(m['top1'], 4),
              'top5': round(m['top5'], 4), 'loss': round(m['loss'], 6), 'skipped_unreadable': skipped}
    print(json.dumps(result))
    if skipped:
        print(f'warning: {skipped} unreadable image(s) skipped', file=sys.stderr)
    return 0


def build_validate_parser() -> argparse.ArgumentParser:
    """The ``validate`` command's options."""
    parser = CommandParser(
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
    return parser


def _load_model(args: argparse.Namespace, device: torch.device) -> Tuple[Checkpoint, nn.Module, str]:
    """The checkpoint (a run folder's best), and the model it names (or --model) with its weights, on ``device``."""
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
    for key, value in state_dict_kwargs(ckpt.state_dict).items():  # what the shapes fix (fc8, fc6, conv1, towers)
        if key == 'num_towers' and args.model:  # a model named here keeps its towers: other weights are refused
            continue
        kwargs.setdefault(key, value)
    try:
        model = timm.create_model(model_name, **kwargs)
    except (RuntimeError, TypeError, ValueError, KeyError) as e:
        raise UserError(f'cannot create {model_name}: {one_line(e, 200)}') from None
    load_into(model, ckpt.state_dict, model_name, str(path))
    model.to(device).eval()
    return ckpt, model, model_name


def _data_config(args: argparse.Namespace, model: nn.Module, info: ModelInfo) -> Dict[str, Any]:
    """Preprocessing as trained (the checkpoint's data config), then --img-size and --crop-pct."""
    data_config = dict(resolve_data_config(info.data_args(), model=model))
    chans = getattr(model, 'in_chans', None)
    if chans and data_config['input_size'][0] != chans:  # a model of other input channels than its default cfg's
        data_config['input_size'] = (chans, *data_config['input_size'][1:])
    if args.img_size:
        data_config['input_size'] = (data_config['input_size'][0], args.img_size, args.img_size)
    if args.crop_pct:
        data_config['crop_pct'] = args.crop_pct
    if isinstance(model, AlexNetSplit) and min(data_config['input_size'][1:]) < MIN_INPUT_SIZE:
        raise UserError(f'--img-size must be at least {MIN_INPUT_SIZE} for the split AlexNet')
    return data_config


def _dataset(args: argparse.Namespace, data_config: Dict[str, Any], class_names: Optional[List[str]]) -> Any:
    """The split to evaluate, with the checkpoint's class indices."""
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
    if not vargs.data_dir and is_folder_like(args.dataset):
        raise UserError('give --data-dir DIR (or --dataset torch/NAME, or --demo-data)')
    if vargs.data_dir and is_folder_like(args.dataset) and not os.path.exists(vargs.data_dir):
        raise UserError(f'data folder {vargs.data_dir} not found')
    if vargs.data_dir and is_image_folder(args.dataset) and os.path.isdir(vargs.data_dir):
        if find_split(Path(vargs.data_dir), args.split) is None:
            print(f'note: {vargs.data_dir} has no split folders: evaluating every image in it', file=sys.stderr)
    ds = create_split_dataset(vargs, args.split, False, None, 'evaluation')
    if class_names:
        ds = align_classes(vargs, ds, class_names,
                           lambda m: create_split_dataset(vargs, args.split, False, m, 'evaluation'))
    return ds


def _evaluate(args: argparse.Namespace, ds: Any, model: nn.Module, data_config: Dict[str, Any],
              device: torch.device) -> Tuple[Dict[str, Any], int]:
    """The metrics, and how many distinct images could not be read; no image evaluated is a UserError."""
    with tempfile.TemporaryDirectory() as tmp, quiet_timm_skips():
        skip_log = Path(tmp) / 'skipped.txt'
        ds = SkipUnreadable(ds, args.split, str(skip_log), substitute=False)
        loader = eval_loader(ds, data_config, args.batch_size, args.workers, device, ten_crop=args.ten_crop)
        try:
            m = evaluate(model, loader, nn.CrossEntropyLoss().to(device), device, ten_crop=args.ten_crop,
                         data_config=data_config, desc='validate')
        except RuntimeError as e:
            if UNREADABLE in str(e):
                raise UserError(str(e).split('Original Traceback')[0].strip().splitlines()[-1]) from None
            raise
        skipped = skip_counts(skip_log)[1]
    if not m['images']:
        raise UserError(f'no image of the {args.split!r} split could be evaluated'
                        + (f' ({skipped} unreadable)' if skipped else ''))
    return m, skipped
