"""Data parallel with torchrun (CPU, gloo) and towers on devices: replicas stay identical and match one process with
the global batch; only process 0 writes; a process that dies or hangs ends the job with a clear message in bounded
time, and the run resumes exactly from last.pth.tar.

Each torchrun job starts 2 processes (torch + timm ~5 s each) that train alexnet_split_2 with average pooling and
fc6/fc7 narrowed to 64 (``--gp avg``, ``fc_width=64``: the paper's towers, 2.4 M parameters instead of 61 M, so
all-reduces are quick and a checkpoint is ~20 MB) on 8 training images of 64 px, batch 4 per process: one optimiser
step per epoch. CPU tests ~1.5-2 min on 2 cores; GPU tests skip
without CUDA.
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import timm
import torch
from trainhelp import COLOURS, make_folder, run_train, summary_rows

import timm_alexnet_split  # noqa: F401  (registers the models)
from timm_alexnet_split import train
from timm_alexnet_split.errors import UserError

CUDA = torch.cuda.is_available()
EPOCHS = 2
# one step per epoch: 8 training images = 2 processes x batch 4 = 1 process x batch 8; no augmentation or dropout,
# so the only difference between the runs is the order of summation in the gradient average
COMMON = ['--img-size', '64', '--gp', 'avg', '--lr', '0.001', '--opt', 'momentum', '--weight-decay', '0.0005',
          '--sched', 'step', '--warmup-epochs', '0', '--smoothing', '0', '--no-aug', '--drop', '0', '--workers', '0',
          '--checkpoint-hist', '1', '--log-interval', '1', '--seed', '5', '--epochs', str(EPOCHS),
          '--model-kwargs', 'fc_width=64']
TORCHRUN_TIMEOUT = 240
TWO_COLOURS = {name: COLOURS[name] for name in ('blue', 'red')}

# Runs the trainer with a fault in one process of a torchrun job: python faulty.py RANK EPOCH die|hang TRAIN-OPTIONS...
# At the first batch of EPOCH, process RANK is killed (SIGKILL, as the OOM killer would) or sleeps (a hang outside any
# collective); the other processes meet the fault in their next collective.
FAULTY = '''
import os, signal, sys, time
from timm_alexnet_split import cli, train

RANK, EPOCH, MODE = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
real_train_one_epoch = train.run.train_one_epoch


class Faulty:
    def __init__(self, loader):
        self.loader = loader

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            if MODE == 'die':
                os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(3600)
            yield batch


def train_one_epoch(epoch, loader, step):
    if epoch == EPOCH and int(os.environ['RANK']) == RANK:
        loader = Faulty(loader)
    return real_train_one_epoch(epoch, loader, step)


train.run.train_one_epoch = train_one_epoch
sys.exit(cli.main(['train', *sys.argv[4:]]))
'''


def _env() -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'LOCAL_WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT')}
    env.update(OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1')
    if Path('/sys/class/net/lo').exists():
        env['GLOO_SOCKET_IFNAME'] = 'lo'  # loopback only
    return env


def torchrun(script_and_args, cwd: Path, nproc: int = 2, on_line=None):
    """(exit status, stdout+stderr, seconds) of a standalone torchrun job on this machine; ``on_line(proc, line)``
    sees each output line as it comes."""
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc-per-node', str(nproc),
           *map(str, script_and_args)]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    timer = threading.Timer(TORCHRUN_TIMEOUT, os.killpg, (proc.pid, signal.SIGKILL))
    timer.start()
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if on_line is not None:
                on_line(proc, line)
        proc.wait()
    finally:
        timer.cancel()
    out = ''.join(lines)
    if time.monotonic() - t0 >= TORCHRUN_TIMEOUT:
        pytest.fail(f'torchrun killed after {TORCHRUN_TIMEOUT} s:\n{out[-3000:]}')
    return proc.returncode, out, time.monotonic() - t0


def _weights(path: Path) -> dict:
    return torch.load(path, map_location='cpu', weights_only=True)['state_dict']


def _summary(run_dir: Path) -> list:
    """summary.csv's numbers, less the images per second (a wall-clock figure)."""
    return [{k: float(v) for k, v in r.items() if k != 'train_img_s'} for r in summary_rows(run_dir)]


