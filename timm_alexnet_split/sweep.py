"""``timm-alexnet-split sweep``: is the Figure 3 split real, how often, with how many towers? (issue 11)

Trains the split AlexNet of a recipe with each tower count and seeds 0..k-1, one run per folder
``OUT/towers{N}-seed{S}`` (a complete run is reused, an interrupted one resumed), measures each run's conv1
(the kernel tool on its best, else last, .safetensors: per tower chromatic fraction and luminance frequency, both
permutation tests, the verdict; the latent analysis for one-tower runs; conv1's distance from random), builds the
control for each tower count N >= 2 from the one-tower runs' kernels (random partitions into groups of the towers'
sizes: what "towers don't matter" looks like) and writes OUT/sweep.json, OUT/sweep.csv, OUT/sweep.png and a table.
The effect size is eta squared (between-tower / total sum of squares) of the per-kernel values, for colour (the
kernel tool's chromatic fraction measure) and for frequency. The same command again reuses every run and analysis
and only redraws.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import yaml

from . import run_files as RF
from .atomic import replace_when_done
from .errors import CommandParser, UserError, one_line
from .kernels.files import clean
from .train.rundir import completed_epochs

PROG = 'timm-alexnet-split sweep'
PLAN = 'sweep_plan.json'          # marks OUT as a sweep's folder; the settings every run of it shares
ANALYSIS = 'sweep_analysis.json'  # per run: the measures, cached against the weights they came from
ANALYSIS_VERSION = 2
OUTPUTS = ('sweep.json', 'sweep.csv', 'sweep_rates.csv', 'sweep.png')
ALPHA = 0.05
LEARNED_TOP1 = 90.0  # %: a demo-hard run that learned both cues is at ~99 %, one that knows only the hue at ~25-40 %
# the rule of a split for the split rate, fixed before the runs of seeds 10-19 are analysed (docs/science.md)
SPLIT_RULE = ("colour eta squared above the top of the control's 95% interval (random partitions of the one-tower "
              "runs' kernels into the towers' sizes)")
LEARNED_RULE = 'best validation top-1 >= {:g} %'
PARTITIONS = 1000
CONV1_KERNELS = 96
# options the sweep sets itself for every run: passing them after -- would break the folder layout or the grid
RESERVED = ('--config', '-c', '--output', '--experiment', '--seed', '--resume', '--num-towers')
AXES = (('colour', 'effect_size', 'p_value', 'chromatic fraction'),
        ('frequency', 'frequency_effect_size', 'frequency_p_value', 'luminance frequency'))


def _say(msg: str) -> None:
    print(f'[sweep] {msg}', flush=True)


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f'{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}' if seconds >= 3600 else \
        f'{seconds // 60}:{seconds % 60:02d}'


# ---- the plan: options, the output folder, the runs ------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = CommandParser(
        prog=PROG,
        description='Train the split AlexNet of a recipe with each tower count and seeds 0..k-1 (OUT/towers{N}-seed{S}; '
                    'complete runs reused, interrupted ones resumed), measure every run\'s conv1 (colour and frequency '
                    'per tower, permutation tests, eta squared; the latent analysis of one-tower runs; distance from '
                    'random), compare each tower count with random partitions of the one-tower runs\' kernels (the '
                    'control), and write OUT/sweep.json, sweep.csv, sweep.png and a table. Run the same command again '
                    'to add runs or redraw.',
        epilog='example: timm-alexnet-split sweep --recipe recipes/demo_hard.yaml --towers 1 2 3 4 --seeds 3 '
               '--out runs/sweep -- --epochs 8')
    p.add_argument('--recipe', type=Path, required=True, help='training recipe (YAML of train options)')
    p.add_argument('--towers', type=int, nargs='+', default=[1, 2, 3, 4], metavar='N',
                   help='tower counts (default 1 2 3 4; include 1: the control is built from the one-tower runs)')
    p.add_argument('--seeds', type=int, default=3, metavar='K', help='seeds 0..K-1 per tower count (default 3)')
    p.add_argument('--first-seed', type=int, default=0, metavar='F',
                   help='start the seeds at F: seeds F..F+K-1 (default 0); lets several processes share one sweep '
                        'folder, each training its own seeds, before one --no-train pass over all of them')
    p.add_argument('--out', type=Path, default=Path('runs/sweep'), help='sweep folder (default runs/sweep)')
    p.add_argument('--partitions', type=int, default=PARTITIONS,
                   help=f'random partitions per control (default {PARTITIONS}, at least {PARTITIONS})')
    p.add_argument('--alpha', type=float, default=ALPHA, help=f'significance level of a split (default {ALPHA})')
    p.add_argument('--learned-top1', type=float, default=LEARNED_TOP1, metavar='PCT',
                   help=f'a run "learned" when its best validation top-1 is at least PCT %% (default {LEARNED_TOP1:g}); '
                        'the split rate is reported over all runs and over the runs that learned')
    p.add_argument('--no-train', action='store_true',
                   help='train nothing: measure and draw the runs already there (missing runs are listed)')
    p.add_argument('--keep-checkpoints', action='store_true',
                   help='keep each run\'s training checkpoints (*.pth.tar, last.safetensors: ~1.1 GB a run at the '
                        'paper\'s widths); by default a run this sweep trains to the end keeps its best weights '
                        '(model_best.safetensors: what the sweep measures, and validate, export and kernels read), '
                        'its conv1 snapshots and summaries')
    p.add_argument('train_options', nargs=argparse.REMAINDER,
                   help='after --: options passed to `timm-alexnet-split train` for every run (e.g. -- --epochs 8)')
    return p


def check_args(args: argparse.Namespace) -> Tuple[List[int], List[str]]:
    """The tower counts in order and the train options, or a UserError."""
    from .model import MAX_TOWERS
    if not args.recipe.is_file():
        raise UserError(f'recipe {args.recipe} not found')
    towers = list(dict.fromkeys(args.towers))
    bad = [n for n in towers if not 1 <= n <= MAX_TOWERS]
    if bad:
        raise UserError(f'--towers must be from 1 to {MAX_TOWERS} (conv1 has {MAX_TOWERS} kernels), got {bad}')
    if args.seeds < 1:
        raise UserError(f'--seeds must be >= 1, got {args.seeds}')
    if args.first_seed < 0:
        raise UserError(f'--first-seed must be >= 0, got {args.first_seed}')
    if args.partitions < PARTITIONS:
        raise UserError(f'--partitions must be at least {PARTITIONS}, got {args.partitions}')
    if not 0 < args.alpha < 1:
        raise UserError(f'--alpha must be between 0 and 1, got {args.alpha}')
    if not 0 <= args.learned_top1 <= 100:
        raise UserError(f'--learned-top1 is a top-1 in %, from 0 to 100, got {args.learned_top1:g}')
    extra = list(args.train_options)
    if extra and extra[0] == '--':
        extra = extra[1:]
    taken = [a for a in extra if a.split('=', 1)[0] in RESERVED]
    if taken:
        raise UserError(f'the sweep sets {", ".join(sorted(set(a.split("=", 1)[0] for a in taken)))} for each run; '
                        'leave it out of the train options')
    return towers, extra


def read_recipe(path: Path) -> Dict[str, Any]:
    try:
        cfg = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise UserError(f'cannot read the recipe {path}: {str(e).splitlines()[0]}') from None
    if not isinstance(cfg, dict):
        raise UserError(f'recipe {path} must be a mapping of option: value')
    return cfg


def split_model_kwargs(extra: Sequence[str]) -> Tuple[List[str], List[str]]:
    """(train options without --model-kwargs, the key=value items that followed --model-kwargs)."""
    rest: List[str] = []
    kwargs: List[str] = []
    taking = False
    for a in extra:
        if a == '--model-kwargs':
            taking = True
        elif taking and not a.startswith('-'):
            kwargs.append(a)
        else:
            taking = False
            rest.append(a)
    for item in kwargs:
        if '=' not in item:
            raise UserError(f'--model-kwargs takes key=value items, got {item!r}')
    return rest, kwargs


def model_kwargs(recipe: Dict[str, Any], user: Sequence[str], towers: int) -> List[str]:
    """The recipe's model_kwargs, then the user's, then num_towers: key=value items for --model-kwargs."""
    merged = {str(k): repr(v) for k, v in (recipe.get('model_kwargs') or {}).items()}
    for item in user:
        key, value = item.split('=', 1)
        merged[key] = value
    merged['num_towers'] = str(towers)
    return [f'{k}={v}' for k, v in merged.items()]


def check_out(out: Path, plan: Dict[str, Any]) -> None:
    """OUT is new, empty, or a sweep of the same recipe and options; never another's folder (a one-line UserError)."""
    if out.exists() and not out.is_dir():
        raise UserError(f'{out} exists and is not a folder; pass another --out')
    marker = out / PLAN
    if marker.is_file():
        try:
            old = json.loads(marker.read_text())
        except (OSError, ValueError) as e:
            raise UserError(f'{marker} is not readable ({e}); move it or pass another --out') from None
        for key in ('recipe_sha256', 'train_options'):
            if old.get(key) != plan[key]:
                what = 'a different recipe' if key == 'recipe_sha256' else 'different train options'
                raise UserError(f'{out} holds a sweep made with {what} ({old.get(key)!r}); '
                                f'pass another --out (runs of different settings are not mixed)')
        return
    if out.is_dir() and any(out.iterdir()):
        raise UserError(f'{out} holds files a sweep did not write; move them or pass another --out')
    try:
        out.mkdir(parents=True, exist_ok=True)
        _write_text(marker, json.dumps(plan, indent=2))
    except OSError as e:
        raise UserError(f'cannot write to {out}: {e.strerror or e}') from None


