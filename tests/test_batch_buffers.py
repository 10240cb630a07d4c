"""Loader workers' reusable batch buffers (data/batch_buffers.py): a buffer is filled again only after the main process
dropped the batch it held, and the batches are exactly those of fresh buffers."""
from __future__ import annotations

import gc
import os
import types

import numpy as np
import pytest
import torch

from timm_alexnet_split.data import batch_buffers
from timm_alexnet_split.data.batch_buffers import BatchBuffers, read_trailer
from timm_alexnet_split.data.collate import CollateUint8


class Numbered(torch.utils.data.Dataset):
    """Image i is filled with i % 251, label i: a batch's contents say which batch it is."""

    def __init__(self, n: int, size: int = 16) -> None:
        self.n, self.size = n, size

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return np.full((3, self.size, self.size), i % 251, dtype=np.uint8), i


def _expected(first: int, n: int, size: int = 16):
    return (torch.arange(first, first + n) % 251).to(torch.uint8).view(n, 1, 1, 1).expand(n, 3, size, size), \
        torch.arange(first, first + n)


def _loader(buffers, n=32 * 12, batch=32, workers=1, **kw):
    return torch.utils.data.DataLoader(Numbered(n), batch_size=batch, num_workers=workers,
                                       collate_fn=CollateUint8(False, buffers), **kw)


def _inode(tensor: torch.Tensor) -> int:
    fd, _ = tensor.untyped_storage()._share_fd_cpu_()
    return os.fstat(fd).st_ino


@pytest.mark.skipif(torch.multiprocessing.get_sharing_strategy() != 'file_descriptor',
                    reason='the buffers are told apart by their shared-memory file (file_descriptor strategy)')
def test_a_worker_fills_the_same_few_buffers_again_when_its_batches_are_dropped():
    inodes = []
    for x, _ in _loader(BatchBuffers(1, slots=5)):
        inodes.append(_inode(x))
    assert len(inodes) == 12
    assert len(set(inodes)) <= 5  # fresh buffers: twelve segments


def test_a_batch_the_main_process_keeps_is_never_written_again():
    kept, later = [], 0
    for i, (x, y) in enumerate(_loader(BatchBuffers(1, slots=3), n=32 * 20)):
        if i < 4:  # more than the worker's slots: it must fall back to fresh memory, not reuse these
            kept.append((i, x, y))
        else:
            later += 1
    assert later == 16
    for i, x, y in kept:
        want_x, want_y = _expected(32 * i, 32)
        assert torch.equal(x, want_x) and torch.equal(y, want_y), f'batch {i} was overwritten'


@pytest.mark.parametrize('persistent, keep_mapped', [(False, False), (True, False), (True, True), (False, True)])
def test_batches_kept_across_epochs_and_worker_restarts_stay_intact(persistent, keep_mapped):
    loader = _loader(BatchBuffers(2, slots=3, keep_mapped=keep_mapped), n=32 * 9, workers=2,
                     persistent_workers=persistent)
    kept = []
    for epoch in range(3):
        for i, (x, y) in enumerate(loader):
            if (i + epoch) % 3 == 0:
                kept.append((i, x, y))
    assert len(kept) == 9
    for i, x, y in kept:
        want_x, want_y = _expected(32 * i, 32)
        assert torch.equal(x, want_x) and torch.equal(y, want_y), f'a kept batch {i} was overwritten'


@pytest.mark.parametrize('keep_mapped', [False, True])
def test_batches_from_reused_buffers_equal_fresh_ones_over_epochs_and_a_short_last_batch(keep_mapped):
    fresh = _loader(None, n=32 * 5 + 7, workers=2)
    reused = _loader(BatchBuffers(2, slots=5, keep_mapped=keep_mapped), n=32 * 5 + 7, workers=2,
                     persistent_workers=True)
    for _ in range(3):
        got = [(x.clone(), y.clone()) for x, y in reused]
        want = list(fresh)
        assert [tuple(x.shape) for x, _ in got] == [tuple(x.shape) for x, _ in want]
        for (gx, gy), (wx, wy) in zip(got, want):
            assert gx.dtype == wx.dtype == torch.uint8 and gy.dtype == wy.dtype == torch.int64
            assert torch.equal(gx, wx) and torch.equal(gy, wy)


def test_the_main_process_receives_plain_tuples_and_tensors_without_the_trailer_in_view():
    x, y = batch = next(iter(_loader(BatchBuffers(1))))
    assert type(batch) in (tuple, list)  # PyTorch's loader gives what the collate built: a plain tuple here
    assert x.shape == (32, 3, 16, 16) and x.is_contiguous() and y.shape == (32,)
    assert read_trailer(x.untyped_storage()) is not None  # the buffer's trailer lies past the tensor's bytes


def test_spawned_workers_reuse_buffers_too():
    loader = _loader(BatchBuffers(1, slots=5), n=32 * 8, multiprocessing_context='spawn')
    got, inodes = [], set()
    for x, y in loader:
        got.append((x.clone(), y.clone()))
        if torch.multiprocessing.get_sharing_strategy() == 'file_descriptor':
            inodes.add(_inode(x))
    for i, (x, y) in enumerate(got):
        want_x, want_y = _expected(32 * i, 32)
        assert torch.equal(x, want_x) and torch.equal(y, want_y)
    assert len(inodes) <= 5


