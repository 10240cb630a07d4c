"""What a careful new user met: splits that are not there, resume with a new length, a set smaller than a batch,
files that are not checkpoints, misspelled options, Ctrl-C in the first epoch. Never a wrong number, never a traceback.

Runs train the real alexnet_split_2 at fc_width=64 on a few 64-pixel images the tests draw themselves.
"""
import math
import os
import signal
import time

import pytest
import torch
import yaml
from trainhelp import BASE_OPTS, COLOURS, QUICK, interrupt_in_first_epoch, make_folder, run_train, summary_rows

import timm_alexnet_split  # noqa: F401  (registers the models)
from timm_alexnet_split import cli
from timm_alexnet_split.errors import UserError


def one_line_error(capsys, argv, *needles):
    assert cli.main([str(a) for a in argv]) == 2
    out = capsys.readouterr().err
    assert 'Traceback' not in out, out
    err = out.strip().splitlines()[-1]  # info lines may come before; the error is one line, the last
    assert err.startswith('timm-alexnet-split ') and ': error: ' in err and out.count(': error: ') == 1, out
    for needle in needles:
        assert needle in err, out
    return err


@pytest.fixture(scope='module')
def data(module_tmp):
    return make_folder(module_tmp / 'data', {'train': 3, 'validation': 1})


@pytest.fixture(scope='module')
def one_epoch_cosine(data, module_tmp):
    out = module_tmp / 'runs'
    assert run_train('--data-dir', data, *QUICK, '--sched', 'cosine', '--epochs', 1, '--output', out, '--experiment', 'cos') == 0
    return out / 'cos'


# ----------------------------------------------------------------------------------------------------- splits
def test_validate_refuses_a_split_that_is_not_there(one_epoch_cosine, data, capsys):
    one_line_error(capsys, ['validate', '--checkpoint', one_epoch_cosine, '--data-dir', data, '--split', 'valdation'],
                   "no split 'valdation'", 'train, validation')


def test_validate_finds_a_synonym_and_a_plain_folder(one_epoch_cosine, data, capsys, tmp_path):
    import json
    assert cli.main(['validate', '--checkpoint', str(one_epoch_cosine), '--data-dir', str(data), '--split', 'val']) == 0
    assert json.loads(capsys.readouterr().out)['images'] == len(COLOURS)  # validation/, not train/ + validation/
    assert cli.main(['validate', '--checkpoint', str(one_epoch_cosine), '--data-dir', str(data / 'validation')]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)['images'] == len(COLOURS) and 'no split folders' in out.err


def test_training_without_a_validation_split_reports_no_validation_metrics(tmp_path):
    data = make_folder(tmp_path / 'data', {'train': 3})
    assert run_train('--data-dir', data, *QUICK, '--epochs', 1, '--output', tmp_path, '--experiment', 'noval') == 0
    run_dir = tmp_path / 'noval'
    rows = summary_rows(run_dir)
    assert len(rows) == 1 and not any(k.startswith('eval_') for k in rows[0])
    assert not (run_dir / 'model_best.pth.tar').exists() and not (run_dir / 'model_best.safetensors').exists()
    assert (run_dir / 'last.pth.tar').is_file()
    log = (run_dir / 'log.txt').read_text()
    assert log.count('without validation metrics') == 1 and 'no validation' in log


def test_a_folder_without_split_folders_is_the_training_data(tmp_path):
    data = make_folder(tmp_path / 'data', {'train': 3})
    assert run_train('--data-dir', data / 'train', *QUICK, '--epochs', 1, '--output', tmp_path, '--experiment', 'flat') == 0
    rows = summary_rows(tmp_path / 'flat')
    assert not any(k.startswith('eval_') for k in rows[0])
    assert (tmp_path / 'flat' / 'class_map.txt').read_text().split() == sorted(COLOURS)


def test_a_misspelled_validation_split_is_refused(data, tmp_path):
    with pytest.raises(UserError, match=r"no split 'valdation' in .*: it has train, validation"):
        run_train('--data-dir', data, *QUICK, '--val-split', 'valdation', '--epochs', 1, '--output', tmp_path)
    with pytest.raises(UserError, match=r"no split 'trian'"):
        run_train('--data-dir', data, *QUICK, '--train-split', 'trian', '--epochs', 1, '--output', tmp_path)
    assert not list(tmp_path.iterdir()), 'nothing written for a run that never started'