def _write_text(path: Path, text: str) -> None:
    with replace_when_done(path, True, 'while the sweep wrote it') as tmp:  # per-process temporary name
        tmp.write_text(text)


def run_name(towers: int, seed: int) -> str:
    return f'towers{towers}-seed{seed}'


# ---- training: reuse, resume or train ---------------------------------------------------------------------------------

def _planned_epochs(run: Path) -> Optional[int]:
    args = run / RF.ARGS
    if args.is_file():
        cfg = yaml.safe_load(args.read_text()) or {}
        if 'epochs' in cfg:
            return int(cfg['epochs'])
    return None


def run_state(run: Path) -> str:
    """'missing', 'complete', 'resumable' (a last checkpoint) or 'stale' (started, nothing to resume from).

    A complete run whose weights were removed after it was measured (its ``sweep_analysis.json`` kept, as in
    scripts/gpu_sweep.sh's runs archive) is still complete: it is reported from that analysis."""
    if not run.exists():
        return 'missing'
    planned = _planned_epochs(run)
    has_weights = (run / RF.BEST_WEIGHTS).is_file() or (run / RF.LAST_WEIGHTS).is_file() \
        or _trimmed_analysis(run) is not None
    if planned is not None and completed_epochs(run) >= planned and has_weights:
        return 'complete'
    return 'resumable' if (run / RF.LAST).is_file() else 'stale'


def _set_aside(run: Path) -> Path:
    """Move a run that stopped before its first checkpoint out of the way (kept, never deleted)."""
    i = 1
    while (aside := run.with_name(f'{run.name}.stopped-{i}')).exists():
        i += 1
    run.rename(aside)
    return aside


