"""Loader workers' batch buffers in shared memory, used again once the main process has let go of them.

A worker hands each batch to the main process in shared memory. Made fresh for every batch (what PyTorch's
``default_collate`` and, until now, our ``collate_uint8`` do), a 224-px batch of 32 costs ~4.4 ms before a pixel
is written: the segment's creation and ~1,200 first-touch page faults, ~140 us an image, 15-30% of a CPU
worker. Here each worker keeps a few buffers and fills one again only when the main process has *said* it is
done with it: the batch crosses as a :class:`SentBatch`, whose unpickling in the main process (where PyTorch's
loader receives it, in its pin-memory thread or its iterator) watches each tensor's storage; when that storage
dies (every tensor and view of it gone: the training step's, a prefetcher's, the source of a pinned copy), the
buffer's ticket is written into a table shared with the workers. A worker reuses a buffer only when the table
holds the ticket it sent the buffer with. Nothing else frees a buffer: a batch kept for ever, one received by a
process that did not make the :class:`BatchBuffers`, one sent on to another process (pickled for a
torch.multiprocessing queue), a forked child dropping its copy, or interpreter exit leaves the buffer held and its
worker to fresh memory, as before. Under torch's 'file_system' sharing strategy nothing is reused (a segment
there outlives a worker that ends by ``os._exit``).

With ``keep_mapped`` (workers that persist across epochs), the main process keeps each buffer mapped once it has
received it, and a worker sends a buffer the main process has freed before without its file descriptor: as a
:class:`Mapped` reference (the buffer's table index and ticket, the tensor's dtype, shape and strides), which the
main process checks against the ticket in the buffer's own trailer. Each batch it hands on is a view over a new
storage of the mapped bytes, watched as above. (A descriptor crosses through a socket to the worker, with a
handshake, for each tensor of each batch: ~4% of a CPU worker's time, and as much of the main process's.) The
mappings are kept per worker process, and those of a worker that has ended give way to its successor's. Such a
batch is not in shared memory itself: sent on to another process, it is copied there (and its buffer stays held).

Invariants: a buffer is written again only after the main process's last reference to its previous contents
died, in that process, without its storage having been sent on (the ticket is unique per batch, so a late release
of an earlier batch frees nothing); the pixels, dtypes and shapes are those of fresh buffers (a tensor is a view
of its buffer's first bytes; the buffer ends with a trailer: magic, the owner's token, the table index, the
ticket; a saved or deep-copied batch carries those bytes too); the main process receives plain tuples. Outside a
worker buffers are ordinary memory and batches plain tuples. Drawing tickets uses no seeded random stream. A
reference is sent only for a buffer its worker got back through the table (so the main process mapped it), and is
resolved only when the mapped buffer's trailer holds that reference's ticket: anything else is an error, never
another batch's pixels.
"""
from __future__ import annotations

import os
import weakref
from multiprocessing.reduction import ForkingPickler
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

import numpy as np
import torch
from torch.multiprocessing import reductions

MAGIC = 0x3153_4655_4248_4354  # the trailer's first int64: marks a buffer this module made
TRAILER_BYTES = 5 * 8  # magic, owner's token, index in the owner's table, ticket, the worker's pid
ROLES = ('images', 'targets')  # each its own buffers: a batch's two tensors never compete for a slot

_OWNERS: 'weakref.WeakValueDictionary[int, BatchBuffers]' = weakref.WeakValueDictionary()  # token -> made here
_WATCHED: Dict[int, Tuple[int, weakref.finalize]] = {}  # a watched storage's data_ptr -> (ticket, its finalizer)


def _random_int63() -> int:
    return int.from_bytes(os.urandom(8), 'little') >> 1 or 1


