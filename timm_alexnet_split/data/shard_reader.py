"""Reading prepare-shards' output: checks before timm's wds reader, class names, epochs, and ShardBytes.

- :func:`check_wds` / :func:`adopt_wds`: what the trainer's ``_create_dataset`` does around timm's reader for
  ``--dataset wds/NAME --data-dir OUT``: a missing or malformed ``_info.json`` is one line, class names come from
  ``class_map.txt``, each split gets its own root.
- :class:`EpochLoader`: passes the epoch to timm's wds dataset (its shard shuffle) through ``loader.sampler``.
- :func:`even_split_note`: when timm's reader will not show each training sample exactly once per epoch.
- :class:`ShardBytes`: batches of JPEG bytes for decoding on the device (``--decode gpu``, decode.py).
"""
from __future__ import annotations

import json
import logging
import multiprocessing
import os
import random
import tarfile
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple

import torch

from ..errors import UserError, one_line
from .jpeg import decode_rgb
from .shards import CLASS_MAP, FORMAT, INFO, PROG, read_shard


# ---------------------------------------------------------------------------------------------------------------------
# reading: checks before timm's reader, class names
# ---------------------------------------------------------------------------------------------------------------------
def load_info(root: str) -> Dict[str, object]:
    """OUT/_info.json, checked enough that timm's reader will not fail on it; UserError (one line) otherwise."""
    path = Path(root) / INFO
    hint = f'make the shards with `{PROG} IMAGE_FOLDER {root}`'
    if not Path(root).is_dir():
        raise UserError(f'shard folder {root} not found; {hint}')
    if not path.is_file():
        raise UserError(f'{path} not found: {root} holds no complete set of shards; {hint}')
    try:
        info = json.loads(path.read_text(encoding='utf-8'))
        splits = info['splits']
        for s in splits.values():
            if len(s['filenames']) != len(s['shard_lengths']) or int(s['num_samples']) != sum(map(int, s['shard_lengths'])):
                raise ValueError('shard_lengths do not match filenames / num_samples')
            str(s['name'])
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise UserError(f'{path} is not a readable shard index ({type(e).__name__}: {e}); {hint}') from None
    return info


def check_split(root: str, split: str) -> Dict[str, object]:
    """The split's entry of _info.json; UserError when it is missing or its shard files are."""
    info = load_info(root)
    splits = info['splits']
    if split not in splits:  # type: ignore[operator]
        raise UserError(f'split {split!r} not in {Path(root) / INFO} (it has {", ".join(splits)}); '  # type: ignore
                        'choose with --train-split / --val-split')
    entry = splits[split]  # type: ignore[index]
    missing = [f for f in entry['filenames'] if not (Path(root) / f).is_file()]
    if missing:
        raise UserError(f'{len(missing)} shard file(s) of split {split!r} missing under {root} (first: {missing[0]})')
    return entry


def class_names(root: str) -> Optional[List[str]]:
    """The class names of our shards (class_map.txt), or None for shards made by others."""
    info = load_info(root)
    if info.get('format') != FORMAT:
        return None
    path = Path(root) / str(info.get('class_map', CLASS_MAP))
    try:
        names = [ln.strip() for ln in path.read_text(encoding='utf-8').splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f'cannot read the class map {path}: {e}') from None
    if len(names) != info.get('num_classes'):
        raise UserError(f'{path} lists {len(names)} classes, {Path(root) / INFO} says {info.get("num_classes")}')
    return names


def rebase_reader(ds: object, root: str) -> None:
    """Point timm's wds reader at its split's own folder (shard paths made absolute, same files): our trainer tells
    splits apart by their reader's root, and both splits of a shard set share OUT."""
    reader = getattr(ds, 'reader', None)
    info = getattr(reader, 'split_info', None)
    if info is None or not info.filenames:
        return
    files = tuple(os.path.abspath(os.path.join(root, f)) for f in info.filenames)
    info.filenames = files
    reader.root = os.path.commonpath([os.path.dirname(f) for f in files])