def train_run(out: Path, name: str, argv: List[str]) -> None:
    """Train (or resume) the run ``out/name`` with the train options ``argv``; a UserError if training fails."""
    from . import train
    run = out / name
    state = run_state(run)
    if state == 'stale':
        _say(f'{run} stopped before its first checkpoint: kept as {_set_aside(run)}; training it afresh')
        state = 'missing'
    if state == 'resumable':
        _say(f'resuming {run} from epoch {completed_epochs(run)}')
        argv = [*argv, '--resume', str(run / RF.LAST)]
    code = train.main(argv)
    if code:
        raise UserError(f'training {run} stopped (exit {code}); run the same sweep command again to resume')
    if run_state(run) != 'complete':
        raise UserError(f'training {run} ended without a complete run (no weights or fewer epochs than planned)')


def drop_checkpoints(run: Path) -> int:
    """Remove a complete run's training checkpoints (last, best, numbered) and last.safetensors, keeping
    model_best.safetensors (the weights the sweep measures); bytes freed. A run without those weights, or not
    complete, keeps everything."""
    if run_state(run) != 'complete' or not (run / RF.BEST_WEIGHTS).is_file():
        return 0
    freed = 0
    for path in [run / RF.LAST, run / RF.BEST, run / RF.LAST_WEIGHTS, *run.glob(RF.NUMBERED_GLOB)]:
        if path.is_file():
            freed += path.stat().st_size
            path.unlink()
    return freed


def _record_wall(run: Path, seconds: float) -> None:
    path = run / 'sweep_wall.json'
    before = json.loads(path.read_text()).get('train_seconds', 0.0) if path.is_file() else 0.0
    _write_text(path, json.dumps({'train_seconds': round(before + seconds, 1)}))


def _wall(run: Path) -> Optional[float]:
    path = run / 'sweep_wall.json'
    return json.loads(path.read_text()).get('train_seconds') if path.is_file() else None


# ---- measuring one run ------------------------------------------------------------------------------------------------

def _trimmed_analysis(run: Path) -> Optional[Dict[str, Any]]:
    """The cached analysis of a run with no weights left (the weights removed after measuring), else None."""
    if any((run / n).is_file() for n in (RF.BEST_WEIGHTS, RF.LAST_WEIGHTS)):
        return None
    try:
        cached = json.loads((run / ANALYSIS).read_text())
    except (OSError, ValueError):
        return None
    return cached if (cached.get('key') or {}).get('version') == ANALYSIS_VERSION else None


def weights_file(run: Path) -> Path:
    for name in (RF.BEST_WEIGHTS, RF.LAST_WEIGHTS):
        if (run / name).is_file():
            return run / name
    raise UserError(f'{run} has no model_best.safetensors or last.safetensors to measure')


def _finite(v: Any) -> np.ndarray:
    a = np.asarray(v, np.float64)
    return a[np.isfinite(a)]


def _eta(groups: Sequence[np.ndarray]) -> Optional[float]:
    from .kernels.control import eta_squared
    groups = [_finite(g) for g in groups]
    if len(groups) < 2 or min(len(g) for g in groups) < 1:
        return None
    e = eta_squared(groups)
    return None if math.isnan(e) else e


def best_top1(run: Path) -> Optional[float]:
    with open(run / RF.SUMMARY, newline='') as f:
        vals = [float(r['eval_top1']) for r in csv.DictReader(f) if r.get('eval_top1') not in (None, '')]
    return max(vals) if vals else None


def _latent_entry(latent: Dict[str, Any]) -> Dict[str, Any]:
    """The latent analysis of a one-tower run, in short: its summary line and the first centred component."""
    if not latent.get('applicable'):
        return {'applicable': False, 'summary': latent.get('summary')}
    c = latent['centred'][0]
    split = latent.get('split') or {}
    return {'applicable': True, 'summary': latent['summary'], 'share': c['share'],
            'spearman_chromatic': c['spearman_chromatic'], 'p_chromatic': c['p_chromatic'],
            'spearman_frequency': c['spearman_frequency'], 'p_frequency': c['p_frequency'],
            'split_groups': split.get('groups'), 'split_means': split.get('means'), 'split_p_value': split.get('p_value')}


def analyse_run(run: Path) -> Dict[str, Any]:
    """The kernel tool on the run's best (else last) weights, eta squared per axis, conv1's distance from random.

    Cached in ``run/sweep_analysis.json`` against the weights file's size and time; the per-kernel values (for the
    control) are kept there too.
    """
    from .kernels import KernelsError, control, inspect_file, read_first_layer
    trimmed = _trimmed_analysis(run)
    if trimmed is not None:
        return trimmed
    weights = weights_file(run)
    st = weights.stat()
    key = {'version': ANALYSIS_VERSION, 'weights': weights.name, 'size': st.st_size, 'mtime_ns': st.st_mtime_ns}
    cache = run / ANALYSIS
    if cache.is_file():
        try:
            cached = json.loads(cache.read_text())
            if cached.get('key') == key:
                return cached
        except (OSError, ValueError):
            pass
    try:
        report = inspect_file(weights, out=run / 'kernels', force=True, quiet=True)
        w = np.concatenate(read_first_layer(weights).groups)
    except KernelsError as e:
        raise UserError(f'measuring {weights}: {e}') from None
    w0_path = RF.snapshot_path(run, 0)
    w0 = np.load(w0_path) if w0_path.is_file() else None
    if w0 is not None and w0.shape != w.shape:
        w0 = None
    groups = report['groups']
    cfs = [np.asarray(g['chromatic_fraction'], np.float64) for g in groups]
    freqs = [np.asarray(g['luminance_frequency'], np.float64) for g in groups]
    result = {
        'key': key, 'weights': str(weights), 'measure': report['measure'], 'measure_label': report['measure_label'],
        'towers': len(groups), 'kernels_per_tower': [g['kernels'] for g in groups],
        'chromatic_fraction': [float(np.nanmean(c)) for c in cfs],
        'frequency': [None if not len(_finite(f)) else float(np.nanmean(f)) for f in freqs],
        'p_value': report.get('p_value'), 'frequency_p_value': report.get('frequency_p_value'),
        'effect_size': _eta(cfs), 'frequency_effect_size': _eta(freqs), 'verdict': report['verdict'],
        'latent': _latent_entry(report['latent']) if len(groups) == 1 else None,
        'init': _init_tests(w0, [g['kernels'] for g in groups], report['measure']) if w0 is not None else None,
        'conv1_from_random': clean(control.conv1_from_random(w, w0)),
        'w0': str(w0_path) if w0 is not None else None,
        'values': {'chromatic_fraction': np.concatenate(cfs).tolist(), 'frequency': np.concatenate(freqs).tolist()},
    }
    _write_text(cache, json.dumps(clean(result), indent=1, allow_nan=True))
    return json.loads(cache.read_text())