@pytest.fixture(scope='module')
def setup(module_tmp):
    """Data, the shared initial weights (so the update of each run is known) and the options."""
    root = module_tmp
    # 2 classes x 4 training images; 5 validation images (uneven over 2 processes: padding)
    data = make_folder(root / 'data', {'train': (4, 4), 'validation': (3, 2)}, colours=TWO_COLOURS)
    torch.manual_seed(0)
    model = timm.create_model('alexnet_split_2', num_classes=2, global_pool='avg', fc_width=64)
    init = root / 'init.pth'
    torch.save(model.state_dict(), init)
    cwd = root / 'cwd'
    cwd.mkdir()
    (root / 'faulty.py').write_text(FAULTY)
    opts = ['--data-dir', data, *COMMON, '--initial-checkpoint', init, '--output', root / 'runs']
    return {'root': root, 'init': init, 'cwd': cwd, 'opts': opts, 'cpu': [*opts, '--device', 'cpu'],
            'faulty': root / 'faulty.py'}


@pytest.fixture(scope='module')
def ddp_run(setup):
    """2 processes x batch 4, towers placed (--model-parallel cpu cpu) and wrapped in DDP: the reference job."""
    rc, out, _ = torchrun(['-m', 'timm_alexnet_split', 'train', *setup['cpu'], '-b', '4', '--experiment', 'ddp',
                           '--model-parallel', 'cpu', 'cpu'], setup['cwd'])
    assert rc == 0, out[-4000:]
    return setup['root'] / 'runs' / 'ddp', out


# ---------------------------------------------------------------------------------------------------------------------
# data parallel
# ---------------------------------------------------------------------------------------------------------------------
def test_two_processes_match_one_process_with_the_global_batch(setup, ddp_run):
    run_ddp, _ = ddp_run
    assert run_train(*setup['cpu'], '-b', '8', '--experiment', 'single') == 0
    run_one = setup['root'] / 'runs' / 'single'
    w0, w_ddp, w_one = torch.load(setup['init'], weights_only=True), _weights(run_ddp / 'last.pth.tar'), \
        _weights(run_one / 'last.pth.tar')
    assert w_ddp.keys() == w_one.keys() == w0.keys()
    # every weight moves; a bias of 1 (paper init) may not: lr x its gradient can be below float32's spacing at 1.0
    assert all((w_one[n] - w0[n]).norm() > 0 for n in w0 if n.endswith('weight'))
    for name in w0:
        update = (w_one[name] - w0[name]).norm()
        # tolerance: float32 summation order (one all-reduce of 2 means vs one mean of 8); measured 4e-5 of the
        # update, while a wrong gradient average (local only, or summed) is off by the size of the update
        assert (w_ddp[name] - w_one[name]).norm() <= 1e-2 * update, name
    s_ddp, s_one = _summary(run_ddp), _summary(run_one)
    assert [r['epoch'] for r in s_ddp] == [r['epoch'] for r in s_one] == list(range(EPOCHS))
    for a, b in zip(s_ddp, s_one):
        for key in ('train_loss', 'eval_loss'):  # reduced over the processes
            assert a[key] == pytest.approx(b[key], rel=1e-4), key
        for key in ('train_top1', 'eval_top1', 'eval_top5'):  # eval: 5 images, the padding repeat not counted
            assert a[key] == pytest.approx(b[key], abs=1e-6), key
        assert b['eval_top1'] * 5 / 100 == pytest.approx(round(b['eval_top1'] * 5 / 100))


def test_the_replicas_stay_identical(ddp_run):
    run_dir, _ = ddp_run
    log = (run_dir / 'log.txt').read_text()
    digests = re.findall(r'weights identical on 2 processes \(sha256 ([0-9a-f]{12})\)', log)
    assert len(digests) == EPOCHS, log
    assert 'diverged' not in log
    # the digest the processes agreed on is that of the weights process 0 saved
    assert train.weights_digest(_weights(run_dir / 'last.pth.tar')).startswith(digests[-1])


def test_only_process_0_writes(setup, ddp_run):
    run_dir, out = ddp_run
    assert sorted(p.name for p in (setup['root'] / 'runs').iterdir() if p.name in ('ddp', 'ddp-1')) == ['ddp']
    assert not list(setup['cwd'].iterdir())
    names = {p.name for p in run_dir.iterdir()}
    assert {'args.yaml', 'log.txt', 'summary.csv', 'last.pth.tar', 'model_best.pth.tar', 'last.safetensors',
            'model_best.safetensors', 'acc.png', 'loss.png', 'class_map.txt', 'conv1'} <= names
    assert not [n for n in names if n.endswith('.tmp') or n.startswith('.')]
    assert sorted(p.name for p in (run_dir / 'conv1').iterdir()) == \
        ['epoch_0000.npy', 'epoch_0001.npy', 'epoch_0002.npy', 'towers.json']
    assert len(_summary(run_dir)) == EPOCHS
    for text in ((run_dir / 'log.txt').read_text(), out):
        assert text.count('epoch 0: train loss') == 1  # one process tells the story
    assert 'device cpu (towers on cpu, cpu); 2 processes (gloo)' in out
    ckpt = torch.load(run_dir / 'last.pth.tar', map_location='cpu', weights_only=True)
    assert ckpt['world_size'] == 2 and len(ckpt['rng_ranks']) == 2


