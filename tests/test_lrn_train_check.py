"""scripts/lrn_train_check.py: training with the Triton LRN follows the reference LRN (CPU smoke test, tiny setting;
the real check is one demo epoch on a GPU, in scripts/gpu_check.sh)."""
import json
import os
import subprocess
import sys

import pytest
from scripthelp import SCRIPTS, script_module

SCRIPT = SCRIPTS / 'lrn_train_check.py'


def _module():
    return script_module('lrn_train_check')


def test_a_curve_off_the_reference_by_more_than_the_allowance_misses():
    compare = _module().compare
    ref = [2.5, 2.4, 2.3]
    near = compare(dict(triton=[2.5, 2.401, 2.3], reference=ref, yardstick=[2.5, 2.4005, 2.3]), rel_tol=1e-4)
    far = compare(dict(triton=[2.5, 2.45, 2.3], reference=ref, yardstick=[2.5, 2.4005, 2.3]), rel_tol=1e-4)
    assert near['passed'] and not far['passed'] and far['max_diff'] == pytest.approx(0.05)


@pytest.mark.slow
def test_smoke_on_the_cpu_in_the_interpreter(tmp_path):
    pytest.importorskip('triton')
    out = tmp_path / 'check.json'
    env = dict(os.environ, TRITON_INTERPRET='1')
    r = subprocess.run([sys.executable, str(SCRIPT), '--device', 'cpu', '--images-per-class', '1', '--batch-size', '4',
                        '--json', str(out)], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res['passed'] and res['batches'] == 3 and len(res['steps']) == 3 and not res['amp_bf16']
    assert 'lrn_train_check: PASS' in r.stdout