def even_split_note(entry: Dict[str, object], processes: int, workers: int, batch_size: int) -> Optional[str]:
    """Why timm's reader will not show each training sample exactly once per epoch with this many readers, or None.

    timm deals whole shards to the processes x workers readers and lets each yield the same number of samples,
    ceil(N / readers) rounded up to a whole batch: readers whose shards hold fewer repeat some of theirs."""
    lengths = [int(n) for n in entry['shard_lengths']]  # type: ignore[union-attr]
    readers = max(1, processes) * max(1, workers)
    per = [sum(lengths[i::readers]) for i in range(readers)]
    want = -(-sum(lengths) // readers)
    want = -(-want // batch_size) * batch_size
    if all(p == want for p in per):
        return None
    why = (f'{len(lengths)} shards do not divide among {readers} readers (processes x workers)' if len(lengths) % readers
           else f'the {readers} readers\' shards hold {min(per)}-{max(per)} samples')
    twice, missed = sum(max(0, want - p) for p in per), sum(max(0, p - want) for p in per)
    return (f'{why}, but each yields {want} (whole batches of {batch_size}): of the {sum(lengths)} training samples '
            f'about {twice} ({100 * twice / max(sum(lengths), 1):.1f}%) are seen twice per epoch'
            + (f' and {missed} not at all' if missed else ''))


class DealtShards:
    """One split's shards dealt to the processes x loader workers ("readers"): reader g of G takes shards g, g + G,
    ... and yields each of their samples once per epoch (in training shuffled: shard order and a window of samples,
    seeded by ``seed``, the epoch and the reader). What an epoch holds is fixed by the shard lengths alone, so every
    count below is exact before any worker starts. The epoch lives in shared memory: loader workers that persist
    across epochs read the one the main process set."""

    def __init__(self, root: str, entry: Dict[str, object], batch_size: int, train: bool, workers: int,
                 seed: int = 42, rank: int = 0, world: int = 1, shuffle_window: int = 2000) -> None:
        self.files = [os.path.join(root, f) for f in entry['filenames']]  # type: ignore[union-attr]
        self.lengths = [int(n) for n in entry['shard_lengths']]  # type: ignore[union-attr]
        self.batch_size, self.train, self.workers = batch_size, train, max(1, workers)
        self.seed, self.rank, self.world, self.window = seed, rank, max(1, world), shuffle_window
        self._epoch = multiprocessing.get_context().Value('q', 0, lock=False)  # seen by persistent loader workers

    @property
    def epoch(self) -> int:
        return int(self._epoch.value)

    def set_epoch(self, epoch: int) -> None:
        self._epoch.value = int(epoch)

    def readers(self) -> int:
        return self.world * self.workers

    def reader_samples(self, g: int) -> int:
        return sum(self.lengths[g::self.readers()])

    def my_readers(self) -> range:
        """This process's readers."""
        return range(self.rank * self.workers, (self.rank + 1) * self.workers)

    def reader_id(self) -> int:
        """The reader this loader worker (or the main process, without workers) is."""
        info = torch.utils.data.get_worker_info()
        return self.rank * self.workers + (info.id if info is not None else 0)

    def read(self, k: int) -> List[Dict[str, bytes]]:
        """Shard k's samples, as many whole ones (image and class) as _info.json says it holds; a file that cannot
        be read, or holds another count (damaged, cut after an image, or not the file indexed), is a UserError,
        never a silently shorter epoch."""
        path = self.files[k]
        remedy = f'make the shards again (`{PROG}`)'
        try:
            samples = read_shard(Path(path))
        except (OSError, tarfile.TarError) as e:
            raise UserError(f'cannot read shard {path} ({one_line(e)}); {remedy}') from None
        whole = sum(1 for s in samples if 'jpg' in s and 'cls' in s)
        if whole != self.lengths[k]:
            raise UserError(f'shard {path} holds {whole} whole samples (image and class) where {INFO} says '
                            f'{self.lengths[k]}: it is damaged or not the file indexed; {remedy}')
        return samples

    def samples(self, g: int) -> Iterator[Tuple[bytes, int]]:
        """(JPEG bytes, class index) of reader g's shards, each once."""
        mine = list(range(g, len(self.files), self.readers()))
        rng = random.Random(hash((self.seed, self.epoch, g)))
        if self.train:
            rng.shuffle(mine)
        buf: List[Tuple[bytes, int]] = []
        for k in mine:
            for s in self.read(k):
                if 'jpg' not in s or 'cls' not in s:
                    continue
                buf.append((s['jpg'], int(s['cls'])))
                if self.train and len(buf) >= self.window:
                    yield buf.pop(rng.randrange(len(buf)))
                elif not self.train:
                    yield buf.pop()
        if self.train:
            rng.shuffle(buf)
        yield from buf


class ShardBytes(DealtShards, torch.utils.data.IterableDataset):
    """Batches of (JPEG byte tensors, labels) from one split's shards, for decoding on the device.

    Each reader yields its samples once per epoch in batches of ``batch_size``, its last one partial. Training
    batches are then made whole in the main process (:func:`whole_batches`: the readers' partial batches joined),
    so an epoch trains on every sample but fewer than one batch per process; with several processes each runs
    the same number of steps (DDP needs it), the fewest any process has. ``steps`` is that number, ``dropped`` the
    training samples per epoch left out, exactly."""

    def __len__(self) -> int:
        """The batches the readers of this process yield (partial ones included)."""
        return sum(-(-self.reader_samples(g) // self.batch_size) for g in self.my_readers())

    def _process_samples(self, rank: int) -> int:
        return sum(self.reader_samples(g) for g in range(rank * self.workers, (rank + 1) * self.workers))

    @property
    def steps(self) -> int:
        """Whole training batches per epoch on every process (evaluation: the batches, partial ones included)."""
        if not self.train:
            return len(self)
        return min(self._process_samples(r) // self.batch_size for r in range(self.world))

    @property
    def dropped(self) -> int:
        """Training samples per epoch (all processes) left out to keep whole, equal batches."""
        if not self.train:
            return 0
        return sum(self.lengths) - self.steps * self.batch_size * self.world

    def __iter__(self) -> Iterator[Tuple[List[torch.Tensor], torch.Tensor]]:
        batch: List[Tuple[bytes, int]] = []
        for item in self.samples(self.reader_id()):
            batch.append(item)
            if len(batch) == self.batch_size:
                yield self._collate(batch)
                batch = []
        if batch:
            yield self._collate(batch)

    @staticmethod
    def _collate(batch: List[Tuple[bytes, int]]) -> Tuple[List[torch.Tensor], torch.Tensor]:
        data = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b, _ in batch]
        return data, torch.tensor([t for _, t in batch], dtype=torch.long)


def whole_batches(batches: Iterable[Tuple[List[torch.Tensor], torch.Tensor]], batch_size: int,
                  steps: int) -> Iterator[Tuple[List[torch.Tensor], torch.Tensor]]:
    """ShardBytes' training batches made whole: the readers' partial batches joined into full ones; ``steps``
    batches, the rest (fewer than one batch) left out."""
    done = 0
    data: List[torch.Tensor] = []
    target: List[torch.Tensor] = []
    for d, t in batches:
        if done == steps:
            return
        if len(d) == batch_size and not data:
            yield d, t
            done += 1
            continue
        data.extend(d)
        target.append(t)
        while len(data) >= batch_size and done < steps:
            labels = torch.cat(target)
            yield data[:batch_size], labels[:batch_size]
            data, target, done = data[batch_size:], [labels[batch_size:]], done + 1


class ShardSamples(DealtShards):
    """A timm reader over our shards for training with CPU decoding (timm's IterableImageDataset applies the
    transform, timm's loader makes the batches): each reader yields its samples once per epoch as (PIL image,
    class index), as many as make whole batches (with several processes: the fewest whole batches any reader
    has); images decoded by jpeg.decode_rgb (PIL's pixels at libjpeg-turbo's speed). Unlike timm's wds reader,
    no sample is drawn twice; ``dropped`` samples per epoch are left out (fewer than one batch per reader when one
    process trains), exactly. ``arrays``: what simplejpeg decodes is yielded as its (H, W, 3) uint8 array instead
    of a PIL image (for a transform that takes arrays, the trainer's PaperCrop; set before the workers start)."""

    arrays = False

    def __init__(self, root: str, entry: Dict[str, object], batch_size: int, workers: int, seed: int = 42,
                 rank: int = 0, world: int = 1, img_mode: str = 'RGB') -> None:
        super().__init__(root, entry, batch_size, True, workers, seed, rank, world)
        self.img_mode = img_mode

    def set_loader_cfg(self, num_workers: Optional[int] = None) -> None:
        if num_workers is not None:
            self.workers = max(1, num_workers)

    def quota(self, g: int) -> int:
        """Samples reader g yields per epoch: whole batches only."""
        if self.world == 1:
            return self.reader_samples(g) // self.batch_size * self.batch_size
        return min(self.reader_samples(r) // self.batch_size for r in range(self.readers())) * self.batch_size

    def __len__(self) -> int:
        return sum(self.quota(g) for g in self.my_readers())

    @property
    def dropped(self) -> int:
        return sum(self.lengths) - sum(self.quota(g) for g in range(self.readers()))

    def __iter__(self) -> Iterator[Tuple[Any, int]]:
        g = self.reader_id()
        for _, (data, target) in zip(range(self.quota(g)), self.samples(g)):
            yield decode_rgb(data, self.img_mode, self.arrays), target

    def filenames(self, basename: bool = False, absolute: bool = False) -> List[str]:
        return [os.path.basename(f) if basename else f for f in self.files]


def use_shard_samples(ds: Any, root: str, entry: Dict[str, object], args: Any) -> ShardSamples:
    """Give timm's wds training dataset over our shards the ShardSamples reader (each sample once per epoch)."""
    world, rank = (args.world_size, args.rank) if getattr(args, 'distributed', False) else (1, 0)
    reader = ShardSamples(root, entry, args.batch_size, args.workers, args.seed, rank, world,
                          getattr(ds.reader, 'input_img_mode', None) or 'RGB')
    ds.reader = reader
    return reader


def dropped_note(dropped: int, total: int, readers: int, batch_size: int, processes: int) -> Optional[str]:
    """The warning for training samples an epoch leaves out, or None when it leaves none."""
    if not dropped:
        return None
    why = (f'each of the {readers} readers (processes x loader workers) trains whole batches of {batch_size} only'
           if processes == 1 else f'the {processes} processes train the same number of whole batches of {batch_size}')
    return f'{dropped} of the {total} training samples ({100 * dropped / max(total, 1):.1f}%) are left out of each ' \
           f'epoch: {why}'


# ---------------------------------------------------------------------------------------------------------------------
# the trainer's side: --dataset wds/NAME --data-dir OUT
# ---------------------------------------------------------------------------------------------------------------------
def check_wds(root: Optional[str], split: str, class_map: object) -> Optional[List[str]]:
    """Before timm's reader opens ``root``: its _info.json and the split's shards are there (one-line UserError
    otherwise). Returns the class names of our shards (None for shards made by others)."""
    if not root:
        raise UserError('--dataset wds/NAME needs --data-dir: the folder holding _info.json and the shards')
    check_split(root, split)
    names = class_names(root)
    if names is not None and class_map:
        raise UserError('--class-map does not apply to these shards: their labels are class indices '
                        f'(the class names are in {Path(root) / CLASS_MAP})')
    return names


def adopt_wds(ds: object, root: str, names: Optional[List[str]]) -> None:
    """Give timm's wds dataset its split's own root (see rebase_reader) and our class names."""
    rebase_reader(ds, root)
    if names is not None:
        ds.classes = list(names)  # type: ignore[attr-defined]


class EpochSetter:
    """Stands in for a loader's sampler: ``set_epoch`` tells timm's wds dataset the epoch (its shard shuffle)."""

    def __init__(self, dataset: object) -> None:
        self.dataset = dataset

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)  # type: ignore[attr-defined]


class EpochLoader:
    """A loader over an iterable dataset whose ``sampler.set_epoch`` reaches the dataset (as timm train.py's
    ``dataset_train.set_epoch``); everything else is the wrapped loader's."""

    def __init__(self, loader: object) -> None:
        self.loader = loader
        self.sampler = EpochSetter(loader.dataset)  # type: ignore[attr-defined]

    def __iter__(self) -> Iterator:
        return iter(self.loader)  # type: ignore[call-overload]

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> object:
        if name == 'loader':
            raise AttributeError(name)
        return getattr(self.loader, name)


def wds_train_loader(args: Any, train_ds: Any, loader: Any, logger: logging.Logger) -> EpochLoader:
    """timm's wds training loader with the epoch passed on, and a warning when an epoch will not show each sample
    exactly once (what is left out, or drawn twice by timm's reader, and why)."""
    note = wds_epoch_note(train_ds, args.world_size if args.distributed else 1, args.workers, args.batch_size)
    if note:
        logger.warning(f'WARNING: training from shards: {note} (docs/data.md: "Each sample once per epoch")')
    return EpochLoader(loader)


def wds_epoch_note(ds: object, processes: int, workers: int, batch_size: int) -> Optional[str]:
    """Why an epoch of this wds training dataset will not show each sample exactly once with this many processes,
    loader workers and this batch size, or None (also for other datasets). Our shards (ShardSamples): the samples
    left out; shards made by others (timm's reader): even_split_note."""
    reader = getattr(ds, 'reader', None)
    if isinstance(reader, ShardSamples):
        dealt = ShardSamples('', {'filenames': reader.files, 'shard_lengths': reader.lengths}, batch_size, workers,
                             world=processes)
        return dropped_note(dealt.dropped, sum(dealt.lengths), dealt.readers(), batch_size, processes)
    info = getattr(reader, 'split_info', None)
    if info is None or not getattr(info, 'shard_lengths', None):
        return None
    return even_split_note({'shard_lengths': info.shard_lengths}, processes, workers, batch_size)
