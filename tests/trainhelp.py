"""What the trainer's tests share: small image folders, option lists, running the trainer, reading a run folder."""
from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Sequence, Tuple, Union

import numpy as np
from PIL import Image

from timm_alexnet_split import train

RECIPES_DIR = Path(__file__).resolve().parents[1] / 'recipes'
COLOURS = {'blue': (40, 40, 200), 'green': (40, 200, 40), 'red': (200, 40, 40)}
# one step per epoch (7 training items, the unreadable one among them, in one batch of 7: each epoch meets it);
# PCA lighting, paper crops, flips and a loader worker all draw random numbers, so an exact resume has to restore
# every generator
BASE_OPTS = ['--img-size', '64', '-b', '7', '--lr', '0.001', '--opt', 'momentum', '--weight-decay', '0.0005',
             '--sched', 'plateau', '--plateau-metric', 'train_top1', '--plateau-patience', '1', '--warmup-epochs', '0',
             '--smoothing', '0', '--color-jitter', '0', '--drop', '0.5', '--paper-crop', '--pca-lighting', '0.1',
             '--workers', '1', '--device', 'cpu', '--checkpoint-hist', '1', '--log-interval', '1', '--seed', '3']
RUN_OPTS = [*BASE_OPTS, '--model-kwargs', 'fc_width=64']
# the quickest run that still trains: no loader process, no augmentation but timm's defaults, a narrow head
QUICK = ['--img-size', '64', '-b', '3', '--lr', '0.001', '--opt', 'momentum', '--sched', 'plateau', '--warmup-epochs', '0',
         '--smoothing', '0', '--color-jitter', '0', '--workers', '0', '--device', 'cpu', '--checkpoint-hist', '1',
         '--seed', '3', '--model-kwargs', 'fc_width=64']


def make_folder(root: Path, per_class: Mapping[str, Union[int, Sequence[int]]], size: Tuple[int, int] = (80, 72),
                seed: int = 0, corrupt: bool = False, colours: Mapping[str, Tuple[int, int, int]] = COLOURS) -> Path:
    """ImageFolder splits of noisy solid-colour PNGs: {split: images per class, or a count for each class in
    ``colours``' order}; ``corrupt``: one unreadable JPEG among the red training images."""
    rng = np.random.default_rng(seed)
    for split, n in per_class.items():
        counts = [n] * len(colours) if isinstance(n, int) else list(n)
        for (name, rgb), count in zip(colours.items(), counts):
            d = root / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                a = np.clip(np.array(rgb)[None, None] + rng.normal(0, 25, (size[1], size[0], 3)), 0, 255)
                Image.fromarray(a.astype(np.uint8)).save(d / f'{i}.png')
    if corrupt:
        (root / 'train' / 'red' / 'broken.jpg').write_bytes(b'\xff\xd8 this is not a jpeg')
    return root


def run_train(*argv: object) -> int:
    """``train.main`` with every argument as a string."""
    return train.main([str(a) for a in argv])


def summary_rows(run_dir: Path) -> List[Dict[str, str]]:
    """summary.csv as one dict per epoch (column -> text)."""
    with open(run_dir / 'summary.csv', newline='') as f:
        return list(csv.DictReader(f))


def summary_table(run_dir: Path) -> List[List[str]]:
    """summary.csv as rows of text, the header first."""
    with open(run_dir / 'summary.csv', newline='') as f:
        return list(csv.reader(f))


def interrupt_in_first_epoch(argv: Sequence[str], send: Callable[[subprocess.Popen], None]) -> Tuple[int, str]:
    """Run ``python -m timm_alexnet_split.train ARGV`` in its own process group, call ``send(proc)`` once the first
    training line of epoch 0 is logged, and return the exit status and everything it wrote on stderr."""
    cmd = [sys.executable, '-m', 'timm_alexnet_split.train', *map(str, argv)]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, start_new_session=True)
    lines = []
    try:
        for line in proc.stderr:
            lines.append(line)
            if line.startswith('Train: 0'):
                send(proc)
                break
        _, rest = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, ''.join(lines) + rest
