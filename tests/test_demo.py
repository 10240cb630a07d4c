"""The demo command's bookkeeping: reuse a finished run, resume an interrupted one, never touch user files."""
import pytest

from timm_alexnet_split import demo
from timm_alexnet_split.errors import UserError

RECIPE = demo.RECIPE


def _run_folder(path, epochs_done, best=True, last=True):
    path.mkdir(parents=True)
    (path / 'args.yaml').write_text('epochs: 3\n')
    rows = ''.join(f'{e},1.0,50.0,1.0,50.0,90.0,0.01\n' for e in range(epochs_done))
    (path / 'summary.csv').write_text('epoch,train_loss,train_top1,eval_loss,eval_top1,eval_top5,lr\n' + rows)
    if best:
        (path / 'model_best.pth.tar').write_bytes(b'x')
    if last:
        (path / 'last.pth.tar').write_bytes(b'x')


@pytest.fixture
def calls(monkeypatch):
    seen = []

    def fake_main(argv):
        seen.append(list(argv))
        if '--experiment' in argv:
            out, name = argv[argv.index('--output') + 1], argv[argv.index('--experiment') + 1]
            from pathlib import Path
            _run_folder(Path(out) / name, 3)
        return 0
    from timm_alexnet_split import train
    monkeypatch.setattr(train, 'main', fake_main)
    return seen


def test_complete_run_is_reused_without_training(tmp_path, calls, capsys):
    _run_folder(tmp_path / 'demo', 3)
    assert demo.train_or_reuse(RECIPE, tmp_path, 'demo', retrain=False, extra=[]) == tmp_path / 'demo'
    assert calls == []
    assert 'reusing the trained run' in capsys.readouterr().out


def test_interrupted_run_is_resumed(tmp_path, calls, capsys):
    _run_folder(tmp_path / 'demo', 1, best=False)
    demo.train_or_reuse(RECIPE, tmp_path, 'demo', retrain=False, extra=[])
    assert calls == [['--resume', str(tmp_path / 'demo' / 'last.pth.tar')]]
    assert 'resuming the interrupted run' in capsys.readouterr().out


def test_retrain_makes_a_new_folder_and_keeps_the_old(tmp_path, calls, capsys):
    _run_folder(tmp_path / 'demo', 3)
    run = demo.train_or_reuse(RECIPE, tmp_path, 'demo', retrain=True, extra=['--epochs', '1'])
    assert run == tmp_path / 'demo-1' and (tmp_path / 'demo' / 'model_best.pth.tar').exists()
    assert calls[0][-2:] == ['--epochs', '1'] and 'demo-1' in calls[0]
    assert 'is kept as it is' in capsys.readouterr().out


def test_exports_folder_with_user_files_is_refused(tmp_path):
    out = tmp_path / 'exports' / 'demo'
    out.mkdir(parents=True)
    (out / 'mine.txt').write_text('keep me')
    with pytest.raises(UserError, match='did not write'):
        demo._check_exports_dir(out)
    assert (out / 'mine.txt').read_text() == 'keep me'
    (out / 'mine.txt').unlink()
    assert demo._check_exports_dir(out) is None
    (out / demo.MANIFEST).write_text('{"run": "runs/demo"}')
    assert demo._check_exports_dir(out) == {'run': 'runs/demo'}


def test_cli_refuses_user_files_before_training(tmp_path, calls, capsys):
    from timm_alexnet_split.cli import main
    out = tmp_path / 'ex'
    out.mkdir()
    (out / 'x.onnx').write_bytes(b'mine')
    assert main(['demo', '--exports', str(out), '--runs', str(tmp_path / 'runs')]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'did not write' in err[0]
    assert calls == [] and (out / 'x.onnx').read_bytes() == b'mine'