@pytest.fixture
def as_worker(monkeypatch):
    """This process taken for loader worker 0 (the pool's rule tested without a second process)."""
    monkeypatch.setattr(torch.utils.data, 'get_worker_info', lambda: types.SimpleNamespace(id=0))


def test_a_buffer_is_free_only_when_the_table_holds_the_ticket_it_was_last_sent_with(as_worker):
    buffers = BatchBuffers(1, slots=2)
    first = buffers.storage(96)
    token, index, ticket, _ = read_trailer(first)
    assert token == buffers.token and first.nbytes() >= 96
    second = buffers.storage(96)
    assert second.data_ptr() != first.data_ptr() and read_trailer(second) is not None  # not released: slot two
    buffers.released[index] = ticket ^ 1  # a stale ticket (an earlier batch of this slot) frees nothing
    third = buffers.storage(96)
    assert third.data_ptr() not in (first.data_ptr(), second.data_ptr())
    assert third.nbytes() == 96 and read_trailer(third) is None  # pool full: fresh memory, no trailer
    buffers.released[index] = ticket
    again = buffers.storage(96)
    assert again.data_ptr() == first.data_ptr()
    assert read_trailer(again)[2] != ticket  # a new ticket for the new batch


def test_a_freed_buffer_of_another_size_is_made_again_at_the_new_size(as_worker):
    buffers = BatchBuffers(1, slots=1)
    first = buffers.storage(1000)
    _, index, ticket, _ = read_trailer(first)
    buffers.released[index] = ticket
    smaller = buffers.storage(10)
    assert smaller.nbytes() < first.nbytes() and read_trailer(smaller)[1] == index


def test_images_and_targets_keep_separate_buffers(as_worker):
    buffers = BatchBuffers(1, slots=1)
    images, targets = buffers.storage(1000, 'images'), buffers.storage(8, 'targets')
    assert read_trailer(images) is not None and read_trailer(targets) is not None
    assert read_trailer(images)[1] != read_trailer(targets)[1]


def _as_received(buffers, ticket=1234, token=None):
    """A 64-byte uint8 tensor over shared memory with a buffer's trailer, as the main process receives one."""
    storage = torch.UntypedStorage._new_shared(64 + batch_buffers.TRAILER_BYTES)
    batch_buffers._trailer_view(storage)[:] = torch.tensor([batch_buffers.MAGIC, token or buffers.token, 0, ticket,
                                                            os.getpid()])
    return batch_buffers.batch_view(storage, (64,), torch.uint8)


def test_a_received_batch_frees_its_buffer_when_its_last_view_dies():
    buffers = BatchBuffers(1, slots=1)
    x = _as_received(buffers)
    received = batch_buffers._received((x, 'label'))
    view = received[0][8:]
    del x, received
    assert buffers.released[0] == 0  # a view still holds it
    del view
    assert buffers.released[0] == 1234


def test_storages_not_made_here_or_by_another_owner_are_left_alone():
    buffers = BatchBuffers(1, slots=1)
    plain = torch.zeros(64, dtype=torch.uint8)
    foreign = _as_received(buffers, token=buffers.token ^ 1)  # a trailer naming no live owner
    received = batch_buffers._received((plain, foreign))
    del plain, foreign, received
    assert int(buffers.released.sum()) == 0


def test_a_batch_sent_on_to_another_process_is_never_freed():
    """That process may read it after this one drops it (a torch.multiprocessing queue pickles it)."""
    from multiprocessing.reduction import ForkingPickler
    buffers = BatchBuffers(1, slots=1)
    (x,) = batch_buffers._received((_as_received(buffers),))
    sent = ForkingPickler.dumps(x)
    del x
    assert int(buffers.released.sum()) == 0
    del sent


def test_a_forked_child_dropping_its_copy_frees_nothing():
    buffers = BatchBuffers(1, slots=1)
    kept = list(batch_buffers._received((_as_received(buffers),)))
    pid = os.fork()
    if pid == 0:  # the child: drop the inherited batch, run its finalizers, leave without Python's exit handlers
        kept.clear()
        gc.collect()
        os._exit(0)
    os.waitpid(pid, 0)
    assert int(buffers.released.sum()) == 0
    kept.clear()
    assert int(buffers.released.sum()) == 1234  # the owner's own drop does


def test_interpreter_exit_frees_nothing():
    """At exit the workers may still run: weakref.finalize's exit call must not free the buffers of kept batches."""
    buffers = BatchBuffers(1, slots=1)
    (x,) = batch_buffers._received((_as_received(buffers),))
    ticket, finalizer = batch_buffers._WATCHED[x.untyped_storage().data_ptr()]
    assert ticket == 1234 and finalizer.alive and finalizer.atexit is False


