"""`timm-alexnet-split bench` runs, prints ratios against the same-run baseline and writes them as JSON."""
import json

import pytest

from timm_alexnet_split.cli import main


def test_bench_writes_ratios(tmp_path, capsys):
    out = tmp_path / 'bench.json'
    assert main(['bench', '--batch-size', '2', '--rounds', '1', '--warmup', '0', '--img-size', '67', '--skip-onnx',
                 '--json', str(out)]) == 0
    res = json.loads(out.read_text())
    rows = {(r['mode'], r['variant']): r for r in res['rows']}
    for mode in ('train', 'infer'):
        assert rows[(mode, 'no_lrn')]['ratio_to_no_lrn'] == 1.0
        for v in ('ours', 'nn_lrn'):
            r = rows[(mode, v)]
            assert r['img_s'] > 0 and r['ratio_to_no_lrn'] > 0
    printed = capsys.readouterr().out
    assert 'goal: train ratio ours / LRN removed' in printed and printed.count(': PASS') + printed.count(': MISS') == 1
    assert [g['goal'].split(' >= ')[1].split(' ')[0] for g in res['goals']] == ['0.9']  # the CPU goal
    assert main(['bench', '--json', str(out), '--skip-onnx']) == 2  # never overwrites a result


@pytest.mark.slow
def test_onnxruntime_bench_times_both_lrn_forms_against_pytorch():
    """The bench's onnxruntime part: each export form timed against PyTorch in the same run (ratios, not seconds)."""
    from timm_alexnet_split.ort_bench import bench_onnxruntime
    rows = bench_onnxruntime('alexnet_split_2', batch_sizes=(1,), warmup=0, repeats=1, threads=1, num_classes=10)
    assert [r['lrn_form'] for r in rows] == ['node', 'ops']
    assert rows[0]['torch_img_s'] == rows[1]['torch_img_s'], 'one PyTorch baseline, timed in the same rounds'
    for r in rows:
        assert r['batch_size'] == 1 and r['threads'] == 1 and r['max_rel_err'] <= 1e-4
        assert r['torch_img_s'] > 0 and r['ort_img_s'] > 0
        assert r['ratio'] == pytest.approx(r['ort_img_s'] / r['torch_img_s'], rel=0.02)


def test_placement_bench_times_placed_towers_against_the_unplaced_model():
    """The --model-parallel comparison (run by `bench` on a GPU), exercised with CPU devices."""
    import torch

    from timm_alexnet_split.bench import bench_placement
    rows = bench_placement(torch.device('cpu'), batch=2, amp=False, rounds=1, warmup=0, placements=[['cpu', 'cpu']],
                           img_size=67)
    assert [(r['variant'], r['towers_on']) for r in rows] == [('unplaced', 'unplaced'), ('placed', 'cpu cpu')]
    assert rows[0]['ratio_to_unplaced'] == 1.0 and rows[1]['img_s'] > 0 and rows[1]['ratio_to_unplaced'] > 0


def test_profile_writes_the_top_kernels_of_one_training_step(tmp_path, capsys):
    out, prof = tmp_path / 'bench.json', tmp_path / 'profile.json'
    args = ['bench', '--batch-size', '2', '--rounds', '1', '--warmup', '0', '--img-size', '67', '--skip-onnx',
            '--json', str(out), '--profile', str(prof)]
    assert main(args) == 0
    p = json.loads(prof.read_text())
    assert p['variant'] == 'ours' and p['time'] == 'self CPU time' and p['kernels']
    ms = [k['self_ms'] for k in p['kernels']]
    assert ms == sorted(ms, reverse=True) and ms[0] > 0 and sum(ms) <= p['total_self_ms'] + 1e-6
    assert all(k['count'] >= 1 and k['name'] for k in p['kernels'])
    assert any('conv' in k['name'] for k in p['kernels'])  # a training step's convolutions are in it
    assert 'profile of one training step' in capsys.readouterr().out
    assert main(args[:-4] + ['--json', str(tmp_path / 'other.json'), '--profile', str(prof)]) == 2  # never overwrites


