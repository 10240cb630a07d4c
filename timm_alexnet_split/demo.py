"""``timm-alexnet-split demo`` (what ``make demo`` runs): the main job on the embedded demo data.

1. generate the demo dataset (cached; seconds),
2. train alexnet_split_2 with recipes/demo.yaml into runs/demo (or reuse / resume that run),
3. export the best checkpoint to exports/demo/alexnet_split_2_demo.onnx, verified by onnxruntime,
4. run the kernel tool on that file and on the run's per-epoch conv1 snapshots,
5. print the verdict and the paths.
"""
from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml

from . import run_files as RF
from .atomic import replace_when_done
from .errors import CommandParser, UserError
from .train.rundir import completed_epochs

PROG = 'timm-alexnet-split demo'
RECIPE = Path(__file__).resolve().parent.parent / 'recipes' / 'demo.yaml'
MANIFEST = 'demo.json'
ONNX_NAME = 'alexnet_split_2_demo.onnx'


def _say(msg: str) -> None:
    print(f'[demo] {msg}', flush=True)


def _planned_epochs(run: Path, recipe: Path) -> int:
    for src in (run / RF.ARGS, recipe):
        if src.is_file():
            cfg = yaml.safe_load(src.read_text()) or {}
            if 'epochs' in cfg:
                return int(cfg['epochs'])
    raise UserError(f'cannot tell how many epochs {recipe} trains for')


def _fresh_name(runs: Path, name: str) -> str:
    if not (runs / name).exists():
        return name
    i = 1
    while (runs / f'{name}-{i}').exists():
        i += 1
    return f'{name}-{i}'


def train_or_reuse(recipe: Path, runs: Path, name: str, retrain: bool, extra: List[str]) -> Path:
    """The run folder to use: reuse a complete run, resume an interrupted one, or train a new one."""
    from . import train
    run = runs / name
    if run.exists() and not retrain:
        done, planned = completed_epochs(run), _planned_epochs(run, recipe)
        if done >= planned and (run / RF.BEST).is_file():
            _say(f'reusing the trained run {run} ({done} epochs); pass --retrain to train a new one')
            return run
        if (run / RF.LAST).is_file():
            _say(f'resuming the interrupted run {run} from epoch {done} of {planned}')
            code = train.main(['--resume', str(run / RF.LAST), *extra])
            if code:
                raise UserError(f'training stopped (exit {code}); run `make demo` again to resume')
            return run
    if run.exists():
        name = _fresh_name(runs, name)
        _say(f'{run} is kept as it is; training a new run in {runs / name}')
    run = runs / name
    _say(f'training alexnet_split_2 with {recipe} into {run}')
    code = train.main(['--config', str(recipe), '--output', str(runs), '--experiment', name, *extra])
    if code:
        raise UserError(f'training stopped (exit {code}); run `make demo` again to resume')
    if not (run / RF.BEST).is_file():
        raise UserError(f'training finished but {run / RF.BEST} is missing')
    return run


def _check_exports_dir(out: Path) -> Optional[dict]:
    """exports/demo may hold only what an earlier demo wrote there: never a user's files."""
    if not out.exists():
        return None
    if not out.is_dir():
        raise UserError(f'{out} exists and is not a folder; move it or pass --exports DIR')
    manifest = out / MANIFEST
    if manifest.is_file():
        return json.loads(manifest.read_text())
    if any(out.iterdir()):
        raise UserError(f'{out} holds files the demo did not write; move them or pass --exports DIR')
    return None


