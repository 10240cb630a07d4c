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
    assert 'goal: train ratio' in capsys.readouterr().out
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
