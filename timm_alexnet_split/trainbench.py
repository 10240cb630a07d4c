"""``timm-alexnet-split bench --train-input``: the input path measured through ``train`` itself.

The demo data (learnable: hue x orientation) is generated, written as 256-px shards, and trained on with each
decoder and with ``--synthetic-input`` (the first batch again, on the device: the step without the input path),
all from one seed, in this one run. Each run's summary.csv gives the images/s of every epoch (the loader's
start-up included) and the loss; the table prints them and each decoder's ratio to the synthetic-input rate.
On a GPU the goal is shards + the best decoder >= 0.95x that rate (the input never the bottleneck).

On a CPU the network is far slower than the input, so the CPU question is the loader's alone (``loader``
section): epochs of the trainer's default training loader from the shards (CPU decoding; the first starts the
workers, which persist) against ``bench --data``'s per-core rate of the same pipeline times the workers, both
measured here; the goal is within 1.2x, on the workers' batches of the epochs after the first (the rate
through timm's prefetcher, which normalises on the CPU in this process, and the first epoch's are printed too).
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

from .run_files import SUMMARY

GOAL_INPUT = 0.95  # GPU: shards + best decoder vs synthetic input
GOAL_LOADER = 1.2  # CPU: loader epoch time vs per-core rate x workers


def make_shards(root: Path, per_class: int, workers: int, say: Callable[[str], None]) -> Path:
    """The demo data with ``per_class`` training images per class, written as 256-px shards under ``root``."""
    from .data import make_demo_dataset
    from .data.shards import Options, prepare
    t = time.perf_counter()
    folder = make_demo_dataset(root / 'images', train_per_class=per_class, val_per_class=max(4, per_class // 10),
                               progress=False)
    shards = root / 'shards'
    with contextlib.redirect_stdout(io.StringIO()):
        info = prepare(folder, shards, 'demo', 500, workers, Options(), progress=False)
    n = info['splits']['train']['num_samples']  # type: ignore[index]
    say(f'demo data as 256-px shards: {n} training images in {len(info["splits"]["train"]["filenames"])} shards '  # type: ignore[index]
        f'({time.perf_counter() - t:.1f} s)')
    return shards


def train_argv(shards: Path, out: Path, name: str, device: torch.device, batch: int, epochs: int,
               workers: int) -> List[str]:
    """The trainer's options for one measured run: the ImageNet recipe's step (alexnet_split_2, Caffe init, SGD
    0.01, paper crops, PCA lighting), bf16 + channels_last on a GPU, no validation (training speed only)."""
    argv = ['--dataset', 'wds/demo', '--data-dir', str(shards), '--model', 'alexnet_split_2', '--model-kwargs',
            'init=caffe', '--num-classes', '12', '--img-size', '224', '-b', str(batch), '--epochs', str(epochs),
            '--opt', 'momentum', '--lr', '0.01', '--momentum', '0.9', '--weight-decay', '0.0005', '--sched', 'cosine',
            '--warmup-epochs', '0', '--smoothing', '0', '--color-jitter', '0', '--paper-crop', '--pca-lighting', '0.1',
            '--workers', str(workers), '--pin-mem', '--val-split', '', '--seed', '0', '--device', str(device),
            '--no-save-conv1', '--checkpoint-hist', '1', '--log-interval', '1000', '--output', str(out),
            '--experiment', name]
    if device.type == 'cuda':
        argv += ['--amp', '--amp-dtype', 'bfloat16', '--channels-last']
    return argv


def run_training(argv: List[str], run_dir: Path) -> Dict[str, List[float]]:
    """``train`` in this process; its summary.csv's images/s and losses per epoch."""
    from .train import main as train_main
    rc = train_main(argv)
    if rc != 0:
        from .errors import UserError
        raise UserError(f'train {" ".join(argv)} ended with exit status {rc}')
    with open(run_dir / SUMMARY, newline='') as f:
        rows = list(csv.DictReader(f))
    return {'img_s': [float(r['train_img_s']) for r in rows], 'loss': [float(r['train_loss']) for r in rows]}


