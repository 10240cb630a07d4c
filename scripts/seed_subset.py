"""The split rate and both start-order tests for a range of seeds of one tower count in a sweep's sweep.json.

    python scripts/seed_subset.py SWEEP_JSON --towers 2 --first-seed 45 --seeds 20 [--json OUT.json]

A sweep analysed over more seeds than a test was registered for (docs/science.md: seeds 45-64 of the CPU setting at
8 epochs, judged against the control of seeds 35-44's one-tower runs) reports its rates over all of them; this reads
the runs' own verdicts from sweep.json (``learned``, ``colour_beyond_control``, ``greyest_tower_start_rank``, set by
`timm-alexnet-split sweep`) and counts only the seeds asked for. Nothing is recomputed: the control, the split rule
and the learned threshold are those the sweep wrote (printed here).

Printed, over the learned runs of those seeds:
- the split rate (x of n, 95% Wilson and Clopper-Pearson intervals), also over all their runs;
- the start-order rule registered on 2026-12-04 ("the tower that ends greyest started the most chromatic", rank 1;
  H0 1 / towers; one-sided binomial);
- the persistence rule registered on 2026-12-07 ("the tower that ends greyest started the greyest", rank = towers;
  H0 1 / towers; one-sided binomial P(X >= x)).
Seeds in the range without a complete run are listed as missing, never counted.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from timm_alexnet_split.proportions import binomial_tail, proportion  # noqa: E402

PROG = 'seed_subset'


def rank_test(ranks: List[int], towers: int, rank: int) -> Dict[str, Any]:
    """x of n runs at ``rank``; H0 probability 1 / towers; one-sided p = P(X >= x); n = 0: p None."""
    x, n = sum(1 for r in ranks if r == rank), len(ranks)
    return {'rank': rank, 'x': x, 'n': n, 'null_probability': 1 / towers,
            'p_value': binomial_tail(x, n, 1 / towers) if n else None}


def subset(doc: Dict[str, Any], towers: int, seeds: range) -> Dict[str, Any]:
    """The rates and tests of ``towers``-tower runs whose seed is in ``seeds`` (see the module's docstring)."""
    runs = {r['seed']: r for r in doc['runs'] if r['towers'] == towers and r['seed'] in seeds}
    mine = [runs[s] for s in seeds if s in runs]
    judged = [r for r in mine if r.get('colour_beyond_control') is not None]
    learned = [r for r in judged if r.get('learned')]
    ranks = [int(r['greyest_tower_start_rank']) for r in mine
             if r.get('learned') and r.get('greyest_tower_start_rank')]
    return {
        'towers': towers, 'seeds': [seeds.start, seeds.stop - 1], 'runs': len(mine),
        'missing_seeds': [s for s in seeds if s not in runs],
        'not_judged': len(mine) - len(judged),
        'learned': proportion(len(learned), len(judged)) if judged else proportion(0, 0),
        'split_all': proportion(sum(1 for r in judged if r['colour_beyond_control']), len(judged)),
        'split_learned': proportion(sum(1 for r in learned if r['colour_beyond_control']), len(learned)),
        'start_most_chromatic': rank_test(ranks, towers, 1),
        'start_greyest': rank_test(ranks, towers, towers),
        'split_seeds': [r['seed'] for r in learned if r['colour_beyond_control']],
        'ranks': {str(r['seed']): r.get('greyest_tower_start_rank') for r in mine},
        'split_rule': doc.get('split_rule'), 'learned_rule': doc.get('learned_rule')}


def _rate(p: Dict[str, Any]) -> str:
    if not p['n']:
        return 'no run'
    (wl, wh), (cl, ch) = p['wilson'], p['clopper_pearson']
    return (f'{p["x"]} of {p["n"]} = {100 * p["estimate"]:.0f}% [95%: Wilson {100 * wl:.0f}-{100 * wh:.0f}%; '
            f'Clopper-Pearson {100 * cl:.0f}-{100 * ch:.0f}%]')


def _test(t: Dict[str, Any], what: str) -> str:
    if not t['n']:
        return f'{what}: no learned run with a rank, nothing tested'
    return (f'{what}: {t["x"]} of {t["n"]} learned runs (H0: 1 in {round(1 / t["null_probability"])}), '
            f'one-sided binomial p = {t["p_value"]:.3g}')


def report(s: Dict[str, Any]) -> str:
    lines = [f'{s["towers"]} towers, seeds {s["seeds"][0]}-{s["seeds"][1]}: {s["runs"]} run(s)'
             + (f'; missing seeds {s["missing_seeds"]}' if s['missing_seeds'] else ''),
             f'  split rule: {s["split_rule"]}', f'  learned: {s["learned_rule"]}',
             f'  learned: {_rate(s["learned"])}',
             f'  split, all runs: {_rate(s["split_all"])}',
             f'  split, runs that learned: {_rate(s["split_learned"])} (seeds {s["split_seeds"]})',
             '  ' + _test(s['start_most_chromatic'], 'start order (2026-12-04: the greyest started the most chromatic)'),
             '  ' + _test(s['start_greyest'], 'persistence (2026-12-07: the greyest started the greyest)')]
    if s['not_judged']:
        lines.append(f'  {s["not_judged"]} run(s) without a control verdict, not counted in the rates (the rank tests '
                     'count every learned run with a rank)')
    return '\n'.join(lines)


def main(argv: List[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.split('\n\n')[0])
    ap.add_argument('sweep_json', type=Path)
    ap.add_argument('--towers', type=int, default=2)
    ap.add_argument('--first-seed', type=int, required=True)
    ap.add_argument('--seeds', type=int, required=True)
    ap.add_argument('--json', type=Path, help='also write the numbers here (a new file)')
    args = ap.parse_args(argv)
    if args.towers < 2 or args.seeds < 1:
        print(f'{PROG}: error: --towers must be >= 2 and --seeds >= 1', file=sys.stderr)
        return 2
    try:
        doc = json.loads(args.sweep_json.read_text())
        doc['runs']
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f'{PROG}: error: {args.sweep_json} is not a readable sweep.json ({e})', file=sys.stderr)
        return 2
    s = subset(doc, args.towers, range(args.first_seed, args.first_seed + args.seeds))
    print(report(s))
    if args.json:
        try:
            with open(args.json, 'x') as f:
                json.dump(s, f, indent=2)
        except OSError as e:
            print(f'{PROG}: error: cannot write {args.json}: {e.strerror or e}', file=sys.stderr)
            return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
