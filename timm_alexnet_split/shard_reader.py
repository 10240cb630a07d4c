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
import os
import random
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch

from .errors import UserError
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


class ShardBytes(torch.utils.data.IterableDataset):
    """Batches of (JPEG byte tensors, labels) from one split's shards, for decoding on the device.

    Shards are dealt to the processes x loader workers (reader g of G takes shards g, g + G, ...), each reader
    yields every sample of its shards once per epoch (shuffled in training: shard order and samples within a
    window, seeded by ``seed``, the epoch and the reader). Training drops each reader's last partial batch and,
    with several processes, caps every reader at the fewest whole batches any reader has, so all processes run
    the same number of steps (DDP needs it); the samples left out are counted by ``dropped``.
    """

    def __init__(self, root: str, entry: Dict[str, object], batch_size: int, train: bool, workers: int,
                 seed: int = 42, rank: int = 0, world: int = 1, shuffle_window: int = 2000) -> None:
        self.files = [os.path.join(root, f) for f in entry['filenames']]  # type: ignore[union-attr]
        self.lengths = [int(n) for n in entry['shard_lengths']]  # type: ignore[union-attr]
        self.batch_size, self.train, self.workers = batch_size, train, max(1, workers)
        self.seed, self.rank, self.world, self.window = seed, rank, max(1, world), shuffle_window
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _readers(self) -> int:
        return self.world * self.workers

    def _batches(self, g: int) -> int:
        n = sum(self.lengths[g::self._readers()])
        return n // self.batch_size if self.train else -(-n // self.batch_size)

    def _cap(self) -> Optional[int]:
        if not self.train or self.world == 1:
            return None
        return min(self._batches(g) for g in range(self._readers()))

    def __len__(self) -> int:
        cap = self._cap()
        mine = range(self.rank * self.workers, (self.rank + 1) * self.workers)
        return sum(cap if cap is not None else self._batches(g) for g in mine)

    @property
    def dropped(self) -> int:
        """Training samples per epoch (all processes) left out to keep whole, equal batches."""
        if not self.train:
            return 0
        cap = self._cap()
        used = sum((cap if cap is not None else self._batches(g)) for g in range(self._readers())) * self.batch_size
        return sum(self.lengths) - used

    def _samples(self, g: int) -> Iterator[Tuple[bytes, int]]:
        mine = list(range(g, len(self.files), self._readers()))
        rng = random.Random(hash((self.seed, self.epoch, g)))
        if self.train:
            rng.shuffle(mine)
        buf: List[Tuple[bytes, int]] = []
        for k in mine:
            for s in read_shard(Path(self.files[k])):
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

    def __iter__(self) -> Iterator[Tuple[List[torch.Tensor], torch.Tensor]]:
        info = torch.utils.data.get_worker_info()
        g = self.rank * self.workers + (info.id if info is not None else 0)
        limit = self._cap()
        batch: List[Tuple[bytes, int]] = []
        done = 0
        for item in self._samples(g):
            batch.append(item)
            if len(batch) == self.batch_size:
                if limit is not None and done >= limit:
                    return
                yield self._collate(batch)
                done += 1
                batch = []
        if batch and not self.train:
            yield self._collate(batch)

    @staticmethod
    def _collate(batch: List[Tuple[bytes, int]]) -> Tuple[List[torch.Tensor], torch.Tensor]:
        data = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b, _ in batch]
        return data, torch.tensor([t for _, t in batch], dtype=torch.long)


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
    exactly once (even_split_note)."""
    note = wds_epoch_note(train_ds, args.world_size if args.distributed else 1, args.workers, args.batch_size)
    if note:
        logger.warning(f'WARNING: timm\'s wds reader: {note} (docs/data.md: "Each sample once per epoch")')
    return EpochLoader(loader)


def wds_epoch_note(ds: object, processes: int, workers: int, batch_size: int) -> Optional[str]:
    """even_split_note for timm's wds training dataset (None for other datasets)."""
    info = getattr(getattr(ds, 'reader', None), 'split_info', None)
    if info is None or not getattr(info, 'shard_lengths', None):
        return None
    return even_split_note({'shard_lengths': info.shard_lengths}, processes, workers, batch_size)
