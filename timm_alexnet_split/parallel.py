"""Towers on several devices, as the paper ran its two towers on two GPUs (model parallelism).

``place_towers(model, ['cuda:0', 'cuda:1'])`` puts tower i on devices[i] and the fully connected
head on head_device. Nothing else changes: the model's forward already moves activations to the
consumer's device at the two cross-connections only (conv3's input: every tower's pool2 maps;
fc6's input: every tower's pool5 maps), with non-blocking copies, and the state_dict keys stay the
same, so a checkpoint of a placed model loads into an unplaced one and back.

On different GPUs the towers run concurrently: CUDA launches are asynchronous and nothing in the
forward or backward synchronises the host between towers.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Union

import torch
import torch.nn as nn

from .model import AlexNetSplit

__all__ = ['place_towers', 'parse_devices', 'process_devices', 'is_device_count', 'tower_devices', 'head_device']

DeviceLike = Union[str, int, torch.device]


def _device(d: DeviceLike) -> torch.device:
    try:
        dev = torch.device(f'cuda:{d}' if isinstance(d, int) else d)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f'not a device: {d!r} ({e})') from None
    if dev.type == 'cuda':
        if not torch.cuda.is_available():
            raise ValueError(f'device {dev} asked for, but CUDA is not available')
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f'device {dev} asked for, but only {torch.cuda.device_count()} CUDA device(s) exist')
    return dev


def is_device_count(spec: Sequence[str]) -> bool:
    """True when a ``--model-parallel`` value is one integer K (K CUDA devices per process)."""
    return len(spec) == 1 and str(spec[0]).isdigit()


def process_devices(spec: Sequence[str], local_rank: int = 0) -> List[torch.device]:
    """This process's devices for ``--model-parallel``: the devices listed, or for one integer K the K CUDA devices
    [local_rank*K, ..., local_rank*K + K - 1] (so N processes on a machine share N*K GPUs without overlap)."""
    if is_device_count(spec):
        k = int(spec[0])
        if k < 1:
            raise ValueError('--model-parallel K needs K >= 1 devices per process')
        devs = [_device(f'cuda:{local_rank * k + i}') for i in range(k)]
    else:
        devs = [_device(s) for s in spec]
        if not devs:
            raise ValueError('--model-parallel needs at least one device')
    return devs


def parse_devices(spec: Sequence[str], num_towers: int, local_rank: int = 0) -> List[torch.device]:
    """Devices for ``--model-parallel``, one per tower: ``process_devices(spec, local_rank)`` dealt to the towers
    round-robin."""
    devs = process_devices(spec, local_rank)
    return [devs[t % len(devs)] for t in range(num_towers)]


def place_towers(model: AlexNetSplit, devices: Sequence[DeviceLike],
                 head_device: Optional[DeviceLike] = None) -> AlexNetSplit:
    """Put tower i on devices[i] and fc6..fc8 on head_device (default devices[0]); returns the model.

    Args:
        model: an AlexNetSplit (as timm.create_model makes it).
        devices: one device per tower.
        head_device: where the fully connected layers (and a Caffe-style all-channel LRN) live.
    """
    if not isinstance(model, AlexNetSplit):
        raise TypeError(f'place_towers needs an AlexNetSplit, got {type(model).__name__}')
    if len(devices) != model.num_towers:
        raise ValueError(f'{model.num_towers} towers need {model.num_towers} devices, got {len(devices)}')
    devs = [_device(d) for d in devices]
    head = _device(head_device) if head_device is not None else devs[0]
    for tower, dev in zip(model.towers, devs):
        tower.to(dev)
    for name, module in model.named_children():
        if name != 'towers':
            module.to(head if name in ('pre_logits', 'fc8') else devs[0])
    return model


def tower_devices(model: AlexNetSplit) -> List[torch.device]:
    """Where each tower lives."""
    return [t.device for t in model.towers]


def head_device(model: nn.Module) -> torch.device:
    """Where fc6..fc8 live (the towers' maps meet there); the first parameter's device once the head is pruned."""
    return model.pre_logits.fc6.weight.device if isinstance(model.pre_logits, nn.Sequential) else \
        next(model.parameters()).device