class BatchBuffers:
    """Per worker and role, ``slots`` reusable shared-memory buffers, and the table through which the process that
    made this object (the loader's main process, before its workers start) frees them. Picklable for spawned
    workers; each process keeps its own buffers."""

    def __init__(self, workers: int, slots: int = 4, keep_mapped: bool = False) -> None:
        self.workers, self.slots, self.keep_mapped = max(1, workers), slots, keep_mapped
        self.token, self.pid = _random_int63(), os.getpid()
        self.released = torch.zeros(self.workers * len(ROLES) * slots, dtype=torch.int64).share_memory_()
        self._pools: Dict[str, _WorkerPool] = {}
        self._mapped: Dict[Tuple[int, int], torch.UntypedStorage] = {}  # keep_mapped: (worker pid, index) -> mapped
        _OWNERS[self.token] = self
        _sent_on_storages_are_kept()

    def __getstate__(self) -> Dict[str, Any]:
        return {**self.__dict__, '_pools': {}, '_mapped': {}}

    def storage(self, nbytes: int, role: str = 'images') -> torch.UntypedStorage:
        """A storage of at least ``nbytes`` for one batch's ``role`` tensor: in a loader worker a buffer of this
        worker's pool (one the main process has freed, or a new one while the pool has room, else fresh shared
        memory); in any other process ordinary memory."""
        info = torch.utils.data.get_worker_info()
        if info is None:
            return torch.UntypedStorage(nbytes)
        if info.id >= self.workers or torch.multiprocessing.get_sharing_strategy() != 'file_descriptor':
            # 'file_system' segments live until every holder frees them: a worker ending by os._exit never does,
            # so its buffers would stay in /dev/shm until the main process exits
            return torch.UntypedStorage._new_shared(nbytes)
        pool = self._pools.get(role)
        if pool is None or pool.pid != os.getpid():
            first = (info.id * len(ROLES) + ROLES.index(role)) * self.slots
            pool = self._pools[role] = _WorkerPool(self.released.numpy(), self.token, first, self.slots)
        return pool.take(nbytes)

    def reference(self, tensor: torch.Tensor) -> Optional['Mapped']:
        """In a worker, with ``keep_mapped``: ``tensor`` as a reference the main process resolves without a file
        descriptor, when its buffer is one that process maps already (freed there once); otherwise None."""
        if not self.keep_mapped:
            return None
        for pool in self._pools.values():
            found = pool.mapped_slot(tensor.untyped_storage().data_ptr())
            if found is not None:
                return Mapped(self.token, pool.first_index + found[0], found[1], pool.pid, tensor.dtype,
                              tuple(tensor.shape), tensor.stride(), tensor.storage_offset())
        return None

    def received(self, tensor: torch.Tensor, trailer: 'Trailer') -> torch.Tensor:
        """A tensor in a buffer received here with its descriptor: watched; with ``keep_mapped``, the buffer is kept
        mapped (in place of any its worker's table index held for a worker no longer running) and the batch handed
        on as a view over a new storage of it."""
        index = trailer.index
        if os.getpid() != self.pid or not 0 <= index < self.released.numel():
            return tensor
        if self.keep_mapped:
            for key in [k for k in self._mapped if k[1] == index and k[0] != trailer.pid and not _running(k[0])]:
                del self._mapped[key]  # a worker that ended: the index is its successor's now
            self._mapped[trailer.pid, index] = tensor.untyped_storage()
            tensor = self._fresh_view((trailer.pid, index), tensor.dtype, tuple(tensor.shape), tensor.stride(),
                                      tensor.storage_offset())
        self.watch(tensor.untyped_storage(), index, trailer.ticket)
        return tensor

    def resolve(self, ref: 'Mapped') -> torch.Tensor:
        """The tensor a worker sent as ``ref``: a view over a new storage of the buffer mapped here, watched."""
        base = self._mapped.get((ref.pid, ref.index)) if os.getpid() == self.pid else None
        if base is None or read_trailer(base) != (self.token, ref.index, ref.ticket, ref.pid):
            raise RuntimeError(f'batch buffer {ref.index} arrived without its descriptor, but this process does not '
                               'map it with the ticket it was sent with (a bug in data/batch_buffers.py)')
        tensor = self._fresh_view((ref.pid, ref.index), ref.dtype, ref.shape, ref.stride, ref.offset)
        self.watch(tensor.untyped_storage(), ref.index, ref.ticket)
        return tensor

    def _fresh_view(self, key: Tuple[int, int], dtype: torch.dtype, shape: Tuple[int, ...], stride: Tuple[int, ...],
                    offset: int) -> torch.Tensor:
        """A tensor over a new storage (its own life, the batch's) of the bytes of the buffer mapped at ``key``."""
        base = self._mapped[key]
        whole = torch.from_numpy(batch_view(base, (base.nbytes(),), torch.uint8).numpy())
        return torch.empty(0, dtype=dtype).set_(whole.untyped_storage(), offset, shape, stride)

    def watch(self, storage: torch.UntypedStorage, index: int, ticket: int) -> None:
        """Free buffer ``index`` (sent with ``ticket``) when ``storage``, its contents received here, dies: only in
        the process that made this object (a forked child dropping its copy frees nothing), not at interpreter exit
        (workers may still run), and never once the storage has been sent on to another process."""
        if os.getpid() != self.pid or not 0 <= index < self.released.numel():
            return
        key = storage.data_ptr()
        finalizer = weakref.finalize(storage, _release, self.released.numpy(), index, ticket, self.pid, key)
        finalizer.atexit = False
        _WATCHED[key] = (ticket, finalizer)


