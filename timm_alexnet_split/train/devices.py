"""Devices: the process's device, torch.distributed set-up, towers on several devices, the model placed there."""
from __future__ import annotations

import argparse
import difflib
import os
from pathlib import Path
from typing import Any, Dict, List, Optional

import timm
import torch
import torch.nn as nn
from timm import utils

from ..checkpoint import load_checkpoint_file, load_into, read_checkpoint
from ..errors import UserError, one_line
from ..model import AlexNetSplit
from ..parallel import is_device_count, place_towers, process_devices
from .collectives import collective_timeout


def model_parallel_spec(args: argparse.Namespace) -> Optional[List[str]]:
    """The ``--model-parallel`` value as strings, or None when it is off (left out, or ``none``)."""
    spec = getattr(args, 'model_parallel', None)
    if spec is None or [str(d).lower() for d in spec] == ['none']:
        return None
    return [str(d) for d in spec]


def model_parallel_devices(args: argparse.Namespace) -> Optional[List[torch.device]]:
    """This process's devices for ``--model-parallel`` (by its local rank when a count K is given), checked;
    None when model parallelism is off."""
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


def model_parallel_kind(args: argparse.Namespace) -> None:
    """Before the device is set up: --device follows --model-parallel's kind of device (or must agree with it)."""
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


def named_device(name: Optional[str]) -> torch.device:
    """``--device NAME`` as a torch.device (None: cuda where there is one, else cpu); UserError, one line, for a name
    torch does not know or a CUDA device this machine lacks."""
    try:
        device = torch.device(name or ('cuda' if torch.cuda.is_available() else 'cpu'))
    except (RuntimeError, ValueError) as e:
        raise UserError(f'--device {name}: {one_line(e)}') from None
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise UserError(f'--device {name}: no CUDA device here')
    return device


def init_device(args: argparse.Namespace) -> torch.device:
    if args.device is None:
        args.device = 'cuda' if torch.cuda.is_available() else 'cpu'
    towers_on_gpus = model_parallel_spec(args) is not None and str(args.device).startswith('cuda')
    try:
        with collective_timeout(args.dist_timeout):
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
        msg = one_line(e, None) if str(e).strip() else 'not available'
        if utils.is_distributed_env() and not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            raise UserError(f'cannot join the distributed job (--dist-backend {args.dist_backend or "default"}, '
                            f'--device {args.device}, --dist-timeout {args.dist_timeout:g} s): {msg[:300]}') from None
        raise UserError(f'--device {args.device}: {msg}') from None


def create_train_model(args: argparse.Namespace, device: torch.device, dtype: Optional[torch.dtype] = None) -> nn.Module:
    """timm.create_model from the options, on ``device``; with ``--model-parallel``, the split AlexNet's towers on
    this process's devices (``model_parallel_devices``) and its head on the first of them."""
    spec = model_parallel_spec(args)
    in_chans = args.in_chans or (args.input_size[0] if args.input_size else 3)
    factory: Dict[str, Any] = {}
    if args.pretrained_path:
        if not args.pretrained:
            raise UserError(f'--pretrained-path {args.pretrained_path} is read only with --pretrained: add it')
        read_checkpoint(Path(args.pretrained_path))  # unreadable, truncated, not weights: one line, before timm reads it
        factory['pretrained_cfg_overlay'] = dict(file=args.pretrained_path, num_classes=-1)
    initial = load_checkpoint_file(Path(args.initial_checkpoint))[0] if args.initial_checkpoint else None
    try:
        model = timm.create_model(
            args.model, pretrained=args.pretrained, in_chans=in_chans, num_classes=args.num_classes,
            drop_rate=args.drop, global_pool=args.gp, **factory, **args.model_kwargs)
    except (RuntimeError, TypeError, ValueError, KeyError, FileNotFoundError, OSError) as e:
        msg = one_line(e, None)
        if not timm.is_model(args.model):
            close = difflib.get_close_matches(args.model, timm.list_models(), n=1)
            raise UserError(f'unknown model {args.model!r}' + (f' (did you mean {close[0]}?)' if close else '')) from None
        raise UserError(f'cannot create {args.model} with these options: {msg}') from None
    if initial is not None:  # as timm's checkpoint_path would (EMA weights first, strict), its errors in one line
        load_into(model, initial, args.model, f'--initial-checkpoint {args.initial_checkpoint}')
    if args.head_init_scale is not None:
        with torch.no_grad():
            model.get_classifier().weight.mul_(args.head_init_scale)
            model.get_classifier().bias.mul_(args.head_init_scale)
    if args.head_init_bias is not None:
        nn.init.constant_(model.get_classifier().bias, args.head_init_bias)
    if spec is None:
        return model.to(device=device, dtype=dtype)
    if not isinstance(model, AlexNetSplit):
        raise UserError(f'--model-parallel places the towers of the split AlexNet on devices; {args.model} has no towers')
    devs = model_parallel_devices(args)
    assert devs is not None
    if len(devs) > model.num_towers:
        raise UserError(f'--model-parallel {" ".join(spec)}: {len(devs)} devices for {model.num_towers} towers would '
                        f'leave {len(devs) - model.num_towers} idle')
    place_towers(model, [devs[t % len(devs)] for t in range(model.num_towers)], head_device=devs[0])
    return model.to(dtype=dtype) if dtype is not None else model
