"""`timm-alexnet-split bench` runs, prints ratios against the same-run baseline and writes them as JSON."""
import json

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