class _WorkerPool:
    """One worker's buffers of one role: per slot the storage, the ticket it was last sent with, and whether the main
    process has freed it once (so maps it, with keep_mapped)."""

    def __init__(self, table: np.ndarray, token: int, first_index: int, slots: int) -> None:
        self.table, self.token, self.first_index, self.slots = table, token, first_index, slots
        self.pid = os.getpid()
        self.buffers: List[Tuple[torch.UntypedStorage, int, bool]] = []

    def take(self, nbytes: int) -> torch.UntypedStorage:
        size = _buffer_size(nbytes)
        free = [slot for slot, (_, ticket, _) in enumerate(self.buffers)
                if self.table[self.first_index + slot] == ticket]
        same_size = [slot for slot in free if self.buffers[slot][0].nbytes() == size]
        if same_size:
            return self._send(same_size[0], self.buffers[same_size[0]][0], freed_before=True)
        if free:  # a freed buffer of another size (a last, smaller batch): made again at this size
            return self._send(free[0], torch.UntypedStorage._new_shared(size), freed_before=False)
        if len(self.buffers) < self.slots:
            self.buffers.append((torch.UntypedStorage._new_shared(size), 0, False))
            return self._send(len(self.buffers) - 1, self.buffers[-1][0], freed_before=False)
        return torch.UntypedStorage._new_shared(nbytes)  # every buffer still held by the main process

    def _send(self, slot: int, storage: torch.UntypedStorage, freed_before: bool) -> torch.UntypedStorage:
        ticket = _random_int63()
        self.buffers[slot] = (storage, ticket, freed_before)
        _trailer_view(storage)[:] = torch.tensor([MAGIC, self.token, self.first_index + slot, ticket, self.pid])
        return storage

    def mapped_slot(self, data_ptr: int) -> Optional[Tuple[int, int]]:
        """(slot, ticket) of the buffer at ``data_ptr`` when the main process has freed it before, else None."""
        for slot, (storage, ticket, freed_before) in enumerate(self.buffers):
            if freed_before and storage.data_ptr() == data_ptr:
                return slot, ticket
        return None


