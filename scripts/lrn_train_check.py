"""Does training with the Triton LRN kernels follow the reference LRN? One epoch of the demo data, three runs from the
same seed, same batches, same initial weights:

    triton      lrn_triton (set_lrn_mode('triton'))
    reference   lrn_reference computed in fp32, rounded to the activations' dtype (the exact LRN)
    yardstick   lrn_reference computed in the activations' dtype (bf16 on a GPU): what bf16 rounding inside the
                LRN alone does to the loss curve

PASS when, at every step, |loss(triton) - loss(reference)| <= max(2 * the largest |yardstick - reference| so far,
rel_tol * loss(reference)). On a GPU: bf16 autocast + channels_last, cuDNN deterministic (so the runs differ only in
their LRN). On a CPU it runs in fp32 with the kernels in Triton's interpreter (set TRITON_INTERPRET=1; tiny settings:
a smoke test).

    python scripts/lrn_train_check.py [--device cuda] [--images-per-class 300] [--batch-size 128] [--json PATH]

Exit 0 PASS, 1 MISS, 2 a usage error.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import timm  # noqa: E402

import timm_alexnet_split  # noqa: E402,F401  (registers the models)
from timm_alexnet_split.data.embedded import demo_generated  # noqa: E402
from timm_alexnet_split.lrn import TowerLRN, lrn_reference, set_lrn_mode  # noqa: E402


class ReferenceLRN(nn.Module):
    """lrn_reference of a TowerLRN's hyper-parameters, computed in ``dtype`` (None: the input's), autocast off."""

    def __init__(self, norm: TowerLRN, dtype: Optional[torch.dtype]) -> None:
        super().__init__()
        self.hp, self.dtype = (norm.size, norm.onnx_alpha, norm.beta, norm.k), dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return lrn_reference(x.to(self.dtype or x.dtype), *self.hp).to(x.dtype)


def demo_batches(per_class: int, batch: int, seed: int, device: torch.device) -> List[tuple]:
    """One epoch of the demo training images (0-255 minus 128, NCHW float), shuffled by ``seed``, last partial dropped."""
    gen = demo_generated('demo', train_per_class=per_class)
    classes = list(gen.classes)
    names, images = zip(*((c, img) for c, _, img in gen.render(0, per_class)))
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() - 128.0
    y = torch.tensor([classes.index(c) for c in names])
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    return [(x[i].to(device), y[i].to(device)) for i in order[:len(y) // batch * batch].split(batch)]


def train_epoch(kind: str, batches: List[tuple], num_classes: int, seed: int, device: torch.device,
                amp: bool) -> List[float]:
    """The loss of every step of one epoch with the LRN ``kind`` ('triton', 'reference', 'yardstick')."""
    torch.manual_seed(seed)
    model = timm.create_model('alexnet_split_2', num_classes=num_classes, init='caffe')
    set_lrn_mode('triton' if kind == 'triton' else 'auto')
    if kind != 'triton':
        for t in model.towers:
            t.norm1 = ReferenceLRN(t.norm1, torch.float32 if kind == 'reference' else None)
            t.norm2 = ReferenceLRN(t.norm2, torch.float32 if kind == 'reference' else None)
    fmt = torch.channels_last if amp else torch.contiguous_format
    model = model.to(device, memory_format=fmt).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    losses = []
    try:
        for x, y in batches:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                loss = F.cross_entropy(model(x.contiguous(memory_format=fmt)), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
    finally:
        set_lrn_mode('auto')
    return losses


def compare(curves: Dict[str, List[float]], rel_tol: float) -> dict:
    """Per step: the triton - reference difference against its allowance (see the module docstring)."""
    worst_noise, steps, ok = 0.0, [], True
    for i, (t, r, yd) in enumerate(zip(curves['triton'], curves['reference'], curves['yardstick'])):
        worst_noise = max(worst_noise, abs(yd - r))
        allowed = max(2 * worst_noise, rel_tol * abs(r))
        steps.append(dict(step=i, triton=t, reference=r, yardstick=yd, diff=abs(t - r), allowed=allowed))
        ok = ok and abs(t - r) <= allowed
    return dict(passed=ok, max_diff=max((s['diff'] for s in steps), default=0.0),
                max_yardstick_diff=worst_noise, steps=steps)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--images-per-class', type=int, default=300, help='demo training images per class (300: the epoch)')
    p.add_argument('--batch-size', type=int, default=128)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--rel-tol', type=float, default=None, help='default 0.01 (bf16, GPU), 1e-4 (fp32, CPU)')
    p.add_argument('--json', default=None, help='write the curves and the verdict here')
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        p.error('--device cuda, but CUDA is not available')
    amp = device.type == 'cuda'
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    batches = demo_batches(args.images_per_class, args.batch_size, args.seed, device)
    if not batches:
        p.error('fewer images than one batch')
    num_classes = len(demo_generated('demo').classes)
    curves = {k: train_epoch(k, batches, num_classes, args.seed, device, amp) for k in ('triton', 'reference', 'yardstick')}
    result = compare(curves, args.rel_tol if args.rel_tol is not None else (0.01 if amp else 1e-4))
    result.update(device=str(device), amp_bf16=amp, batches=len(batches), batch_size=args.batch_size)
    for s in result['steps']:
        print(f'step {s["step"]:>3}: triton {s["triton"]:.4f}  reference {s["reference"]:.4f}  yardstick '
              f'{s["yardstick"]:.4f}  |diff| {s["diff"]:.2e} <= {s["allowed"]:.2e}')
    print(f'lrn_train_check: {"PASS" if result["passed"] else "MISS"}: triton vs reference LRN, {len(batches)} steps '
          f'({"bf16 + channels_last" if amp else "fp32"}), largest |loss difference| {result["max_diff"]:.2e}, '
          f'bf16-rounding yardstick {result["max_yardstick_diff"]:.2e}')
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0 if result['passed'] else 1


if __name__ == '__main__':
    sys.exit(main())