def main(argv: Optional[List[str]] = None) -> int:
    parser = CommandParser(
        prog=PROG,
        description='The main job, on the embedded demo data: generate the data (cached), train alexnet_split_2 with '
                    'recipes/demo.yaml into RUNS/demo (a complete run is reused, an interrupted one resumed), export the '
                    'best checkpoint to EXPORTS/alexnet_split_2_demo.onnx (verified with onnxruntime), measure conv1 per '
                    'tower (report.json, kernels.png, chromatic_fraction.png) and its evolution over the epochs '
                    '(evolution/evolution.gif, evolution.png), and print the verdict.',
        epilog='example: timm-alexnet-split demo            (again: reuses the run; --retrain trains a new one)')
    parser.add_argument('--runs', type=Path, default=Path('runs'), help='folder of training runs (default runs)')
    parser.add_argument('--name', default='demo', help='run name (default demo)')
    parser.add_argument('--exports', type=Path, default=Path('exports/demo'), help='outputs (default exports/demo)')
    parser.add_argument('--recipe', type=Path, default=RECIPE, help='training recipe (default recipes/demo.yaml)')
    parser.add_argument('--retrain', action='store_true', help='train a new run even if a complete one exists')
    parser.add_argument('train_options', nargs=argparse.REMAINDER,
                        help='after --: options passed to `timm-alexnet-split train` (e.g. -- --epochs 2)')
    args = parser.parse_args(argv)
    extra = [a for a in args.train_options if a != '--']
    if not args.recipe.is_file():
        raise UserError(f'recipe {args.recipe} not found')
    previous = _check_exports_dir(args.exports)
    t0 = time.time()

    from .data import ensure_demo_data
    _say('demo data: ' + str(ensure_demo_data()))
    run = train_or_reuse(args.recipe, args.runs, args.name, args.retrain, extra)
    t_train = time.time()

    from . import export
    from .kernels import evolution, inspect_file
    if previous:
        _say(f'replacing the previous demo outputs in {args.exports} (from {previous.get("run")})')
    _write_manifest(args.exports, dict(run=str(run), status='writing'))
    onnx_path = args.exports / ONNX_NAME
    _say(f'exporting {run} -> {onnx_path}')
    code = export.main(['--run', str(run), '--output', str(onnx_path), '--force'])
    if code:
        raise UserError(f'export of {run} failed (exit {code})')
    _say('inspecting conv1 of the exported file')
    report = inspect_file(onnx_path, out=args.exports, force=True)
    evo = evolution(run, out=args.exports / 'evolution', force=True, quiet=True)
    files = sorted(str(p.relative_to(args.exports)) for p in args.exports.rglob('*') if p.is_file())
    _write_manifest(args.exports, dict(
        run=str(run), onnx=str(onnx_path), verdict=report['verdict'],
        files=files, train_seconds=round(t_train - t0, 1), total_seconds=round(time.time() - t0, 1)))

    summary = list(csv.DictReader(open(run / RF.SUMMARY, newline='')))
    best = max(float(r['eval_top1']) for r in summary if r.get('eval_top1') not in (None, ''))
    print()
    print(f'validation top-1 (best epoch): {best:.1f}%   run: {run}')
    print(f'measure: {report["measure_label"]}')
    for g in report['groups']:
        freq = 'n/a' if g['frequency_mean'] is None else f'{g["frequency_mean"]:.3f} cycles/px'
        print(f'tower {g["index"]}: mean chromatic fraction {g["mean"]:.3f}, '
              f'{round(g["fraction_above_0_3"] * g["kernels"])} of {g["kernels"]} kernels above 0.3; '
              f'luminance frequency {freq}')
    print(f'verdict: {report["verdict"]}')
    print(f'over training: {evo.get("final_verdict", "")}')
    print(f'files: {onnx_path}  {args.exports / "report.json"}  {args.exports / "kernels.png"}  '
          f'{args.exports / "chromatic_fraction.png"}  {args.exports / "colour_frequency.png"}  '
          f'{args.exports / "evolution" / "evolution.gif"}  '
          f'{args.exports / "evolution" / "evolution.png"}  curves: {run / RF.ACC_PNG} {run / RF.LOSS_PNG}')
    _say(f'done in {time.time() - t0:.0f} s')
    return 0


def _write_manifest(exports: Path, manifest: Dict[str, Any]) -> None:
    """EXPORTS/manifest.json, written atomically (the folder made if missing); an unwritable place is a UserError."""
    with replace_when_done(exports / MANIFEST, True, 'during the demo', make_folder=True) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2))