def _init_tests(w0: np.ndarray, counts: Sequence[int], measure: str) -> Optional[Dict[str, Any]]:
    """The same tests on the initial kernels (conv1/epoch_0000.npy): how different the towers were before training.

    Towers of independent random kernels differ at p < alpha on an axis in about alpha of the runs; after short
    training conv1 is still close to its initialisation, so a "split" may be one the towers started with.
    """
    from .kernels.compare import compare_values
    from .kernels.measures import chromatic_measures, luminance_orientation_frequency
    if len(counts) < 2:
        return None
    edges = np.cumsum([0, *counts])
    towers = [w0[a:b] for a, b in zip(edges[:-1], edges[1:])]
    cfs = [chromatic_measures(t, None)[measure] for t in towers]
    freqs = [luminance_orientation_frequency(t)[1] for t in towers]
    colour, freq = compare_values(cfs), compare_values(freqs)
    return {'p_value': colour['p_value'], 'frequency_p_value': freq['p_value'], 'effect_size': _eta(cfs),
            'frequency_effect_size': _eta(freqs)}


def start_order(run: Path, analysis: Dict[str, Any]) -> Dict[str, Any]:
    """Which tower ended greyest, and where it stood at the start: each tower's mean chromatic fraction on the
    initial kernels (``run/conv1/epoch_0000.npy``, the run's measure) and the rank there of the tower with the lowest
    mean at the end (1 = the most chromatic at the start). The paper's split is "independent of the initialisation,
    modulo a renumbering of the GPUs": this asks whether the initial kernels decide the numbering. Empty for one
    tower, no W0, a mean that is not finite, or a tie for the greyest at the end (no rank to give)."""
    from .kernels.measures import chromatic_measures
    counts, w0_path = analysis.get('kernels_per_tower') or [], RF.snapshot_path(run, 0)
    if len(counts) < 2 or not w0_path.is_file():
        return {}
    w0 = np.load(w0_path)
    if w0.shape[0] != sum(counts):
        return {}
    edges = np.cumsum([0, *counts])
    values = [chromatic_measures(w0[a:b], None)[analysis['measure']] for a, b in zip(edges[:-1], edges[1:])]
    start = [float(np.mean(v[np.isfinite(v)])) if np.isfinite(v).any() else float('nan') for v in values]
    end = [np.nan if v is None else float(v) for v in analysis['chromatic_fraction']]
    if not (np.isfinite(start).all() and np.isfinite(end).all()) or end.count(min(end)) > 1:
        return {}
    greyest = end.index(min(end))
    rank = 1 + sum(1 for v in start if v > start[greyest])
    return {'init_chromatic_fraction': start, 'greyest_tower_start_rank': rank}


# ---- the control and the summary -------------------------------------------------------------------------------------

def controls(runs: Sequence[Dict[str, Any]], towers: Sequence[int], partitions: int) -> Dict[int, Dict[str, Any]]:
    """Per tower count N >= 2: the control on each axis from the one-tower runs' kernels (None without such runs)."""
    from .kernels.control import partition_control
    from .model import tower_widths
    singles = [r for r in runs if r['towers'] == 1]
    out: Dict[int, Dict[str, Any]] = {}
    for n in towers:
        if n < 2:
            continue
        entry: Dict[str, Any] = {}
        for axis, field in (('colour', 'chromatic_fraction'), ('frequency', 'frequency')):
            values = [np.asarray([np.nan if v is None else v for v in r['values'][field]], np.float64) for r in singles]
            usable = [v for v in values if np.isfinite(v).all() and len(v) == CONV1_KERNELS]
            if not usable:
                entry[axis] = None
                continue
            c = partition_control(usable, tower_widths(CONV1_KERNELS, n), partitions=partitions, seed=n)
            entry[axis] = dict(mean=c['mean'], low=c['low'], high=c['high'], partitions=partitions,
                               one_tower_runs=len(usable))
        out[n] = entry
    return out


def mark_runs(runs: Sequence[Dict[str, Any]], ctrl: Dict[int, Dict[str, Any]], learned_top1: float) -> None:
    """Set each run's ``learned`` (best validation top-1 >= learned_top1; None without a top-1) and, for N >= 2,
    ``colour_beyond_control`` (the split rule, SPLIT_RULE; None without a control or an effect size)."""
    for r in runs:
        top1 = r.get('val_top1')
        r['learned'] = None if top1 is None else bool(top1 >= learned_top1)
        if r['towers'] < 2:
            continue
        c = (ctrl.get(r['towers']) or {}).get('colour')
        e = r.get('effect_size')
        r['colour_beyond_control'] = None if c is None or e is None else bool(e > c['high'])