def test_gpu_sections_run_and_give_every_ratio(monkeypatch, capsys, tmp_path):
    """The GPU bench's variants (eager here, on CPU tensors: no GPU in CI), each precision, the towers' goals; the
    JSON on disk after each precision (a time limit in the next keeps it)."""
    import argparse

    import torch

    from timm_alexnet_split import bench as B
    monkeypatch.setattr(B, 'GPU_KINDS', ['ours', 'no_lrn', 'tv_alexnet', 'naive_grouped'])
    results = dict(rows=[])
    args = argparse.Namespace(no_compile=True, rounds=1, warmup=0, img_size=67)
    written = []
    real_write = B.write_text
    monkeypatch.setattr(B, 'write_text', lambda out, text, during, **kw: (written.append(len(json.loads(text)['rows'])),
                                                                          real_write(out, text, during, **kw)))
    B._gpu_lrn_section(results, args, torch.device('cpu'), 2, tmp_path / 'bench.json')
    assert len(written) == 2 and 0 < written[0] < written[1] == len(results['rows'])
    assert json.loads((tmp_path / 'bench.json').read_text())['rows'] == results['rows']
    rows = {(r['mode'], r['variant'], r['amp_bf16']): r for r in results['rows']}
    for amp in (True, False):
        for v in B.GPU_KINDS:
            r = rows[('train', v, amp)]
            assert r['img_s'] > 0 and r['ratio_to_no_lrn'] > 0 and r['ratio_to_tv_alexnet'] > 0
            assert r['channels_last'] == amp and not r['compiled']
        assert ('infer', 'ours', amp) in rows
    assert {('train', k, True) for k in B.TOWER_KINDS} <= set(rows) and ('train', 'split_3', False) not in rows
    assert 'naive_grouped' in capsys.readouterr().out
    assert [k for k, _, _ in B.goals(results, 'cuda')] == ['lrn', 'vs_tv', 'split_3', 'towers_4']  # no compiled rows


def _row(variant, img_s, compiled=False, amp=True, **ratios):
    return dict(mode='train', variant=variant, compiled=compiled, amp_bf16=amp, channels_last=amp, batch=256,
                img_s=img_s, **ratios)


@pytest.mark.parametrize('scale,met', [(1.0, True), (0.9, False)])
def test_gpu_goals_pass_and_miss_at_their_thresholds(scale, met):
    from timm_alexnet_split.bench import goals
    rows = [_row('ours', 960 * scale, ratio_to_no_lrn=0.96 * scale, ratio_to_tv_alexnet=0.75 * scale),
            _row('ours', 1000, True, ratio_to_no_lrn=0.97, ratio_to_tv_alexnet=0.8, ratio_to_eager=1.04 * scale),
            _row('split_3', 900), _row('towers_4', 880)]
    got = {k: ok for k, _, ok in goals({'rows': rows}, 'cuda')}
    assert got['lrn'] is met and got['vs_tv'] is met  # the eager ratios, scaled below the goals
    assert got['lrn compiled'] and got['vs_tv compiled']
    assert got['compile'] is met  # torch.compile at 0.936x eager misses
    assert got['split_3'] is (900 / (960 * scale) >= 0.9) and got['towers_4'] is (880 / (960 * scale) >= 0.9)


def test_naive_split_keeps_lrn_within_its_groups():
    import torch

    from timm_alexnet_split.bench import GroupLRN, naive_split
    x = torch.rand(2, 8, 3, 3) * 50
    lrn = torch.nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0)
    torch.testing.assert_close(GroupLRN(2)(x), torch.cat([lrn(x[:, :4]), lrn(x[:, 4:])], 1))
    assert naive_split(2, 10)(torch.rand(1, 3, 67, 67)).shape == (1, 10)


@pytest.mark.parametrize('extra, says', [
    (['--device', 'nosuchdev'], '--device nosuchdev: '),
    (['--batch-size', '0'], '--batch-size and --rounds must be >= 1'),
    (['--img-size', '10'], '--img-size 10 is too small'),
])
def test_impossible_settings_are_one_line_before_any_timing(tmp_path, capsys, extra, says):
    out = tmp_path / 'b.json'
    assert main(['bench', '--skip-onnx', '--json', str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert says in err and err.count('\n') == 1 and not out.exists()


def test_a_json_path_under_a_file_is_one_line_before_any_timing(tmp_path, capsys):
    (tmp_path / 'file.txt').write_text('mine')
    assert main(['bench', '--skip-onnx', '--json', str(tmp_path / 'file.txt' / 'b.json')]) == 2
    assert 'is not a folder' in capsys.readouterr().err and (tmp_path / 'file.txt').read_text() == 'mine'
