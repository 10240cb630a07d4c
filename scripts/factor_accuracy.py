"""Which cue did a run learn? Accuracy per factor on the validation split of a dataset whose class names are
factors joined by '-' (the embedded datasets: demo and demo-hard `red-045` = hue family x stripe orientation;
leaves `green-blue-045-fine` = centre hue x surround hue x texture orientation x texture period).

    python scripts/factor_accuracy.py RUN_DIR [RUN_DIR ...] [--data-dir DIR] [--split validation]

For each training run folder: the model and best checkpoint as `validate` reads them (checkpoint.read_run),
the evaluation transform timm builds from the run's own image size and crop, and per factor
the share of validation images whose predicted class has the right value of that factor, next to that factor's
chance level. A factor at chance means the network has not learned that cue (docs/science.md uses this to tell
"learned hue, not yet orientation" apart from the converse).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np
import timm
import torch
import yaml
from timm.data import create_transform, resolve_data_config
from torchvision.datasets import ImageFolder

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import timm_alexnet_split  # noqa: E402,F401  (registers the models)
from timm_alexnet_split import run_files as RF  # noqa: E402
from timm_alexnet_split.checkpoint import RunInfo, load_checkpoint_file, load_into, read_run  # noqa: E402
from timm_alexnet_split.errors import UserError  # noqa: E402


def load_run(run: Path) -> tuple:
    """(model in eval mode, what the run folder says of it: checkpoint.RunInfo) from a training run folder."""
    if not (run / RF.ARGS).is_file():
        raise UserError(f'{run} is not a training run folder (no args.yaml)')
    info = read_run(run)
    model = timm.create_model(info.model, num_classes=info.num_classes, **info.model_kwargs)
    state_dict, _ = load_checkpoint_file(info.checkpoint)
    load_into(model, state_dict, info.model, str(info.checkpoint))
    return model.eval(), info


def factor_accuracy(model: torch.nn.Module, info: RunInfo, data_dir: Path, split: str) -> Dict[str, tuple]:
    """{'top-1': (accuracy, chance), factor i: (accuracy, chance)} on ``data_dir/split``."""
    cfg = resolve_data_config(info.data_args(), model=model)
    ds = ImageFolder(str(data_dir / split), transform=create_transform(**cfg, is_training=False))
    loader = torch.utils.data.DataLoader(ds, batch_size=128, num_workers=0)
    with torch.inference_mode():
        pred = torch.cat([model(x).argmax(1) for x, _ in loader]).numpy()
    truth = np.asarray(ds.targets)
    parts = [c.split('-') for c in ds.classes]
    if len({len(p) for p in parts}) != 1:
        raise UserError(f'the class names of {data_dir / split} are not all made of the same number of factors')
    out = {'top-1': (float((pred == truth).mean()), 1 / len(ds.classes))}
    for k in range(len(parts[0])):
        values = {p[k] for p in parts}
        right = np.array([parts[p][k] == parts[t][k] for p, t in zip(pred, truth)])
        out[f'factor {k + 1}'] = (float(right.mean()), 1 / len(values))
    return out


def main(argv: List[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('runs', nargs='+', type=Path, help='training run folders')
    p.add_argument('--data-dir', type=Path, help='the dataset (default: the one in each run\'s args.yaml)')
    p.add_argument('--split', default='validation', help='split folder (default validation)')
    a = p.parse_args(argv)
    try:
        for run in a.runs:
            model, info = load_run(run)
            data = a.data_dir or Path((yaml.safe_load((run / RF.ARGS).read_text()) or {}).get('data_dir') or '')
            if not (data / a.split).is_dir():
                raise UserError(f'no {a.split} split under {data}; pass --data-dir')
            acc = factor_accuracy(model, info, data, a.split)
            print(f'{run.name}: ' + ', '.join(f'{k} {v:.3f} (chance {c:.3f})' for k, (v, c) in acc.items()))
    except UserError as e:
        print(f'factor_accuracy: error: {e}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