def _buffer_size(nbytes: int) -> int:
    """Room for ``nbytes`` and the trailer, the trailer 8-byte aligned."""
    return -(-nbytes // 8) * 8 + TRAILER_BYTES


def _trailer_view(storage: torch.UntypedStorage) -> torch.Tensor:
    n = storage.nbytes()
    return torch.empty(0, dtype=torch.uint8).set_(storage, n - TRAILER_BYTES, (TRAILER_BYTES,)).view(torch.int64)


class Trailer(NamedTuple):
    token: int  # the owner's (the BatchBuffers')
    index: int  # in the owner's table
    ticket: int  # the batch's
    pid: int  # the worker that made the buffer


def read_trailer(storage: torch.UntypedStorage) -> Optional[Trailer]:
    """The trailer of a buffer made here; None for any other storage."""
    n = storage.nbytes()
    if n < TRAILER_BYTES or n % 8:
        return None
    magic, *fields = _trailer_view(storage).tolist()
    return Trailer(*fields) if magic == MAGIC else None


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # there, but not ours to signal
        return True
    return True


def _release(table: np.ndarray, index: int, ticket: int, owner_pid: int, key: int) -> None:
    if os.getpid() != owner_pid:
        return
    if _WATCHED.get(key, (None,))[0] == ticket:
        del _WATCHED[key]
    table[index] = ticket


def _sent_on_storages_are_kept() -> None:
    """Storages pickled for another process (a torch.multiprocessing queue) are not watched any more: that process
    may read them after this one drops them. torch's own reduction does the rest."""
    if ForkingPickler._extra_reducers.get(torch.UntypedStorage) is not _reduce_storage:
        ForkingPickler.register(torch.UntypedStorage, _reduce_storage)


def _reduce_storage(storage: torch.UntypedStorage) -> Any:
    entry = _WATCHED.pop(storage.data_ptr(), None)
    if entry is not None:
        entry[1].detach()
    return reductions.reduce_storage(storage)


def batch_view(storage: torch.UntypedStorage, shape: Tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """A contiguous tensor of ``shape`` over the first bytes of ``storage``."""
    return torch.empty(0, dtype=dtype).set_(storage, 0, shape)


class Mapped(NamedTuple):
    """A tensor sent without its descriptor: which buffer (owner's token, table index, the ticket it was sent with,
    the worker that made it) and how the tensor lies in it."""
    token: int
    index: int
    ticket: int
    pid: int
    dtype: torch.dtype
    shape: Tuple[int, ...]
    stride: Tuple[int, ...]
    offset: int


class SentBatch(tuple):
    """A batch on its way from a worker: unpickled (in the main process) as a plain tuple whose buffers are
    watched by the :class:`BatchBuffers` that made them, where that object lives; tensors in buffers the main
    process maps already travel as :class:`Mapped` references (``buffers``' keep_mapped)."""

    def __new__(cls, items: Tuple[Any, ...], buffers: Optional[BatchBuffers] = None) -> 'SentBatch':
        batch = super().__new__(cls, items)
        batch.refs = tuple(buffers.reference(item) if buffers is not None and isinstance(item, torch.Tensor) else None
                           for item in items)
        return batch

    def __reduce__(self) -> Tuple[Any, Tuple[Tuple[Any, ...]]]:
        refs = getattr(self, 'refs', None) or (None,) * len(self)
        return _received, (tuple(item if ref is None else ref for item, ref in zip(self, refs)),)


def _received(items: Tuple[Any, ...]) -> Tuple[Any, ...]:
    return tuple(_receive(item) for item in items)


def _receive(item: Any) -> Any:
    if isinstance(item, Mapped):
        owner = _OWNERS.get(item.token)
        if owner is None:
            raise RuntimeError(f'batch buffer {item.index} arrived without its descriptor in a process that did not '
                               'make its BatchBuffers (a bug in data/batch_buffers.py)')
        return owner.resolve(item)
    if isinstance(item, torch.Tensor) and item.device.type == 'cpu':
        trailer = read_trailer(item.untyped_storage())
        owner = _OWNERS.get(trailer.token) if trailer is not None else None
        if owner is not None:
            return owner.received(item, trailer)
    return item
