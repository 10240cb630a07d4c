"""scripts/gpu_sweep.sh's plan (DRY_RUN=1, no torch, no CUDA): the parts run the pre-registered grid (towers 1-4 x
seeds 10-19 in two halves into one sweep folder; the dose-response at two towers), and each brings back at most 8
files, none in a subfolder, as a device call can."""
import os
import re
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / 'scripts' / 'gpu_sweep.sh'


def _plan(part, tmp_path, **env):
    run = subprocess.run(['bash', str(SCRIPT), part, str(tmp_path / 'out')], capture_output=True, text=True,
                         env={**os.environ, 'DRY_RUN': '1', 'PYTHON': 'false', **env}, timeout=60)
    runs = re.findall(r'^ {6}(\S+)/towers(\d+)-seed(\d+)$', run.stdout, re.M)
    fetch = re.search(r'fetch \((\d+) files, in \S+\): (.*)$', run.stdout, re.M)
    return run, [(f, int(n), int(s)) for f, n, s in runs], fetch.group(2).split() if fetch else None


def test_main_halves_cover_towers_1_to_4_by_seeds_10_to_19_in_one_folder(tmp_path):
    (a, runs_a, fetch_a), (b, runs_b, _) = _plan('main-a', tmp_path), _plan('main-b', tmp_path)
    assert a.returncode == 0 and b.returncode == 0
    grid = {(n, s) for f, n, s in runs_a + runs_b}
    assert grid == {(n, s) for n in (1, 2, 3, 4) for s in range(10, 20)} and len(runs_a) == len(runs_b) == 20
    assert {f for f, _, _ in runs_a + runs_b} == {'demo-hard-main'}
    assert '--epochs 16 --workers 1' in a.stdout and not (tmp_path / 'out').exists()  # a plan writes nothing
    assert len(fetch_a) <= 8 and 'runs-main-a.tar.gz' in fetch_a and all('/' not in f for f in fetch_a)


def test_dose_trains_two_towers_and_their_control_at_each_epoch_count(tmp_path):
    run, runs, fetch = _plan('dose', tmp_path)
    assert run.returncode == 0
    assert {f for f, _, _ in runs} == {'demo-hard-e4', 'demo-hard-e8', 'demo-hard-e32'}
    assert {(n, s) for _, n, s in runs} == {(n, s) for n in (1, 2) for s in range(10, 15)} and len(runs) == 30
    assert {'dose.csv', 'dose.png', 'runs-dose.tar.gz'} <= set(fetch) and len(fetch) <= 8


@pytest.mark.parametrize('env, expect', [({'EPOCHS': '32'}, 'demo-hard-main-e32'), ({'TINY': '1'}, 'fc_width=64')])
def test_epochs_and_tiny_change_the_plan(tmp_path, env, expect):
    run, runs, _ = _plan('main-a', tmp_path, **env)
    assert run.returncode == 0 and expect in run.stdout
    if env.get('TINY'):
        assert [(n, s) for _, n, s in runs] == [(1, 10), (2, 10)]


def test_an_unknown_part_is_one_usage_line(tmp_path):
    run, _, _ = _plan('everything', tmp_path)
    assert run.returncode == 2 and run.stderr.strip().startswith('usage:') and len(run.stderr.strip().splitlines()) == 1


def test_gpu_check_under_a_device_call_wants_a_part_and_writes_nothing_without_one(tmp_path):
    """Both parts together outlast one device call (10 min): with $OUT set (a device call) PART is required."""
    check = SCRIPT.with_name('gpu_check.sh')
    run = subprocess.run(['bash', str(check), str(tmp_path / 'gc')], capture_output=True, text=True, timeout=60,
                         env={**os.environ, 'OUT': str(tmp_path), 'PYTHON': 'false'})
    assert run.returncode == 2 and 'PART=1' in run.stderr and not (tmp_path / 'gc').exists()
    part = subprocess.run(['bash', str(check), str(tmp_path / 'gc')], capture_output=True, text=True, timeout=60,
                          env={**os.environ, 'OUT': str(tmp_path), 'PART': '1', 'PYTHON': 'false'})
    assert part.returncode == 2 and 'CUDA' in part.stderr  # past the check: here it stops for want of a GPU