# ----------------------------------------------------------------------------------------------------- resume
def test_resume_with_more_epochs_follows_the_new_schedule(one_epoch_cosine, tmp_path):
    import shutil
    run_dir = tmp_path / 'cos'
    shutil.copytree(one_epoch_cosine, run_dir)
    before = torch.load(run_dir / 'last.pth.tar', map_location='cpu', weights_only=True)['state_dict']
    assert run_train('--resume', run_dir / 'last.pth.tar', '--epochs', 2) == 0
    after = torch.load(run_dir / 'last.pth.tar', map_location='cpu', weights_only=True)['state_dict']
    assert not torch.equal(before['towers.0.conv1.weight'], after['towers.0.conv1.weight']), 'the added epoch trained'
    lrs = [float(r['lr']) for r in summary_rows(run_dir)]
    # cosine over the new length of 2 epochs: epoch 1 at half the base rate (the old length would give 0)
    assert lrs[1] == pytest.approx(lrs[0] * 0.5, rel=1e-6) and lrs[0] == pytest.approx(0.001)


def test_resuming_a_complete_run_says_so_and_writes_nothing(one_epoch_cosine, capsys):
    files = sorted(p.name for p in one_epoch_cosine.iterdir())
    assert run_train('--resume', one_epoch_cosine / 'last.pth.tar') == 0
    err = capsys.readouterr().err
    assert 'the run is complete' in err and '--epochs N, N > 1' in err
    assert 'training epochs' not in err
    assert sorted(p.name for p in one_epoch_cosine.iterdir()) == files


def test_an_epoch_at_learning_rate_zero_is_said_loudly(data, tmp_path, capsys):
    assert run_train('--data-dir', data, *QUICK, '--sched', 'step', '--decay-epochs', 1, '--decay-rate', 0.0,
               '--epochs', 2, '--output', tmp_path, '--experiment', 'zero') == 0
    err = capsys.readouterr().err
    assert err.count('learning rate was 0 throughout') == 1 and 'learning rate was 0 throughout epoch 1' in err


def test_summary_lr_is_the_mean_rate_used_in_the_epoch(data, tmp_path):
    # per-update cosine over 2 epochs of 3 updates (9 images, batches of 3): the column is the mean of the 3 rates used
    assert run_train('--data-dir', data, *QUICK, '-b', 3, '--sched', 'cosine', '--sched-on-updates', '--lr', 0.01,
               '--min-lr', 0, '--epochs', 2, '--output', tmp_path, '--experiment', 'upd') == 0
    lrs = [float(r['lr']) for r in summary_rows(tmp_path / 'upd')]
    used = [0.01 * 0.5 * (1 + math.cos(math.pi * t / 6)) for t in range(6)]
    assert lrs == pytest.approx([sum(used[:3]) / 3, sum(used[3:]) / 3], rel=1e-6)


# ----------------------------------------------------------------------------------------------- empty epochs
def test_a_training_set_smaller_than_one_batch_is_refused(data, tmp_path, capsys):
    one_line_error(capsys, ['train', '--data-dir', data, *QUICK, '-b', 128, '--epochs', 1, '--output', tmp_path],
                   'fewer than one batch of 128', 'lower --batch-size')
    assert not list(tmp_path.glob('*/last.pth.tar'))


# ------------------------------------------------------------------------------------------ files and options
def test_files_that_are_not_checkpoints_end_in_one_line(one_epoch_cosine, data, tmp_path, capsys):
    text = tmp_path / 'x.pth.tar'
    text.write_text('hello\n')
    truncated = tmp_path / 'cut.pth.tar'
    truncated.write_bytes((one_epoch_cosine / 'last.pth.tar').read_bytes()[:4000])
    for bad in (text, truncated):
        for argv in (['validate', '--checkpoint', bad, '--data-dir', data], ['train', '--resume', bad]):
            err = one_line_error(capsys, argv, 'not a readable PyTorch checkpoint')
            assert err.endswith('saved with torch.save?'), 'the message is whole, not cut mid-sentence'


def test_resume_into_another_architecture_names_the_mismatch_briefly(one_epoch_cosine, capsys):
    err = one_line_error(capsys, ['train', '--resume', one_epoch_cosine / 'last.pth.tar', '--model', 'alexnet_split_3',
                                  '--epochs', 2], 'does not fit alexnet_split_3', 'more mismatching keys')
    assert len(err) < 400


@pytest.mark.parametrize('where', ['config', 'cli'])
def test_a_foreign_option_name_suggests_the_right_one(tmp_path, capsys, where):
    if where == 'config':
        cfg = tmp_path / 'c.yaml'
        cfg.write_text(yaml.safe_dump({'learning_rate': 0.1}))
        one_line_error(capsys, ['train', '--config', cfg], "unknown option 'learning_rate' (did you mean lr?)")
    else:
        one_line_error(capsys, ['train', '--learning-rate', '0.1'], 'unknown option --learning-rate (did you mean --lr?)')


