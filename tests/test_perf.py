"""tune_malloc: applied once on glibc, opt-out by environment, never an error elsewhere."""
import subprocess
import sys

CODE = 'from timm_alexnet_split.perf import tune_malloc; print(tune_malloc(), tune_malloc())'


def _run(env_extra):
    import os
    env = {**os.environ, **env_extra}
    return subprocess.run([sys.executable, '-c', CODE], capture_output=True, text=True, env=env, timeout=120)


def test_applied_on_linux_and_idempotent():
    r = _run({})
    assert r.returncode == 0, r.stderr
    expected = 'True True' if sys.platform.startswith('linux') else 'False False'
    assert r.stdout.strip() == expected


def test_opt_out():
    r = _run({'TIMM_ALEXNET_SPLIT_MALLOC': 'default'})
    assert r.returncode == 0 and r.stdout.strip() == 'False False'