# ---------------------------------------------------------------------------------------------------------------------
# faults
# ---------------------------------------------------------------------------------------------------------------------
def test_a_dead_process_ends_the_job_and_the_run_resumes_exactly(setup, ddp_run):
    run_dir = setup['root'] / 'runs' / 'dead'
    opts = [*setup['cpu'], '-b', '4', '--experiment', 'dead', '--model-parallel', 'cpu', 'cpu']
    rc, out, seconds = torchrun([setup['faulty'], 1, 1, 'die', *opts], setup['cwd'])
    assert rc != 0
    assert seconds < 90, out[-3000:]
    assert re.search(r'process 0 of 2: distributed training stopped: a collective operation failed, so another '
                     r'process has died', out), out[-3000:]
    assert f'run the same command again with --resume {run_dir / "last.pth.tar"}' in out
    assert torch.load(run_dir / 'last.pth.tar', map_location='cpu', weights_only=True)['epoch'] == 0

    rc, out, _ = torchrun(['-m', 'timm_alexnet_split', 'train', *opts, '--resume', run_dir / 'last.pth.tar'],
                          setup['cwd'])
    assert rc == 0, out[-4000:]
    ref_dir, _ = ddp_run
    ref, got = _weights(ref_dir / 'last.pth.tar'), _weights(run_dir / 'last.pth.tar')
    assert all(torch.equal(ref[k], got[k]) for k in ref)  # per-process generators and sampler epoch restored
    assert _summary(run_dir) == _summary(ref_dir)


def test_a_hung_process_makes_the_others_time_out_with_a_clear_message(setup):
    """~50 s: startup, the 10 s timeout, then torchrun waits 30 s before it SIGKILLs the hung process."""
    opts = [*setup['cpu'], '-b', '4', '--experiment', 'hung', '--epochs', '1', '--dist-timeout', '10']
    rc, out, seconds = torchrun([setup['faulty'], 1, 0, 'hang', *opts], setup['cwd'])
    assert rc != 0
    assert seconds < 90, out[-3000:]
    assert 'process 0 of 2: distributed training stopped' in out, out[-3000:]
    assert 'did not answer within --dist-timeout 10 s' in out
    assert 'no epoch was completed: start the run again' in out


def test_sigterm_to_torchrun_stops_every_process_after_the_same_batch(setup):
    """torchrun passes SIGTERM on; the processes agree in their next all-reduce and stop together (one that went on
    alone would meet a dead peer), and process 0 saves a checkpoint."""
    run_dir = setup['root'] / 'runs' / 'sig'

    def stop_after_the_second_batch(proc, line):
        if 'Train: 0 [   1/4' in line:
            proc.send_signal(signal.SIGTERM)

    # 10 epochs of 4 steps: far more than the signal needs to arrive, so a run that ends on its own fails the test
    rc, out, seconds = torchrun(['-m', 'timm_alexnet_split', 'train', *setup['cpu'], '-b', '1', '--epochs', '10',
                                 '--experiment', 'sig'], setup['cwd'], on_line=stop_after_the_second_batch)
    assert rc != 0 and seconds < 90
    assert out.count('stopped by SIGTERM') == 1, out[-3000:]
    assert 'distributed training stopped' not in out and 'RuntimeError' not in out
    saved = [p for p in (run_dir / 'recovery.pth.tar', run_dir / 'last.pth.tar') if p.is_file()]
    assert saved, out[-3000:]
    assert all(torch.isfinite(v).all() for v in _weights(saved[0]).values())


