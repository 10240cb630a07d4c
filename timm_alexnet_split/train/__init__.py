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

The modules, one concern each (docs/training.md):

- ``options``: the parser (timm train.py's names and defaults, ours, the refused ones), config files, checks;
- ``data``: datasets from the options, split checks, class alignment, unreadable images skipped;
- ``loaders``: timm's loaders, the paper's crops, ten-crop batches;
- ``devices``: the device and process group, towers on several devices, the model placed there;
- ``collectives``: what keeps the processes of a distributed run in step, and a lost peer;
- ``parts``: schedule, loss functions, PCA lighting built from the options;
- ``loop``: one training epoch, evaluation, stop requests;
- ``checkpoints``: RunSaver (last, best, history, recovery), generator states, weight digests, resume;
- ``rundir``: the run folder, summary.csv rows, conv1 snapshots; ``curves``: acc.png, loss.png; ``logs``: the log;
- ``run``: ``main``, the run as named phases sharing one ``Run``;
- ``validate``: ``validate_main``.
"""
from __future__ import annotations

from .checkpoints import RunSaver, weights_digest
from .data import SkipUnreadable
from .devices import create_train_model, model_parallel_devices, model_parallel_spec
from .loaders import PaperCrop, TenCrop
from .loop import evaluate
from .options import OWN_OPTIONS, UNSUPPORTED, build_parser, parse_args
from .run import main
from .rundir import conv1_kernels
from .validate import validate_main

__all__ = [
    'main', 'validate_main', 'build_parser', 'parse_args', 'create_train_model', 'evaluate', 'SkipUnreadable',
    'TenCrop', 'PaperCrop', 'RunSaver', 'conv1_kernels', 'OWN_OPTIONS', 'UNSUPPORTED', 'model_parallel_spec',
    'model_parallel_devices', 'weights_digest',
]
