"""scripts/seed_subset.py: the numbers of a pre-registered seed range, read from a sweep's own verdicts."""
import json
import subprocess
import sys

import pytest
from scripthelp import SCRIPTS, script_module

SCRIPT = SCRIPTS / 'seed_subset.py'


def _module():
    return script_module('seed_subset')


def _run(seed, towers=2, learned=True, split=True, rank=2):
    return {'towers': towers, 'seed': seed, 'learned': learned, 'colour_beyond_control': split,
            'greyest_tower_start_rank': rank}


def _doc(runs):
    return {'split_rule': 'rule', 'learned_rule': 'top-1 >= 90', 'runs': runs}


def test_only_the_seeds_asked_for_count_and_missing_ones_are_listed():
    runs = [_run(s, split=True, rank=1) for s in range(35, 45)]                  # outside the range: all split, rank 1
    runs += [_run(s, split=s % 2 == 0, rank=2) for s in range(45, 61)]          # 16 runs in range, 8 split
    runs += [_run(61, learned=False, split=True, rank=2), _run(62, towers=1)]    # not learned; one tower
    s = _module().subset(_doc(runs), 2, range(45, 65))
    assert s['runs'] == 17 and s['missing_seeds'] == [62, 63, 64]
    assert (s['split_all']['x'], s['split_all']['n']) == (9, 17)
    assert (s['split_learned']['x'], s['split_learned']['n']) == (8, 16)
    assert s['split_seeds'] == list(range(46, 61, 2))
    assert (s['learned']['x'], s['learned']['n']) == (16, 17)


def test_persistence_is_the_last_rank_and_its_p_value_the_binomial_tail():
    runs = [_run(s, rank=2 if s < 60 else 1) for s in range(45, 65)]  # 15 of 20 at rank 2
    s = _module().subset(_doc(runs), 2, range(45, 65))
    grey, first = s['start_greyest'], s['start_most_chromatic']
    assert (grey['x'], grey['n'], first['x'], first['n']) == (15, 20, 5, 20)
    # P(X >= 15 | 20, 1/2) = 21700 / 2**20
    assert grey['p_value'] == pytest.approx(21700 / 2 ** 20, rel=1e-9) and grey['p_value'] < 0.05
    assert first['p_value'] > 0.99


def test_three_towers_test_against_one_in_three():
    runs = [_run(s, towers=3, rank=3) for s in range(3)] + [_run(3, towers=3, rank=None)]  # no rank: not counted
    t = _module().subset(_doc(runs), 3, range(0, 4))['start_greyest']
    assert (t['x'], t['n']) == (3, 3) and t['p_value'] == pytest.approx(1 / 27)


def test_cli_prints_the_numbers_writes_json_and_refuses_bad_input(tmp_path):
    sweep_json = tmp_path / 'sweep.json'
    sweep_json.write_text(json.dumps(_doc([_run(s, split=s < 47) for s in range(45, 50)])))
    out = tmp_path / 'subset.json'
    r = subprocess.run([sys.executable, str(SCRIPT), str(sweep_json), '--first-seed', '45', '--seeds', '5',
                        '--json', str(out)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert 'split, runs that learned: 2 of 5 = 40%' in r.stdout and 'persistence' in r.stdout
    assert json.loads(out.read_text())['split_learned']['x'] == 2
    again = subprocess.run([sys.executable, str(SCRIPT), str(sweep_json), '--first-seed', '45', '--seeds', '5',
                            '--json', str(out)], capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and 'cannot write' in again.stderr and 'Traceback' not in again.stderr
    bad = tmp_path / 'bad.json'
    bad.write_text('{not json')
    r = subprocess.run([sys.executable, str(SCRIPT), str(bad), '--first-seed', '1', '--seeds', '2'],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.count('\n') == 1 and 'not a readable sweep.json' in r.stderr