def steady(rates: List[float]) -> float:
    """An epoch rate for the ratio: the median of the epochs after the first (its start-up and cuDNN's autotuning
    are paid once), the first alone for a one-epoch run."""
    return statistics.median(rates[1:]) if len(rates) > 1 else rates[0]


def input_section(shards: Path, tmp: Path, device: torch.device, batch: int, epochs: int, workers: int,
                  decoders: List[str], say: Callable[[str], None]) -> Dict[str, object]:
    """Train with each decoder and with synthetic input; the table and the goal line."""
    runs: Dict[str, Dict[str, List[float]]] = {}
    for name in ['synthetic', *decoders]:
        argv = train_argv(shards, tmp / 'runs', name, device, batch, epochs, workers)
        argv += ['--synthetic-input'] if name == 'synthetic' else ['--decode', name]
        t = time.perf_counter()
        runs[name] = run_training(argv, tmp / 'runs' / name)
        say(f'  trained with {name} input: {time.perf_counter() - t:.1f} s')
    base = steady(runs['synthetic']['img_s'])
    say(f'\ntraining through `train` ({device.type}, alexnet_split_2, batch {batch}'
        f'{", bf16 + channels_last" if device.type == "cuda" else ", fp32"}), images/s per epoch (loader start-up '
        'included); ratio = epochs after the first vs synthetic input')
    say(f'  {"input":<12}{"images/s per epoch":<44}{"ratio":>7}  loss first -> last')
    result: Dict[str, object] = {'synthetic_img_s': base, 'runs': runs}
    ratios = {}
    for name, r in runs.items():
        ratio = steady(r['img_s']) / base
        falling = all(math.isfinite(v) for v in r['loss']) and r['loss'][-1] < r['loss'][0]
        if name != 'synthetic':
            ratios[name] = ratio
        epochs_txt = ' '.join(f'{v:.0f}' for v in r['img_s'])
        say(f'  {name:<12}{epochs_txt:<44}{ratio:>6.2f}x  {r["loss"][0]:.3f} -> {r["loss"][-1]:.3f}'
            + ('' if name == 'synthetic' else ('  (finite, falling)' if falling else '  (NOT FALLING or not finite)')))
        r['ratio'] = [ratio]
        r['falling'] = [float(falling)]
    best = max(ratios, key=ratios.get)
    verdict = 'meets' if ratios[best] >= GOAL_INPUT else 'MISSES'
    result.update(ratios=ratios, best=best)
    say(f'\ngoal: shards + {best} decoding {ratios[best]:.2f}x the synthetic-input rate {verdict} the goal '
        f'>= {GOAL_INPUT}')
    return result


def loader_epoch_rates(shards: Path, batch: int, workers: int, epochs: int = 3,
                       per_core: Optional[Callable[[], float]] = None) -> Dict[str, List[float]]:
    """Images/s per epoch of the trainer's default training loader from the shards (CPU decoding, paper crops, no
    network): ``start``, the first epoch (it starts the workers, which persist); then ``epochs`` epochs each of
    ``workers_batches`` (the uint8 batches the workers hand the main process: the input path as a GPU receives it)
    and ``prefetched`` (through timm's prefetcher, which on a CPU device normalises them in the main process),
    alternated so that the machine's drift falls on both alike. ``per_core``: timed after every epoch (the workers
    idle), its rates under ``per_core`` (one after each epoch)."""
    from .train import parse_args
    from .train.data import build_datasets
    from .train.loaders import _torch_loader, build_loaders, shut_down_workers
    args = parse_args(['--dataset', 'wds/demo', '--data-dir', str(shards), '--paper-crop', '--color-jitter', '0',
                       '-b', str(batch), '--workers', str(workers), '--val-split', '', '--device', 'cpu'])
    args.distributed, args.world_size, args.rank, args.prefetcher = False, 1, 0, True
    train_ds, _, _ = build_datasets(args)
    cfg = {'input_size': (3, 224, 224), 'crop_pct': 0.875, 'interpolation': 'bilinear',
           'mean': (0.485, 0.456, 0.406), 'std': (1 / 255,) * 3}
    t = time.perf_counter()
    loader, _ = build_loaders(args, cfg, torch.device('cpu'), train_ds, None, torch.float32)
    rates: Dict[str, List[float]] = {'start': [], 'workers_batches': [], 'prefetched': [], 'per_core': []}
    try:
        for epoch in range(1 + 2 * epochs):
            kind = 'start' if epoch == 0 else ('workers_batches', 'prefetched')[epoch % 2]
            loader.sampler.set_epoch(epoch)
            if epoch:
                t = time.perf_counter()
            n = sum(x.shape[0] for x, _ in (_torch_loader(loader) if kind == 'workers_batches' else loader))
            rates[kind].append(n / (time.perf_counter() - t))
            if per_core is not None:
                rates['per_core'].append(per_core())
    finally:
        shut_down_workers(loader)
    return rates


