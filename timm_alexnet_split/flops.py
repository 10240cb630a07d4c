"""Multiply-adds of a forward pass, counted from the layers' shapes (Conv2d and Linear)."""
from __future__ import annotations

import torch
import torch.nn as nn


def count_macs(model: nn.Module, img_size: int = 224) -> int:
    """Multiply-adds of convolutions and fully connected layers for one image of img_size^2."""
    total = 0

    def conv_hook(m: nn.Conv2d, inp, out):
        nonlocal total
        k = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
        total += out.shape[1] * out.shape[2] * out.shape[3] * k

    def fc_hook(m: nn.Linear, inp, out):
        nonlocal total
        total += m.in_features * m.out_features

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(fc_hook))
    was_training = model.training
    model.eval()
    try:
        dev = next(model.parameters()).device
        with torch.no_grad():
            model(torch.zeros(1, getattr(model, 'in_chans', 3), img_size, img_size, device=dev))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return total
