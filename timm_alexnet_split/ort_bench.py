"""onnxruntime (CPU) against PyTorch eager on the same split AlexNet, in the same run (``bench`` calls it).

The model is exported once per LRN form to a temporary folder (verified), then each file and PyTorch are timed
in turn within every round, so that load drift on a shared machine hits all alike.
"""
from __future__ import annotations

import functools
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch

from . import ort
from .export import create_split_model, export_onnx
from .export_verify import INPUT_NAME, random_images
from .timing import time_variants

__all__ = ['bench_onnxruntime']


def bench_onnxruntime(
        model_name: str = 'alexnet_split_2',
        batch_sizes: Sequence[int] = (1, 32),
        warmup: int = 2,
        repeats: int = 5,
        threads: Optional[int] = None,
        num_classes: int = 1000,
        lrn_forms: Sequence[str] = ('node', 'ops'),
) -> List[Dict[str, Any]]:
    """onnxruntime (CPU) against PyTorch eager (inference_mode, fp32) on the same model, same run.

    Exports ``model_name`` once per LRN form (``lrn_forms``: 'node', the default export, and 'ops') to a temporary
    folder (verified), then times one batch per run at each batch size: median of ``repeats`` runs after ``warmup``,
    PyTorch and each file timed in turn (timing.time_variants). All use ``threads`` intra-op threads (default:
    torch's). Returns one dict per batch size and LRN form: model, lrn_form, batch_size, threads, torch_img_s,
    ort_img_s, ratio (onnxruntime speed / PyTorch speed), and the export's max_rel_err.
    """
    threads = threads or torch.get_num_threads()
    model = create_split_model(model_name, num_classes=num_classes).eval()
    cfg = model.pretrained_cfg
    input_size = tuple(cfg.get('input_size', (3, 224, 224)))
    results = []
    with tempfile.TemporaryDirectory(prefix='alexnet_split_bench_') as d:
        sessions, reports = [], []
        for form in lrn_forms:
            reports.append(export_onnx(model, Path(d) / f'{model_name}-{form}.onnx', lrn_form=form))
            # no idle spinning: it would slow torch's turn
            sessions.append(ort.session(reports[-1]['path'], 'the export', threads=threads, spinning=False))
        prev = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            for b in batch_sizes:
                x = random_images(b, input_size, cfg['mean'], cfg['std'], seed=b)
                feed = {INPUT_NAME: x.numpy()}

                def run_torch(x: torch.Tensor = x) -> None:
                    with torch.inference_mode():
                        model(x)

                steps = {'torch': run_torch, **{f'ort {form}': functools.partial(sess.run, None, feed)
                                                for form, sess in zip(lrn_forms, sessions)}}
                ips = time_variants(steps, torch.device('cpu'), repeats, warmup, b)
                for form, report in zip(lrn_forms, reports):
                    results.append(dict(model=model_name, lrn_form=form, batch_size=b, threads=threads,
                                        torch_img_s=round(ips['torch'], 2), ort_img_s=round(ips[f'ort {form}'], 2),
                                        ratio=round(ips[f'ort {form}'] / ips['torch'], 3),
                                        max_rel_err=float(f'{report["max_rel_err"]:.3g}')))
        finally:
            torch.set_num_threads(prev)
    return results
