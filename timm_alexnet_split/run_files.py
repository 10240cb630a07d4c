"""The names of the files in a training run folder, in one place: the trainer writes them, and validate, export,
the demo, the sweep and the kernel tool read them.

Torch-free (standard library only), so the kernel tool can import it. Invariant: a name a writer and a reader
share is spelled here only; prose (help texts, messages) may name the files in words.
"""
from __future__ import annotations

from pathlib import Path

ARGS = 'args.yaml'                      # the options of the run (timm train.py's names)
LOG = 'log.txt'
SUMMARY = 'summary.csv'                 # one row per epoch
CLASS_MAP = 'class_map.txt'             # one class name per line, line i = class index i
LAST = 'last.pth.tar'                   # the training checkpoint of the last finished epoch (resume from it)
BEST = 'model_best.pth.tar'             # the best epoch's training checkpoint
LAST_WEIGHTS = 'last.safetensors'       # weights alone (--safetensors)
BEST_WEIGHTS = 'model_best.safetensors'
NUMBERED_GLOB = 'checkpoint-*.pth.tar'  # the best --checkpoint-hist epochs, checkpoint-E.pth.tar
ACC_PNG = 'acc.png'
LOSS_PNG = 'loss.png'
CONV1 = 'conv1'                         # the folder of conv1 snapshots
TOWERS = 'towers.json'                  # in CONV1: num_towers, kernels_per_tower, channel_order
SNAPSHOT_PATTERN = r'epoch_(\d+)\.npy'  # a conv1 snapshot's name, the epoch in group 1 (epoch 0: before training)


def numbered(epoch: int) -> str:
    """The numbered training checkpoint of ``epoch``."""
    return f'checkpoint-{epoch}.pth.tar'


def args_resume(epoch: int) -> str:
    """The options of a resume that starts at ``epoch`` (beside the first run's ARGS)."""
    return f'args-resume-epoch{epoch}.yaml'


def snapshot(epoch: int) -> str:
    """The name of conv1's snapshot after ``epoch`` epochs (matches SNAPSHOT_PATTERN)."""
    return f'epoch_{epoch:04d}.npy'


def snapshot_path(run_dir: Path, epoch: int) -> Path:
    """RUN/conv1/epoch_NNNN.npy."""
    return Path(run_dir) / CONV1 / snapshot(epoch)