def learned_share(mine: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """x of n runs that learned (``mark_runs``), with intervals; a run without a validation top-1 is not in n."""
    from .proportions import proportion
    judged = [r for r in mine if r.get('learned') is not None]
    return proportion(sum(1 for r in judged if r['learned']), len(judged))


def split_rates(mine: Sequence[Dict[str, Any]], towers: int) -> Dict[str, Any]:
    """The split rate of one tower count over all its runs and over those that learned, each x of n with its Wilson
    and Clopper-Pearson 95% intervals; runs the rule cannot judge (no control) are left out of n and counted; the
    pre-registered start-order test over the learned runs with a rank (H0: rank 1 with probability 1 / towers)."""
    from .proportions import proportion, start_rank_test
    judged = [r for r in mine if r.get('colour_beyond_control') is not None]
    learned = [r for r in judged if r.get('learned')]
    ranked = [r['greyest_tower_start_rank'] for r in mine if r.get('learned') and r.get('greyest_tower_start_rank')]
    return {
        'rule': SPLIT_RULE, 'not_judged': len(mine) - len(judged),
        'all': proportion(sum(1 for r in judged if r['colour_beyond_control']), len(judged)),
        'learned': proportion(sum(1 for r in learned if r['colour_beyond_control']), len(learned)),
        'start_order_test': start_rank_test(ranked, towers)}


def summarise(runs: Sequence[Dict[str, Any]], towers: Sequence[int], ctrl: Dict[int, Dict[str, Any]],
              alpha: float) -> List[Dict[str, Any]]:
    """Per tower count: runs, the runs that learned (``mark_runs`` first), split runs (p < alpha on either axis), the
    split rate beyond the control with its intervals, effect sizes with bootstrap intervals, control."""
    from .kernels.control import bootstrap_mean
    rows = []
    for n in towers:
        mine = [r for r in runs if r['towers'] == n]
        row: Dict[str, Any] = {'towers': n, 'runs': len(mine)}
        row['learned_runs'] = learned_share(mine)
        if n >= 2:
            row['split_rate'] = split_rates(mine, n)
            row['split_runs'] = sum(1 for r in mine if is_split(r, alpha))
            row['split_at_init_runs'] = sum(1 for r in mine if r.get('init') and is_split(r['init'], alpha))
            ranks = [r['greyest_tower_start_rank'] for r in mine if r.get('greyest_tower_start_rank')]
            row['greyest_tower_start_ranks'] = {str(k): ranks.count(k) for k in range(1, n + 1)}
            for axis, field, pfield, _ in AXES:
                vals = [r[field] for r in mine if r[field] is not None]
                c = (ctrl.get(n) or {}).get(axis)
                row[axis] = {
                    'split_runs': sum(1 for r in mine if r[pfield] is not None and r[pfield] < alpha),
                    'effect_size': bootstrap_mean(vals) if vals else None,
                    'above_control': None if c is None else sum(1 for v in vals if v > c['high']),
                    'control': c}
        rows.append(clean(row))
    return rows


def is_split(run: Dict[str, Any], alpha: float) -> bool:
    return any(run[p] is not None and run[p] < alpha for _, _, p, _ in AXES)


# ---- outputs ----------------------------------------------------------------------------------------------------------

CSV_FIELDS = ['towers', 'seed', 'run', 'val_top1', 'train_seconds', 'measure', 'chromatic_fraction', 'frequency',
              'p_value', 'frequency_p_value', 'effect_size', 'frequency_effect_size', 'split', 'verdict',
              'learned', 'colour_beyond_control',
              'init_p_value', 'init_frequency_p_value', 'init_chromatic_fraction', 'greyest_tower_start_rank',
              'conv1_chromatic_mean', 'conv1_grey_share', 'conv1_lowpass_chromatic_mean', 'conv1_low_frequency_share',
              'conv1_relative_change', 'latent']


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return ''
    if isinstance(v, bool):
        return 'yes' if v else 'no'
    if isinstance(v, float):
        return f'{v:.{digits}g}'
    if isinstance(v, list):
        return ';'.join(_fmt(x) for x in v)
    return str(v)


def csv_row(r: Dict[str, Any], alpha: float) -> Dict[str, str]:
    far = r['conv1_from_random']
    row = {k: _fmt(r.get(k)) for k in CSV_FIELDS}
    init = r.get('init') or {}
    row.update(split='yes' if is_split(r, alpha) else 'no', init_p_value=_fmt(init.get('p_value')),
               init_frequency_p_value=_fmt(init.get('frequency_p_value')),
               conv1_chromatic_mean=_fmt(far['chromatic'].get('mean')),
               conv1_grey_share=_fmt(far['chromatic'].get('below_0_3')),
               conv1_lowpass_chromatic_mean=_fmt(far['chromatic_lowpass'].get('mean')),
               conv1_low_frequency_share=_fmt(far['low_frequency_share'].get('mean')),
               conv1_relative_change=_fmt(far.get('relative_change')),
               latent=(r['latent'] or {}).get('summary') or '')
    return row


RATE_FIELDS = ['towers', 'runs', 'population', 'split', 'of', 'rate', 'wilson_low', 'wilson_high', 'clopper_pearson_low',
               'clopper_pearson_high', 'not_judged', 'start_rank1', 'start_ranked', 'start_null_probability',
               'start_p_value', 'learned_rule', 'split_rule']


def rate_rows(summary: Sequence[Dict[str, Any]], learned_top1: float) -> List[Dict[str, str]]:
    """sweep_rates.csv: per tower count N >= 2, one row for all runs and one for the runs that learned: the split
    count, its rate and 95% intervals (empty when no run is in the population: no rate, never 0), the start-order
    test (on the learned runs' row)."""
    rows = []
    for s in summary:
        rate = s.get('split_rate')
        if not rate:
            continue
        for population in ('all', 'learned'):
            p = rate[population]
            w, cp = p['wilson'] or [None, None], p['clopper_pearson'] or [None, None]
            row = dict(towers=s['towers'], runs=s['runs'], population=population, split=p['x'], of=p['n'],
                       rate=_fmt(p['estimate']), wilson_low=_fmt(w[0]), wilson_high=_fmt(w[1]),
                       clopper_pearson_low=_fmt(cp[0]), clopper_pearson_high=_fmt(cp[1]), not_judged=rate['not_judged'],
                       learned_rule=LEARNED_RULE.format(learned_top1) if population == 'learned' else '',
                       split_rule=rate['rule'])
            if population == 'learned':
                t = rate['start_order_test']
                row.update(start_rank1=t['rank1'], start_ranked=t['n'], start_null_probability=_fmt(t['null_probability']),
                           start_p_value=_fmt(t['p_value']))
            rows.append({k: str(row.get(k, '')) for k in RATE_FIELDS})
    return rows


def _write_csv(path: Path, fields: Sequence[str], rows: Sequence[Dict[str, str]]) -> None:
    with replace_when_done(path, True, 'while the sweep wrote it') as tmp, open(tmp, 'w', newline='') as f:
        w = csv.DictWriter(f, fieldnames=list(fields))
        w.writeheader()
        w.writerows(rows)


def write_outputs(out: Path, plan: Dict[str, Any], runs: List[Dict[str, Any]], summary: List[Dict[str, Any]],
                  alpha: float, missing: List[str], learned_top1: float = LEARNED_TOP1) -> None:
    public = [{k: v for k, v in r.items() if k not in ('values', 'key')} for r in runs]
    doc = {'recipe': plan['recipe'], 'train_options': plan['train_options'], 'alpha': alpha,
           'learned_top1': learned_top1, 'learned_rule': LEARNED_RULE.format(learned_top1), 'split_rule': SPLIT_RULE,
           'start_order_rule': 'among the runs that learned: the tower that ended greyest started the most chromatic '
                               '(rank 1); H0: rank 1 with probability 1/N for N towers; one-sided binomial p',
           'interval_level': 0.95,
           'effect_size': 'eta squared (between-tower / total sum of squares) of the per-kernel values',
           'measure': runs[0]['measure_label'] if runs else None, 'missing_runs': missing,
           'runs': public, 'summary': summary}
    _write_text(out / 'sweep.json', json.dumps(clean(doc), indent=2))
    _write_csv(out / 'sweep.csv', CSV_FIELDS, [csv_row(r, alpha) for r in runs])
    _write_csv(out / 'sweep_rates.csv', RATE_FIELDS, rate_rows(summary, learned_top1))
    from .sweep_figure import plot_sweep
    plot_sweep(runs, summary, out / 'sweep.png', f'{Path(plan["recipe"]).name} {" ".join(plan["train_options"])}',
               alpha, learned_top1)


def _eta_text(v: Optional[float]) -> str:
    return '' if v is None else f'{v:.3f}'


def _init_text(init: Optional[Dict[str, Any]]) -> str:
    return '' if not init else f'{_fmt(init["p_value"], 2)}, {_fmt(init["frequency_p_value"], 2)}'


def rate_text(p: Dict[str, Any]) -> str:
    """'7 of 9 = 78% [Wilson 45-94%; Clopper-Pearson 40-97%]', or 'no run' when n = 0 (never 0 of 0 as 0%)."""
    if not p['n']:
        return 'no run'
    (wl, wh), (cl, ch) = p['wilson'], p['clopper_pearson']
    return (f'{p["x"]} of {p["n"]} = {100 * p["estimate"]:.0f}% [95%: Wilson {100 * wl:.0f}-{100 * wh:.0f}%; '
            f'Clopper-Pearson {100 * cl:.0f}-{100 * ch:.0f}%]')


def _start_text(t: Dict[str, Any]) -> str:
    if not t['n']:
        return 'start order (pre-registered rule): no learned run with a rank, nothing tested'
    return (f'start order (pre-registered rule, learned runs): the greyest tower started the most chromatic in {t["rank1"]} '
            f'of {t["n"]} (H0: 1 in {round(1 / t["null_probability"])}), one-sided binomial p = {_fmt(t["p_value"], 3)}')


def print_rates(summary: List[Dict[str, Any]], learned_top1: float) -> None:
    """The split rate per tower count over all runs and over the runs that learned, with the rules stated."""
    print()
    print(f'split rate (a split: {SPLIT_RULE}); learned: {LEARNED_RULE.format(learned_top1)}')
    for s in summary:
        learned = s['learned_runs']
        head = f'  {s["towers"]} tower{"s" if s["towers"] > 1 else ""}: learned {rate_text(learned)}'
        rate = s.get('split_rate')
        if not rate:
            print(head)
            continue
        if rate['learned']['n']:
            among = rate_text(rate['learned'])
        elif learned['n']:
            among = f'no run learned (top-1 >= {learned_top1:g} %): no split rate among learned runs'
        else:
            among = 'no run with a validation top-1' if s['runs'] else 'no run'
        unjudged = f' ({rate["not_judged"]} run(s) without a control, not judged)' if rate['not_judged'] else ''
        print(f'{head}\n      split, all runs: {rate_text(rate["all"])}{unjudged}\n'
              f'      split, runs that learned: {among}\n      {_start_text(rate["start_order_test"])}')


def print_table(runs: List[Dict[str, Any]], summary: List[Dict[str, Any]], alpha: float) -> None:
    print()
    print(f'{"run":<18}{"top-1":>7}  {"chromatic fraction per tower":<30}{"p":>8}{"eta2":>7}  '
          f'{"frequency per tower":<30}{"p":>8}{"eta2":>7}  split  beyond  learned  p at init (colour, frequency)')
    for r in runs:
        cf = ' '.join(f'{v:.3f}' for v in r['chromatic_fraction'])
        fr = ' '.join('n/a' if v is None else f'{v:.3f}' for v in r['frequency'])
        split = 'yes' if is_split(r, alpha) else 'no' if r['towers'] > 1 else '-'
        beyond = '-' if r['towers'] < 2 else _fmt(r.get('colour_beyond_control')) or 'n/a'
        learned = _fmt(r.get('learned')) or 'n/a'
        print(f'{r["run"]:<18}{_fmt(r["val_top1"], 3):>7}  {cf:<30}{_fmt(r["p_value"], 2):>8}'
              f'{_eta_text(r["effect_size"]):>7}  {fr:<30}{_fmt(r["frequency_p_value"], 2):>8}'
              f'{_eta_text(r["frequency_effect_size"]):>7}  {split:<5}  {beyond:<6}  {learned:<7}'
              f'  {_init_text(r.get("init"))}')
    print()
    print('beyond: colour eta squared above the control\'s 95% interval (the split rule of the rate below)')
    print(f'per tower count (split: p < {alpha:g} on either axis; effect size eta squared, mean [95% bootstrap]; '
          'control: random partitions of the one-tower runs\' kernels, mean [95%])')
    for s in summary:
        if s['towers'] < 2:
            print(f'  1 tower: {s["runs"]} run(s) (the control\'s kernels)')
            continue
        parts = [f'  {s["towers"]} towers: {s["split_runs"]} of {s["runs"]} runs split '
                 f'({s["split_at_init_runs"]} already at initialisation)']
        for axis, *_ in AXES:
            a = s[axis]
            e, c = a['effect_size'], a['control']
            eff = 'n/a' if e is None else f'{e["mean"]:.3f} [{e["low"]:.3f}, {e["high"]:.3f}]'
            con = 'no one-tower runs' if c is None else (f'{c["mean"]:.3f} [{c["low"]:.3f}, {c["high"]:.3f}], '
                                                          f'{a["above_control"]} run(s) above')
            parts.append(f'{axis} {eff} vs control {con}')
        ranks = s.get('greyest_tower_start_ranks') or {}
        if any(ranks.values()):
            parts.append('the greyest tower at the end ranked ' + ', '.join(f'{k}: {v}' for k, v in ranks.items())
                         + ' by chromatic fraction at the start (1 = most chromatic)')
        print('; '.join(parts))


# ---- the command ------------------------------------------------------------------------------------------------------

def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    towers, extra = check_args(args)
    recipe_cfg = read_recipe(args.recipe)
    rest, user_kwargs = split_model_kwargs(extra)
    plan = {'recipe': str(args.recipe), 'recipe_sha256': hashlib.sha256(args.recipe.read_bytes()).hexdigest(),
            'train_options': extra}
    check_out(args.out, plan)
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    grid = [(n, s) for s in seeds for n in towers]  # seed by seed: a partial sweep has every tower count
    t0 = time.time()
    trained_seconds: List[float] = []
    missing: List[str] = []
    for i, (n, s) in enumerate(grid, 1):
        name = run_name(n, s)
        run = args.out / name
        state = run_state(run)
        left = sum(1 for m, k in grid[i - 1:] if run_state(args.out / run_name(m, k)) != 'complete')
        est = f', about {_clock(left * sum(trained_seconds) / len(trained_seconds))} left' if trained_seconds else ''
        _say(f'run {i} of {len(grid)}: {name} ({state}); elapsed {_clock(time.time() - t0)}{est}')
        if state == 'complete':
            continue
        if args.no_train:
            missing.append(name)
            continue
        argv_run = ['--config', str(args.recipe), '--output', str(args.out), '--experiment', name, *rest,
                    '--model-kwargs', *model_kwargs(recipe_cfg, user_kwargs, n), '--seed', str(s)]
        t_run = time.time()
        train_run(args.out, name, argv_run)
        trained_seconds.append(time.time() - t_run)
        _record_wall(run, trained_seconds[-1])
        if not args.keep_checkpoints:
            drop_checkpoints(run)
    runs = []
    for n, s in sorted(grid):
        run = args.out / run_name(n, s)
        if run_state(run) != 'complete':
            if run_name(n, s) not in missing:
                missing.append(run_name(n, s))
            continue
        a = analyse_run(run)
        runs.append({'towers': n, 'seed': s, 'run': run_name(n, s), 'val_top1': best_top1(run),
                     'train_seconds': _wall(run), **{k: v for k, v in a.items() if k != 'towers'}, **start_order(run, a)})
    if missing:
        print(f'{PROG}: warning: {len(missing)} run(s) missing, left out of the outputs: {", ".join(missing)}',
              file=sys.stderr)
    if not runs:
        raise UserError(f'no complete run in {args.out}: nothing to measure')
    if 1 not in {r['towers'] for r in runs}:
        print(f'{PROG}: warning: no one-tower run: no control (add 1 to --towers)', file=sys.stderr)
    ctrl = controls(runs, towers, args.partitions)
    mark_runs(runs, ctrl, args.learned_top1)
    summary = summarise(runs, towers, ctrl, args.alpha)
    write_outputs(args.out, plan, runs, summary, args.alpha, missing, args.learned_top1)
    print_table(runs, summary, args.alpha)
    print_rates(summary, args.learned_top1)
    _say(f'files: {", ".join(str(args.out / f) for f in OUTPUTS)}; done in {_clock(time.time() - t0)}')
    return 0


# ---- dose-response: the same sweep at several epoch counts -------------------------------------------------------------

DOSE_FIELDS = ['epochs', 'towers', 'runs', 'learned', 'split_all', 'split_all_wilson_low', 'split_all_wilson_high',
               'split_learned', 'split_learned_wilson_low', 'split_learned_wilson_high', 'top1_mean',
               'conv1_change_mean', 'conv1_change_min', 'conv1_change_max', 'colour_eta2_mean', 'sweep']


def sweep_epochs(doc: Dict[str, Any]) -> Optional[int]:
    """The epochs a sweep.json's runs trained for: its train options' --epochs, else its recipe's (None if unknown)."""
    opts = list(doc.get('train_options') or [])
    for i, a in enumerate(opts):
        if a == '--epochs' and i + 1 < len(opts):
            return int(opts[i + 1])
        if a.startswith('--epochs='):
            return int(a.split('=', 1)[1])
    recipe = Path(doc.get('recipe') or '')
    if recipe.is_file():
        epochs = (yaml.safe_load(recipe.read_text()) or {}).get('epochs')
        return None if epochs is None else int(epochs)
    return None


def _mean(values: Sequence[float]) -> Optional[float]:
    return float(np.mean(values)) if len(values) else None


def dose_rows(docs: Sequence[Tuple[str, Dict[str, Any]]], towers: int = 2,
              seeds: Optional[Sequence[int]] = None) -> List[Dict[str, Any]]:
    """Per sweep (name, sweep.json), sorted by epochs, over its runs of ``seeds`` (None: all; the same seeds at every
    epoch count make the arms comparable): for ``towers`` towers the runs, the runs that learned, the
    split rate over all and over the learned runs with Wilson intervals (None where n = 0), the mean top-1, conv1's
    relative change from its start (mean, min, max) and the mean colour eta squared."""
    rows = []
    for name, doc in docs:
        mine = [r for r in doc['runs'] if r['towers'] == towers and (seeds is None or r['seed'] in seeds)]
        if not mine:
            continue
        rate, learned = split_rates(mine, towers), learned_share(mine)
        changes = [r['conv1_from_random']['relative_change'] for r in mine
                   if (r.get('conv1_from_random') or {}).get('relative_change') is not None]
        row = {'epochs': sweep_epochs(doc), 'towers': towers, 'runs': len(mine), 'learned': learned,
               'split_all': rate.get('all'), 'split_learned': rate.get('learned'),
               'top1_mean': _mean([r['val_top1'] for r in mine if r.get('val_top1') is not None]),
               'conv1_change_mean': _mean(changes), 'conv1_change_min': min(changes) if changes else None,
               'conv1_change_max': max(changes) if changes else None,
               'colour_eta2_mean': _mean([r['effect_size'] for r in mine if r.get('effect_size') is not None]),
               'sweep': name}
        rows.append(row)
    return sorted(rows, key=lambda r: (r['epochs'] is None, r['epochs'] or 0))


def _dose_csv_row(row: Dict[str, Any]) -> Dict[str, str]:
    out = {k: _fmt(row.get(k)) for k in DOSE_FIELDS}
    out['learned'] = '' if not row['learned'] else f'{row["learned"]["x"]}/{row["learned"]["n"]}'
    for key in ('split_all', 'split_learned'):
        p = row.get(key)
        out[key] = '' if not p else f'{p["x"]}/{p["n"]}'
        w = (p or {}).get('wilson') or [None, None]
        out[f'{key}_wilson_low'], out[f'{key}_wilson_high'] = _fmt(w[0]), _fmt(w[1])
    return out


def _sweep_json(path: Path) -> Dict[str, Any]:
    """A sweep.json's contents; UserError (one line) for a missing, unreadable or non-JSON file."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f'cannot read the sweep file {path}: {one_line(e)}') from None
    if not isinstance(doc, dict):
        raise UserError(f'{path} is not a sweep.json (its JSON is not an object)')
    return doc


def dose_main(argv: Sequence[str]) -> int:
    """``python -c`` entry for scripts: write_dose(argv[1:], argv[0], 2, seeds 10-14); one line and 2 on bad input."""
    try:
        write_dose(argv[1:], argv[0], 2, range(10, 15))
    except UserError as e:
        print(f'dose: error: {e}', file=sys.stderr)
        return 2
    return 0


def write_dose(paths: Sequence[str], out: str, towers: int = 2,
               seeds: Optional[Sequence[int]] = None) -> List[Dict[str, Any]]:
    """dose.csv and dose.png in ``out`` from several sweeps' sweep.json (one per epoch count; runs of ``seeds`` only,
    None: all); prints one line per epoch count and returns the rows."""
    docs = [(str(p), _sweep_json(Path(p))) for p in paths]
    rows = dose_rows(docs, towers, seeds)
    if not rows:
        raise UserError(f'no run with {towers} towers in {", ".join(map(str, paths))}: no dose-response to write')
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    _write_csv(folder / 'dose.csv', DOSE_FIELDS, [_dose_csv_row(r) for r in rows])
    from .sweep_figure import plot_dose
    plot_dose(rows, folder / 'dose.png', towers)
    for r in rows:
        print(f'{r["epochs"]} epochs: {r["runs"]} runs with {towers} towers; learned {rate_text(r["learned"])}; '
              f'split (learned runs) {rate_text(r["split_learned"]) if r["split_learned"] else "n/a"}; '
              f'conv1 change {_fmt(r["conv1_change_mean"], 3)}')
    return rows