def test_an_output_that_is_a_file_is_one_line(data, tmp_path, capsys):
    (tmp_path / 'taken').write_text('my notes')
    one_line_error(capsys, ['train', '--data-dir', data, *QUICK, '--epochs', 1, '--output', tmp_path / 'taken'],
                   'cannot make the run folder')
    assert (tmp_path / 'taken').read_text() == 'my notes'


# ---------------------------------------------------------------------------------------------------- Ctrl-C
def test_ctrl_c_in_the_first_epoch_names_the_file_written_once(tmp_path):
    data = make_folder(tmp_path / 'data', {'train': 6, 'validation': 1})

    def ctrl_c(proc):  # a terminal's Ctrl-C reaches the whole process group: the trainer and its loader worker
        time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGINT)

    code, err = interrupt_in_first_epoch(['--data-dir', data, *BASE_OPTS, '-b', '2', '--workers', '1', '--epochs', '3',
                                          '--output', tmp_path, '--experiment', 'int'], ctrl_c)
    assert code == 128 + signal.SIGINT, err
    assert err.count('SIGINT: stopping after this batch') == 1, err
    assert 'Traceback' not in err
    recovery = tmp_path / 'int' / 'recovery.pth.tar'
    assert recovery.is_file() and f'--resume {recovery}' in err
    assert 'last.pth.tar' not in err and not (tmp_path / 'int' / 'last.pth.tar').exists()


def test_sigterm_to_the_process_group_as_timeout_sends_it_stops_cleanly_with_a_worker(tmp_path):
    """GNU timeout (and Slurm) signal the trainer and then its whole process group: the loader worker must not die
    of it (the trainer would end in "DataLoader worker exited unexpectedly"), and the second delivery of the same
    signal is not a second request (a second request stops at once, without saving)."""
    data = make_folder(tmp_path / 'data', {'train': 6, 'validation': 1})

    def like_timeout(proc):
        time.sleep(0.2)
        os.kill(proc.pid, signal.SIGTERM)
        os.killpg(proc.pid, signal.SIGTERM)

    code, err = interrupt_in_first_epoch(['--data-dir', data, *BASE_OPTS, '-b', '2', '--workers', '1', '--epochs', '3',
                                          '--output', tmp_path, '--experiment', 'term'], like_timeout)
    assert code == 128 + signal.SIGTERM, err
    assert err.count('SIGTERM: stopping after this batch') == 1, err
    assert 'Traceback' not in err and 'exited unexpectedly' not in err and 'killed by signal' not in err
    assert (tmp_path / 'term' / 'recovery.pth.tar').is_file()


def test_a_loader_worker_killed_by_the_machine_ends_in_one_line_that_says_what_to_do(tmp_path, monkeypatch, capsys):
    """The out-of-memory killer takes a loader worker (SIGKILL, which nothing can catch): one line naming the likely
    cause and the remedy, exit 1, not PyTorch's traceback."""
    from timm_alexnet_split.train import data as train_data
    data = make_folder(tmp_path / 'data', {'train': 6, 'validation': 1})
    parent = os.getpid()
    real = train_data.SkipUnreadable.__getitem__

    def killed_in_a_worker(self, index):
        if os.getpid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(self, index)
    monkeypatch.setattr(train_data.SkipUnreadable, '__getitem__', killed_in_a_worker)
    code = cli.main(['train', '--data-dir', str(data), *QUICK[:-2], '--workers', '1', '--epochs', '1',
                     '--output', str(tmp_path), '--experiment', 'oom', '--model-kwargs', 'fc_width=64'])
    err = capsys.readouterr().err
    lines = [ln for ln in err.strip().splitlines() if 'error:' in ln]
    assert code == 1, err
    assert len(lines) == 1 and 'a data-loader worker died' in lines[0] and 'fewer --workers' in lines[0], err
    assert 'Traceback' not in err


def test_validate_on_only_unreadable_images_is_an_error_not_nan(one_epoch_cosine, tmp_path, capsys):
    for name in COLOURS:
        (tmp_path / 'validation' / name).mkdir(parents=True)
        (tmp_path / 'validation' / name / 'x.jpg').write_bytes(b'\xff\xd8 not a jpeg')
    one_line_error(capsys, ['validate', '--checkpoint', one_epoch_cosine, '--data-dir', tmp_path, '--workers', '0'],
                   "no image of the 'validation' split could be evaluated", '3 unreadable')
