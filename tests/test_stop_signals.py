"""Stopping on a signal, and failures of the machine: what the trainer's loops and the command line make of them.

The end-to-end cases (Ctrl-C and timeout's group-wide SIGTERM during training, a worker killed by the OOM killer)
are in test_train_inputs.py; these pin the rules themselves."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from timm.data.loader import PrefetchLoader

from timm_alexnet_split.cli import machine_failure
from timm_alexnet_split.data.decode import DeviceDecodeLoader
from timm_alexnet_split.data.shard_reader import EpochLoader
from timm_alexnet_split.train import loop
from timm_alexnet_split.train.loaders import _StopSignalsToMain, leave_stop_signals_to_main, shut_down_workers


def test_the_same_signal_twice_within_a_second_is_one_request_a_later_one_stops_at_once(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(loop.time, 'monotonic', lambda: now[0])
    stop = loop.StopRequest()
    stop._handle(signal.SIGTERM, None)
    now[0] += 0.01
    stop._handle(signal.SIGTERM, None)  # timeout's second delivery (to the process group): the same request
    assert stop.signum == signal.SIGTERM
    with pytest.raises(KeyboardInterrupt):  # another signal: a second request
        stop._handle(signal.SIGINT, None)
    now[0] += 1.5
    with pytest.raises(KeyboardInterrupt):  # the same signal a second and a half later: a person asking again
        stop._handle(signal.SIGTERM, None)


def _dying_loader(after):
    def batches():
        for i in range(after):
            yield i
        raise RuntimeError('DataLoader worker (pid 4242) is killed by signal: Terminated. ')
    return batches()


def test_a_worker_killed_by_the_stop_signal_ends_the_loop_as_the_stop_does():
    stop = loop.StopRequest()
    stop.signum = signal.SIGTERM
    seen = []
    with pytest.raises(loop.Interrupted) as e:
        for b in loop._batches(_dying_loader(3), stop):
            seen.append(b)
    assert seen == [0, 1, 2] and e.value.signum == signal.SIGTERM and stop.last_batch == 2


def test_a_worker_dying_without_a_stop_request_is_not_hidden():
    with pytest.raises(RuntimeError, match='killed by signal'):
        list(loop._batches(_dying_loader(1), loop.StopRequest()))
    with pytest.raises(RuntimeError, match='killed by signal'):
        list(loop._batches(_dying_loader(1), None))


def test_every_kind_of_loader_gets_workers_that_leave_stop_signals_to_the_main_process():
    def fresh():
        return torch.utils.data.DataLoader(list(range(4)), batch_size=2, num_workers=1)
    plain = fresh()
    assert leave_stop_signals_to_main(plain) is plain and isinstance(plain.worker_init_fn, _StopSignalsToMain)
    wrapped = [PrefetchLoader(fresh(), device=torch.device('cpu')), EpochLoader(fresh()),
               DeviceDecodeLoader(fresh(), torch.device('cpu'), (4, 4), 4, False, (0.5,) * 3, (0.5,) * 3)]
    for w in wrapped:
        leave_stop_signals_to_main(w)
        assert isinstance(w.loader.worker_init_fn, _StopSignalsToMain), type(w).__name__
    assert leave_stop_signals_to_main(None) is None
    with pytest.raises(TypeError, match='no torch DataLoader'):
        leave_stop_signals_to_main([1, 2, 3])


def test_a_worker_ignores_stop_signals_and_still_runs_the_loaders_own_init():
    seen = []
    init = _StopSignalsToMain(seen.append)
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        init(7)
        assert seen == [7]
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) == init._on_sigterm
        init._on_sigterm(signal.SIGTERM, None)  # the main process still runs: the worker goes on
    finally:
        for s, h in before.items():
            signal.signal(s, h)
    list(torch.utils.data.DataLoader(list(range(4)), num_workers=1, worker_init_fn=_StopSignalsToMain(None)))


def _persistent_loader(workers=2):
    data = torch.utils.data.TensorDataset(torch.arange(64.0))
    return leave_stop_signals_to_main(torch.utils.data.DataLoader(data, batch_size=4, num_workers=workers,
                                                                  persistent_workers=True))


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f'/proc/{pid}/stat') as f:  # a zombie has ended too
        return f.read().rsplit(')', 1)[1].split()[0] != 'Z'


def test_a_worker_ignores_a_sigterm_while_the_main_process_runs():
    loader = _persistent_loader()
    it = iter(loader)
    next(it), next(it)  # a batch from each of the two workers: both have run their init (batches come in turn)
    pids = [w.pid for w in it._workers]
    for pid in pids:
        os.kill(pid, signal.SIGTERM)  # what `timeout` sends the whole process group
    time.sleep(0.5)
    assert all(_alive(p) for p in pids)
    assert sum(len(b[0]) for b in it) == 56  # the epoch goes on to its end
    shut_down_workers(loader)
    assert not any(_alive(p) for p in pids)


def test_a_process_holding_a_persistent_loader_at_exit_ends():
    # multiprocessing terminates daemonic children at exit and then joins them: workers that ignored that SIGTERM
    # kept the process waiting forever (CI's pytest hung after its last test). Here the loader is kept alive to
    # the end by a reference cycle, as an exception's traceback in a test keeps a trainer's loaders.
    script = textwrap.dedent("""
        import torch
        from timm_alexnet_split.train.loaders import leave_stop_signals_to_main
        data = torch.utils.data.TensorDataset(torch.arange(64.0))
        loader = leave_stop_signals_to_main(torch.utils.data.DataLoader(data, batch_size=4, num_workers=2,
                                                                        persistent_workers=True))
        it = iter(loader)
        next(it)
        cycle = [it]
        cycle.append(cycle)
        print('workers', *[w.pid for w in it._workers], flush=True)
    """)
    done = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and 'Traceback' not in done.stderr, done.stderr
    pids = [int(p) for p in done.stdout.split()[1:]]
    assert len(pids) == 2 and not any(_alive(p) for p in pids)


def test_shut_down_workers_ends_a_wrapped_persistent_loaders_workers_and_it_can_start_again():
    loader = _persistent_loader(workers=1)
    wrapped = EpochLoader(loader)
    it = iter(loader)
    next(it)
    pid = it._workers[0].pid
    del it
    shut_down_workers(wrapped, None)
    assert not _alive(pid) and loader._iterator is None
    assert sum(len(b[0]) for b in loader) == 64  # a later epoch starts fresh workers
    shut_down_workers(loader)
    shut_down_workers(torch.utils.data.DataLoader(list(range(4))))  # no workers: nothing to do


@pytest.mark.parametrize('message, command, says, hint', [
    ('DataLoader worker (pid(s) 12) exited unexpectedly', 'train', 'out-of-memory killer', '--resume RUN/last.pth.tar'),
    ('DataLoader worker (pid 12) is killed by signal: Killed. ', 'sweep', 'fewer --workers', 'same sweep command'),
    ('DataLoader worker (pid 12) is killed by signal: Killed. ', 'validate', 'smaller --batch-size', None),
    ('DataLoader worker (pid 12) is killed by signal: Bus error. ', 'train', '/dev/shm', '--resume'),
    ('CUDA out of memory. Tried to allocate 2.00 GiB', 'train', 'smaller --batch-size', '--resume'),
])
def test_machine_failures_are_one_line_with_the_remedy_for_that_command(message, command, says, hint):
    line = machine_failure(RuntimeError(message), command)
    assert line is not None and says in line and '\n' not in line
    if hint:
        assert hint in line
    else:
        assert 'saved' not in line and 'resume' not in line


@pytest.mark.parametrize('message', ['DataLoader worker (pid 12) is killed by signal: Segmentation fault. ',
                                     'mat1 and mat2 shapes cannot be multiplied (4x3 and 5x6)'])
def test_a_crash_or_a_bug_keeps_its_traceback(message):
    assert machine_failure(RuntimeError(message), 'train') is None