def test_resume_with_another_process_count_warns_and_continues(setup, ddp_run, capsys):
    run_dir = setup['root'] / 'runs' / 'regrown'
    run_dir.mkdir()
    shutil.copy(ddp_run[0] / 'last.pth.tar', run_dir / 'last.pth.tar')
    assert run_train(*setup['cpu'], '-b', '8', '--epochs', EPOCHS + 1,
                                        '--resume', run_dir / 'last.pth.tar') == 0
    err = capsys.readouterr().err
    assert 'written by 2 process(es), this run has 1' in err and 'not bit-exact' in err
    ckpt = torch.load(run_dir / 'last.pth.tar', map_location='cpu', weights_only=True)
    assert ckpt['epoch'] == EPOCHS and ckpt['world_size'] == 1 and 'rng_ranks' not in ckpt


# ---------------------------------------------------------------------------------------------------------------------
# --model-parallel options
# ---------------------------------------------------------------------------------------------------------------------
def _args(*argv):
    args = train.parse_args([str(a) for a in argv])
    args.distributed, args.local_rank, args.world_size, args.rank = False, 0, 1, 0
    return args


def test_model_parallel_places_the_towers_and_keeps_the_state_dict():
    args = _args('--model-parallel', 'cpu', 'cpu', '--num-classes', '3', '--gp', 'avg')
    model = train.create_train_model(args, torch.device('cpu'))
    assert [t.device for t in model.towers] == [torch.device('cpu')] * 2
    plain = train.create_train_model(_args('--num-classes', '3', '--gp', 'avg'), torch.device('cpu'))
    assert list(model.state_dict()) == list(plain.state_dict())
    assert train.model_parallel_spec(_args('--model-parallel', 'none')) is None


@pytest.mark.parametrize('argv, match', [
    (['--model-parallel', 'cpu', 'cpu', 'cpu'], '3 devices for 2 towers'),
    (['--model-parallel', 'cpu', 'cpu', '--model', 'resnet10t'], 'resnet10t has no towers'),
    (['--model-parallel', '0'], 'K >= 1'),
] + ([] if CUDA else [(['--model-parallel', '2'], 'CUDA is not available'),
                      (['--model-parallel', 'cuda:0', 'cuda:1'], 'CUDA is not available')]))
def test_model_parallel_refuses_what_cannot_work(argv, match):
    with pytest.raises(UserError, match=match):
        train.create_train_model(_args('--num-classes', '3', '--gp', 'avg', *argv), torch.device('cpu'))


def test_model_parallel_and_device_must_agree():
    args = _args('--model-parallel', 'cpu', 'cpu', '--device', 'cuda')
    with pytest.raises(UserError, match='disagree'):
        train.devices.model_parallel_kind(args)
    args = _args('--model-parallel', 'cpu', 'cpu')
    train.devices.model_parallel_kind(args)
    assert args.device == 'cpu'
    with pytest.raises(UserError, match='not a device'):
        train.devices.model_parallel_kind(_args('--model-parallel', 'gpu7', 'cpu'))


# ---------------------------------------------------------------------------------------------------------------------
# GPUs (skipped without CUDA)
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason='needs CUDA')
def test_towers_placed_on_one_gpu_train_like_the_unplaced_model(setup):
    runs = {}
    for name, extra in (('gpu_plain', ['--device', 'cuda']), ('gpu_placed', ['--model-parallel', 'cuda:0', 'cuda:0'])):
        assert run_train(*setup['opts'], '-b', '8', '--experiment', name, *extra) == 0
        runs[name] = _weights(setup['root'] / 'runs' / name / 'last.pth.tar')
    w0 = torch.load(setup['init'], weights_only=True)
    for k in w0:
        update = (runs['gpu_plain'][k] - w0[k]).norm()
        assert (runs['gpu_placed'][k] - runs['gpu_plain'][k]).norm() <= 1e-2 * update + 1e-6, k


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason='needs two GPUs')
def test_two_processes_on_two_gpus_with_nccl(setup):
    rc, out, _ = torchrun(['-m', 'timm_alexnet_split', 'train', *setup['opts'], '-b', '4', '--experiment', 'nccl',
                           '--model-parallel', '1'], setup['cwd'])
    assert rc == 0, out[-4000:]
    assert '2 processes (nccl)' in out and out.count('weights identical on 2 processes') == EPOCHS


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason='needs two GPUs')
def test_towers_on_two_gpus_in_one_process(setup):
    assert run_train(*setup['opts'], '-b', '8', '--experiment', 'two_gpus',
                                        '--model-parallel', 'cuda:0', 'cuda:1') == 0
    ckpt = torch.load(setup['root'] / 'runs' / 'two_gpus' / 'last.pth.tar', map_location='cpu', weights_only=True)
    assert ckpt['epoch'] == EPOCHS - 1