def paired_ratios(rates: Dict[str, List[float]], workers: int) -> Dict[str, List[float]]:
    """Per epoch: the per-core rate x workers around it (the mean of the timings just before and just after it; the
    first epoch: the one after it) over the epoch's rate. Pairs in time: this VM's speed moves by a fifth within
    minutes, and a pair shares its minute."""
    timings = rates['per_core']
    order = ['start'] + [('workers_batches', 'prefetched')[e % 2] for e in range(1, len(timings))]
    seen: Dict[str, int] = {}
    out: Dict[str, List[float]] = {kind: [] for kind in ('start', 'workers_batches', 'prefetched')}
    for e, kind in enumerate(order):
        around = timings[0] if e == 0 else (timings[e - 1] + timings[e]) / 2
        out[kind].append(around * workers / rates[kind][seen.get(kind, 0)])
        seen[kind] = seen.get(kind, 0) + 1
    return out


def loader_section(shards: Path, batch: int, workers: int, say: Callable[[str], None]) -> Dict[str, object]:
    """The CPU question: the loader's epochs (loader_epoch_rates) against bench --data's per-core rate times the
    workers, that rate timed after each epoch; each epoch's ratio against the timings either side of it, the goal's
    ratio the median over the workers' epochs."""
    from .databench import _run_shards, _time
    info = json.loads((shards / '_info.json').read_text())
    tars = [str(shards / f) for f in info['splits']['train']['filenames']]
    _run_shards((tars[:1], False))  # warm-up
    sample = tars[:max(1, len(tars) // 4)]  # a quarter of the shards (at least one) is enough for a rate
    rates = loader_epoch_rates(shards, batch, workers, per_core=lambda: _time(_run_shards, (sample, False)))
    timings = rates.pop('per_core')
    paired = paired_ratios({**rates, 'per_core': timings}, workers)
    ratios = {k: statistics.median(v) for k, v in paired.items()}
    per_core = statistics.median(timings)
    verdict = 'meets' if ratios['workers_batches'] <= GOAL_LOADER else 'MISSES'
    say(f'\nthe training loader alone (CPU decoding from the shards, {workers} workers, batch {batch}); bench '
        f'--data\'s pipeline per core, timed after each epoch: {" / ".join(f"{v:.0f}" for v in timings)} images/s '
        f'(median {per_core:.0f}) x {workers}; ratio = the per-core rate around each epoch x workers / its rate:')
    for kind, label in (('start', 'first epoch (starts the workers)'),
                        ('workers_batches', "later epochs, the workers' batches"),
                        ('prefetched', "later epochs, normalised in this process")):
        say(f'  {label:<42}{" / ".join(f"{v:.0f}" for v in rates[kind]):>22} images/s  ratios '
            f'{" / ".join(f"{v:.2f}" for v in paired[kind])} (median {ratios[kind]:.2f})')
    say(f'goal: per-core rate x workers / the workers\' epoch rate {ratios["workers_batches"]:.2f} {verdict} the goal '
        f'<= {GOAL_LOADER}')
    return {'per_core': per_core, 'per_core_timings': timings, 'workers': workers, 'epoch_img_s': rates,
            'paired_ratios': paired, 'ratios': ratios, 'ratio': ratios['workers_batches']}


def main(args: argparse.Namespace, device: torch.device, batch: int, out: Path,
         machine: str, print_fn: Callable[[str], None] = print) -> int:
    """Everything ``bench --train-input`` measures; the JSON beside the printed table."""
    from .databench import cores_available
    from .errors import UserError
    lines: List[str] = []

    def say(line: str) -> None:
        lines.append(line)
        print_fn(line)

    if args.train_epochs < 1 or args.train_images_per_class < 2:
        raise UserError('--train-epochs must be >= 1 and --train-images-per-class >= 2')
    if args.data_dir and not Path(args.data_dir).is_dir():
        raise UserError(f'--data-dir {args.data_dir} is not a folder')
    if args.train_workers is not None and args.train_workers < 1:
        raise UserError('--train-workers must be at least 1 (the goal is the workers\' rate; none would meet it '
                        'with a ratio of 0)')
    if 'gpu' in (args.decoders or []) and device.type != 'cuda':
        raise UserError(f'--decoders gpu needs a CUDA device (here {device.type}: train would decode on the CPU '
                        'under that name); --decoders device runs the same path here')
    cores = cores_available()
    workers = args.train_workers if args.train_workers is not None else max(1, cores - 2)
    decoders = args.decoders or (['cpu', 'gpu'] if device.type == 'cuda' else ['cpu', 'device'])
    from .atomic import replace_when_done
    with replace_when_done(out, False, 'bench --train-input', make_folder=True) as tmp_out:  # unwritable: before the work
        say(f'machine: {machine}; {cores} cores, {workers} loader workers; results go to {out}')
        result: Dict[str, object] = {'machine': machine, 'device': device.type, 'batch': batch, 'workers': workers}
        with tempfile.TemporaryDirectory(prefix='bench-train-input-', dir=args.data_dir) as tmp_name:
            tmp = Path(tmp_name)
            shards = make_shards(tmp, args.train_images_per_class, max(1, cores - 1), say)
            if not args.skip_loader:
                result['loader'] = loader_section(shards, batch, workers, say)
            if not args.skip_training:
                result['input'] = input_section(shards, tmp, device, batch, args.train_epochs, workers, decoders,
                                                say)
        result['lines'] = lines
        tmp_out.write_text(json.dumps(result, indent=2))
    return 0


def add_options(parser: argparse.ArgumentParser) -> None:
    """bench's options for --train-input."""
    g = parser.add_argument_group('--train-input')
    g.add_argument('--train-input', action='store_true',
                   help='instead: the input path through `train` itself: the demo data as shards, trained with each '
                        'decoder and with synthetic on-device input (images/s per epoch, ratio to synthetic); on a '
                        'CPU also the training loader alone vs bench --data\'s per-core rate x the workers')
    g.add_argument('--train-epochs', type=int, default=3, metavar='N', help='--train-input: epochs per run (default 3)')
    g.add_argument('--train-images-per-class', type=int, default=300, metavar='N',
                   help='--train-input: demo training images per class, 12 classes (default 300)')
    g.add_argument('--train-workers', type=int, default=None, metavar='N',
                   help='--train-input: loader workers (default: the cores less two, at least one)')
    g.add_argument('--decoders', nargs='+', choices=('cpu', 'gpu', 'device'), default=None,
                   help='--train-input: decoders to train with (default cpu gpu on a GPU, cpu device on a CPU)')
    g.add_argument('--skip-loader', action='store_true', help='--train-input: skip the loader-alone measurement')
    g.add_argument('--skip-training', action='store_true', help='--train-input: skip the training runs')