def test_no_reuse_under_the_file_system_sharing_strategy(as_worker):
    """There a segment outlives a worker that ends by os._exit: pooled buffers would pile up in /dev/shm."""
    buffers = BatchBuffers(1, slots=2)
    before = torch.multiprocessing.get_sharing_strategy()
    torch.multiprocessing.set_sharing_strategy('file_system')
    try:
        storage = buffers.storage(96)
    finally:
        torch.multiprocessing.set_sharing_strategy(before)
    assert read_trailer(storage) is None and storage.is_shared()


def _descriptors_received(monkeypatch):
    """Counts the file descriptors this process fetches from a worker (a socket round trip each)."""
    from multiprocessing import resource_sharer
    calls = []
    detach = resource_sharer.DupFd.detach

    def counted(self):
        calls.append(1)
        return detach(self)
    monkeypatch.setattr(resource_sharer.DupFd, 'detach', counted)
    return calls


@pytest.mark.skipif(torch.multiprocessing.get_sharing_strategy() != 'file_descriptor',
                    reason='descriptors cross only under the file_descriptor strategy')
@pytest.mark.parametrize('keep_mapped', [False, True])
def test_with_keep_mapped_a_reused_buffer_crosses_without_its_descriptor(monkeypatch, keep_mapped):
    calls = _descriptors_received(monkeypatch)
    loader = _loader(BatchBuffers(1, slots=5, keep_mapped=keep_mapped), n=32 * 12, persistent_workers=True,
                     timeout=120)
    for _ in range(3):
        for i, (x, y) in enumerate(loader):
            want_x, want_y = _expected(32 * i, 32)
            assert torch.equal(x, want_x) and torch.equal(y, want_y)
    if keep_mapped:  # images and targets: at most one descriptor per slot, the first time it is sent
        assert 0 < len(calls) <= 2 * 5
    else:
        assert len(calls) == 2 * 12 * 3


def test_a_reference_resolves_only_to_the_buffer_mapped_with_its_ticket():
    """A reference is checked against the ticket in the mapped buffer's own trailer: never another batch's bytes."""
    buffers = BatchBuffers(1, slots=1, keep_mapped=True)
    (x,) = batch_buffers._received((_as_received(buffers, ticket=1234),))
    assert not x.untyped_storage().is_shared()  # handed on over a new storage; the mapped buffer is kept
    ref = batch_buffers.Mapped(buffers.token, 0, 1234, os.getpid(), torch.uint8, (8, 8), (8, 1), 0)
    (again,) = batch_buffers._received((ref,))
    assert again.shape == (8, 8) and again.data_ptr() == x.data_ptr()
    for bad in (ref._replace(ticket=999), ref._replace(index=1), ref._replace(token=buffers.token ^ 1),
                ref._replace(pid=os.getpid() + 1)):
        with pytest.raises(RuntimeError, match='without its descriptor'):
            batch_buffers._received((bad,))


def test_a_batch_handed_on_over_a_mapped_buffer_frees_it_when_its_last_view_dies():
    buffers = BatchBuffers(1, slots=1, keep_mapped=True)
    (x,) = batch_buffers._received((_as_received(buffers, ticket=1234),))
    view = x[8:]
    del x
    assert buffers.released[0] == 0
    del view
    assert buffers.released[0] == 1234  # the kept mapping does not hold the batch
    (y,) = batch_buffers._received((batch_buffers.Mapped(buffers.token, 0, 1234, os.getpid(), torch.uint8, (64,), (1,),
                                                         0),))
    assert buffers.released[0] == 1234  # (the same ticket again: nothing new to free until y dies)
    del y


def test_two_loaders_sharing_one_keep_mapped_buffers_object_each_get_their_own_batches():
    """The main process maps buffers per worker process: one loader's worker 0 does not take the place of
    another's (both send table index 0 ...), and a batch from either is its own."""
    collate = CollateUint8(False, BatchBuffers(1, slots=3, keep_mapped=True))
    first, second = (torch.utils.data.DataLoader(Numbered(8 * 6), batch_size=8, num_workers=1, collate_fn=collate,
                                                 persistent_workers=True, timeout=120) for _ in range(2))
    assert sum(x.shape[0] for x, _ in first) == 8 * 6  # the first loader's buffers mapped here, and freed
    rest = iter(first)
    held = next(rest)  # one of its buffers held while the second loader's worker sends its own
    for i, (x, y) in enumerate(second):
        assert torch.equal(x, _expected(8 * i, 8)[0]) and torch.equal(y, _expected(8 * i, 8)[1])
    del held, x, y
    for i, (x, y) in enumerate(rest, 1):  # the first loader's reused buffers arrive by reference
        assert torch.equal(x, _expected(8 * i, 8)[0]) and torch.equal(y, _expected(8 * i, 8)[1])


def test_the_buffers_of_workers_that_ended_are_not_kept_mapped():
    buffers = BatchBuffers(1, slots=3, keep_mapped=True)
    loader = _loader(buffers, n=32 * 6)  # fresh workers every epoch
    for _ in range(4):
        assert sum(x.shape[0] for x, _ in loader) == 32 * 6
    assert len({pid for pid, _ in buffers._mapped}) <= 2  # the last epoch's worker (and one not yet reaped)
