"""An export checked against PyTorch: the written file run in onnxruntime (CUDA when torch sees a GPU, else CPU)
on random 0-255 images preprocessed as real ones, compared with PyTorch fp32 on the CPU.

Invariant: the error is ``max |onnx - torch| / max |torch|`` over a batch's logits (``ort.compare``), on inputs
that depend only on the seed; the exporter refuses a file whose error is above its tolerance.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn

from . import ort

__all__ = ['INPUT_NAME', 'mean_std', 'random_images', 'session', 'verify']


INPUT_NAME = 'input'


def session(path: Path):
    """An onnxruntime session: CUDA (TF32 off) when torch sees a GPU, else CPU. Returns (session, provider)."""
    sess = ort.session(path, 'the export', cuda=torch.cuda.is_available())
    return sess, sess.get_providers()[0]


def mean_std(model: nn.Module, chans: int) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    """The model's normalisation for ``chans`` channels: a 3-channel mean / std averaged for other counts, as
    timm's loader does (timm.data.loader.adapt_to_chs)."""
    cfg = getattr(model, 'pretrained_cfg', None) or {}
    out = []
    for v, default in ((cfg.get('mean'), 0.0), (cfg.get('std'), 1.0)):
        v = tuple(float(x) for x in v) if v else (default,) * chans
        out.append(v if len(v) == chans else (sum(v) / len(v),) * chans)
    return out[0], out[1]


def random_images(batch: int, input_size: Sequence[int], mean: Sequence[float], std: Sequence[float], seed: int) -> torch.Tensor:
    """Uniform 0-255 pixels, preprocessed as real ones are: (x / 255 - mean) / std (the paper: x - mean pixel)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (batch, *input_size), generator=g).float()
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (x / 255 - m) / s


def verify(path: Path, model: nn.Module, input_size: Sequence[int], batches: Sequence[int]) -> Dict[str, Any]:
    mean, std = mean_std(model, input_size[0])
    sess, provider = session(path)
    max_rel = max_abs = 0.0
    for i, b in enumerate(batches):
        x = random_images(b, input_size, mean, std, seed=i)
        with torch.inference_mode():
            ref = model(x).numpy().astype(np.float64)
        out = sess.run(None, {INPUT_NAME: x.numpy()})[0].astype(np.float64)
        if out.shape != ref.shape:
            raise RuntimeError(f'onnxruntime output {out.shape} differs in shape from PyTorch {ref.shape} at batch {b}')
        rel, err = ort.compare(out, ref)
        max_abs, max_rel = max(max_abs, err), max(max_rel, rel)
    return dict(max_rel_err=max_rel, max_abs_err=max_abs, provider=provider, verified_batches=list(batches))
