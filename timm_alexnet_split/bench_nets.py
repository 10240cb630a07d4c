"""The networks the benchmarks time and the step they time them with.

alexnet_split_2 with our LRN, without LRN, with nn.LocalResponseNorm; alexnet_split_3 and 4 towers; torchvision's
alexnet; the naive grouped split-2 of ../shared/bench/anchor_gpu.py. Below ``bench``, ``databench`` and
``trainbench``: it imports torch, timm and torchvision only, so no benchmark imports another for its networks.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

GPU_KINDS = ['ours', 'no_lrn', 'nn_lrn', 'tv_alexnet', 'naive_grouped']
TOWER_KINDS = ['split_3', 'towers_4']


class GroupLRN(nn.Module):
    """nn.LocalResponseNorm within each of ``groups`` equal channel groups (the yardstick's, ANCHORS.md)."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups
        self.lrn = nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        return self.lrn(x.reshape(n * self.groups, c // self.groups, h, w)).reshape(n, c, h, w)


def naive_split(groups: int = 2, num_classes: int = 1000) -> nn.Module:
    """The naive split AlexNet of ../shared/bench/anchor_gpu.py (SplitGrouped): grouped conv2/4/5, GroupLRN,
    dropout before fc6 and fc7; plus adaptive pooling to 6x6 so that any input size runs."""
    c1, c2, c3, c4, c5 = (-(-w // groups) * groups for w in (96, 256, 384, 384, 256))
    return nn.Sequential(
        nn.Conv2d(3, c1, 11, 4, 2), nn.ReLU(True), GroupLRN(groups), nn.MaxPool2d(3, 2),
        nn.Conv2d(c1, c2, 5, 1, 2, groups=groups), nn.ReLU(True), GroupLRN(groups), nn.MaxPool2d(3, 2),
        nn.Conv2d(c2, c3, 3, 1, 1), nn.ReLU(True),
        nn.Conv2d(c3, c4, 3, 1, 1, groups=groups), nn.ReLU(True),
        nn.Conv2d(c4, c5, 3, 1, 1, groups=groups), nn.ReLU(True), nn.MaxPool2d(3, 2),
        nn.AdaptiveAvgPool2d(6), nn.Flatten(1),
        nn.Dropout(), nn.Linear(c5 * 36, 4096), nn.ReLU(True), nn.Dropout(),
        nn.Linear(4096, 4096), nn.ReLU(True), nn.Linear(4096, num_classes))


def variant(kind: str, num_classes: int, state: Optional[dict] = None) -> nn.Module:
    """One network to time: alexnet_split_2 with our LRN ('ours'), without LRN, with nn.LocalResponseNorm (those three
    load ``state``), alexnet_split_3, 4 towers, torchvision's alexnet or the naive grouped split-2."""
    import timm
    if kind == 'tv_alexnet':
        import torchvision
        return torchvision.models.alexnet(num_classes=num_classes)
    if kind == 'naive_grouped':
        return naive_split(2, num_classes)
    if kind in TOWER_KINDS:
        name = 'alexnet_split_3' if kind == 'split_3' else 'alexnet_split_2'
        return timm.create_model(name, num_classes=num_classes, init='caffe',
                                 **({'num_towers': 4} if kind == 'towers_4' else {}))
    if kind not in ('ours', 'no_lrn', 'nn_lrn'):
        raise ValueError(kind)
    m = timm.create_model('alexnet_split_2', num_classes=num_classes, init='caffe')
    if state is not None:
        m.load_state_dict(state)
    for t in m.towers:
        if kind == 'no_lrn':
            t.norm1, t.norm2 = nn.Identity(), nn.Identity()
        elif kind == 'nn_lrn':
            t.norm1 = nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0)
            t.norm2 = nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0)
    return m


def stepper(model: nn.Module, x: torch.Tensor, y: torch.Tensor, train: bool, amp: bool) -> Callable[[], None]:
    """One training step (SGD, cross-entropy; bf16 autocast with ``amp``) or one inference pass of ``model`` on the
    batch ``(x, y)``, as a function of no arguments."""
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
    model.train(train)
    ctx = (lambda: torch.autocast(x.device.type, dtype=torch.bfloat16)) if amp else torch.enable_grad

    def step():
        if train:
            with ctx():
                loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        else:
            with torch.inference_mode(), ctx():
                model(x)
    return step
