"""Training loader workers that persist across epochs, yet draw each epoch's augmentations as fresh workers would.

Fresh workers (PyTorch's default, and this trainer's before) cost a start-up every epoch: processes, the
dataset's copy, timm's wds pipeline, the first shard. They also make resume exact for free: each epoch's
iterator draws a base seed from the main process's default generator (whose state a checkpoint saves), and
worker k seeds ``random``, ``torch`` and NumPy from it. Persistent workers are seeded once, so a run resumed at
epoch e would crop and flip otherwise than the run it continues.

:class:`EpochSeeds` keeps both: at each epoch's ``iter()`` the main process draws the base seed itself, the same
draw from the same generator at the same point as a fresh iterator's, and puts it in shared memory with a count;
each worker, before it transforms its first sample of the epoch, seeds itself from it exactly as PyTorch and
timm's ``worker_seeding`` seed a fresh worker. The DataLoader's own one-time draw is moved to a private generator,
so the main process's random stream is the one fresh workers left. Result: the same batches, epoch by epoch, as
fresh workers give (tests compare them), and the same after a resume.

Invariant: only datasets whose samples' order does not depend on the worker's seed get persistent workers (map-
style datasets, whose order the main process's sampler draws; our shards' reader, whose order is its own seed's and
the shared epoch's); others (timm's wds reader of foreign shards, tfds, hfids) keep fresh workers. In a persistent
worker ``get_worker_info().seed`` stays the first epoch's (from a private generator, the same for every --seed):
nothing here or in timm's transforms reads it.
"""
from __future__ import annotations

import multiprocessing
import random
from typing import Any, Callable, Iterator, Optional, Tuple

import numpy as np
import torch
from torch.utils.data._utils.worker import _generate_state


class EpochSeeds:
    """The base seed of the current epoch, in shared memory; drawn by the main process, applied by each worker."""

    def __init__(self, worker_seeding: str = 'all') -> None:
        if worker_seeding not in ('all', 'part'):
            raise ValueError(f'worker_seeding {worker_seeding!r}: persistent workers are seeded for "all" or "part"')
        self.worker_seeding = worker_seeding
        ctx = multiprocessing.get_context()
        self._base = ctx.RawValue('q', 0)
        self._count = ctx.RawValue('q', 0)
        self._applied = 0  # per process: the count this worker last seeded itself for

    def draw(self) -> None:
        """Main process, at an epoch's iter(): the base seed, drawn as PyTorch's fresh iterator draws it."""
        self._base.value = int(torch.empty((), dtype=torch.int64).random_().item())
        self._count.value += 1

    def apply(self) -> None:
        """In a loader worker, before each sample: seed this worker for the epoch once, as a fresh one is seeded."""
        info = torch.utils.data.get_worker_info()
        count = int(self._count.value)
        if info is None or self._applied == count:
            return
        base = int(self._base.value)
        seed = base + info.id
        random.seed(seed)
        torch.manual_seed(seed)
        if self.worker_seeding == 'all':  # timm's _worker_init: NumPy from the worker's seed
            np.random.seed(seed % (2 ** 32 - 1))
        else:  # 'part': NumPy as PyTorch's worker loop seeds it
            np.random.seed(_generate_state(base, info.id))
        self._applied = count


class SeededTransform:
    """A dataset's transform that first lets :class:`EpochSeeds` seed the worker for the epoch."""

    def __init__(self, transform: Optional[Callable], seeds: EpochSeeds) -> None:
        self.transform, self.seeds = transform, seeds

    def __call__(self, item: Any) -> Any:
        self.seeds.apply()
        return self.transform(item) if self.transform is not None else item

    def __repr__(self) -> str:
        return f'SeededTransform({self.transform!r})'


class _LoaderWrapper:
    """A loader around ``self.loader``: its length and every attribute not in ``_own`` are the wrapped loader's."""

    _own: Tuple[str, ...] = ('loader',)

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str) -> Any:
        if name in self._own:  # not set yet (unpickling, a half-built object): never the wrapped loader's
            raise AttributeError(name)
        return getattr(self.loader, name)


class SeededEpochs(_LoaderWrapper):
    """A training loader (timm's PrefetchLoader, or our wrapper around one) whose every epoch first draws its base
    seed; everything else is the wrapped loader's.

    An epoch left unfinished would leave samples queued in the workers, transformed after the next draw under
    the next epoch's seed: its workers are ended before the next epoch (which then starts fresh ones)."""

    _own = ('loader', 'torch_loader', 'seeds', '_unfinished')

    def __init__(self, loader: Any, torch_loader: torch.utils.data.DataLoader, seeds: EpochSeeds) -> None:
        self.loader, self.torch_loader, self.seeds = loader, torch_loader, seeds
        self._unfinished = False

    def __iter__(self) -> Iterator:
        if self._unfinished:
            end_workers(self.torch_loader)
        self.seeds.draw()
        self._unfinished = True
        yield from self.loader
        self._unfinished = False


def end_workers(torch_loader: torch.utils.data.DataLoader) -> None:
    """End the workers a DataLoader keeps between epochs (PyTorch holds them in ``_iterator``) now; a loader with
    none alive passes. The next epoch starts fresh ones."""
    iterator = getattr(torch_loader, '_iterator', None)
    if iterator is not None and hasattr(iterator, '_shutdown_workers'):
        iterator._shutdown_workers()
        torch_loader._iterator = None


def persist_workers(loader: Any, torch_loader: torch.utils.data.DataLoader, worker_seeding: str) -> SeededEpochs:
    """``loader`` (around ``torch_loader``, made with persistent workers) seeded per epoch as fresh workers are."""
    seeds = EpochSeeds(worker_seeding)
    dataset = torch_loader.dataset
    dataset.transform = SeededTransform(dataset.transform, seeds)
    private_iterator_draw(torch_loader)
    return SeededEpochs(loader, torch_loader, seeds)


def private_iterator_draw(torch_loader: torch.utils.data.DataLoader) -> None:
    """The draw a DataLoader's iterator makes when it is created (its base seed), from a private generator: a
    loader whose workers persist creates one iterator per run, and a resumed run one more, so from the default
    generator it would leave a resumed run's random stream one draw off a straight run's. The private generator is
    set after construction: a sampler the DataLoader made (RandomSampler) keeps the default generator."""
    torch_loader.generator = torch.Generator().manual_seed(0)


class DrawsAsFresh(_LoaderWrapper):
    """A loader without random transforms (evaluation) whose workers persist, drawing from the default generator,
    at every pass, the one number a fresh iterator draws there: the main process's random stream is the one fresh
    workers leave, in a straight run and a resumed one alike (and in runs made before its workers persisted).
    Everything else is the wrapped loader's."""

    def __init__(self, loader: Any, torch_loader: torch.utils.data.DataLoader) -> None:
        self.loader = loader
        private_iterator_draw(torch_loader)

    def __iter__(self) -> Iterator:
        torch.empty((), dtype=torch.int64).random_()  # a fresh iterator's base seed
        return iter(self.loader)
