"""Datasets: timm's create_dataset from the options, split checks, class alignment, unreadable images skipped."""
from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
from PIL import Image
from timm.data import create_dataset

from ..data.shard_reader import adopt_wds, check_split, check_wds, use_shard_samples
from ..data.splits import EVAL_NAMES, find_split, split_folders
from ..errors import UserError, one_line

_logger = logging.getLogger('timm_alexnet_split.train')


UNREADABLE = 'unreadable images'


class SkipUnreadable(torch.utils.data.Dataset):
    """A map-style image dataset whose unreadable images are skipped, recorded and counted, never fatal.

    Training (``substitute=True``): the next readable image takes the bad one's place, so batches stay
    full. Evaluation (``substitute=False``): the item is None and ``SkipNoneCollate`` drops it, so no
    image counts twice. Each failure appends "split<TAB>path<TAB>reason" to ``log_path``, a file shared
    by the loader's worker processes, so the main process can count and report skips per epoch.
    """

    max_consecutive = 50

    def __init__(self, dataset: torch.utils.data.Dataset, split: str = '', log_path: Optional[str] = None,
                 substitute: bool = True) -> None:
        self.dataset = dataset
        self.split = split
        self.log_path = log_path
        self.substitute = substitute
        if hasattr(dataset, '_max_retries'):  # timm's ImageDataset substitutes bad samples itself: let us see them
            dataset._max_retries = 1

    @property
    def transform(self) -> Optional[Callable]:
        return getattr(self.dataset, 'transform', None)

    @transform.setter
    def transform(self, t: Optional[Callable]) -> None:
        self.dataset.transform = t

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str) -> Any:
        if name == 'dataset':
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def filename(self, index: int) -> str:
        ds = self.dataset
        with contextlib.suppress(Exception):
            if hasattr(ds, 'filename'):
                return os.path.abspath(ds.filename(index, absolute=True))
            if hasattr(ds, 'samples'):
                return os.path.abspath(ds.samples[index][0])
        return f'index {index}'

    def _reason(self, path: str, err: Exception) -> str:
        if os.path.isfile(path):
            try:
                with Image.open(path) as im:
                    im.convert('RGB')
            except Exception as e:  # the decoder's own words beat timm's "failed to load"
                return f'{type(e).__name__}: {e}'
        return f'{type(err).__name__}: {err}'

    def __getitem__(self, index: int) -> Any:
        n = len(self.dataset)
        err: Optional[Exception] = None
        for k in range(min(self.max_consecutive, n)):
            i = (index + k) % n
            try:
                return self.dataset[i]
            except Exception as e:  # any failure to read or decode one image: skip it, never the run
                err = e
                path = self.filename(i)
                reason = ' '.join(self._reason(path, e).split())
                if self.log_path:
                    with open(self.log_path, 'a', encoding='utf-8') as f:
                        f.write(f'{self.split}\t{path}\t{reason}\n')
                if not self.substitute:
                    return None
        raise RuntimeError(f'{UNREADABLE}: {min(self.max_consecutive, n)} images in a row could not be read '
                           f'(last: {self.filename((index + min(self.max_consecutive, n) - 1) % n)}: {err})')


class SkipNoneCollate:
    """Collate the items that loaded; an all-unreadable batch becomes an empty one of ``empty_shape``."""

    def __init__(self, collate: Callable, empty_shape: Sequence[int], dtype: torch.dtype = torch.uint8) -> None:
        self.collate = collate
        self.empty_shape = tuple(empty_shape)
        self.dtype = dtype

    def __call__(self, batch: List[Any]) -> Any:
        batch = [b for b in batch if b is not None]
        if batch:
            return self.collate(batch)
        return torch.zeros((0, *self.empty_shape), dtype=self.dtype), torch.zeros(0, dtype=torch.long)


def skip_counts(log_path: Optional[Path]) -> Tuple[int, int]:
    """(lines, distinct paths) recorded so far."""
    if log_path is None or not log_path.is_file():
        return 0, 0
    lines = [ln.split('\t') for ln in log_path.read_text(encoding='utf-8').splitlines() if ln.strip()]
    return len(lines), len({ln[1] for ln in lines if len(ln) > 1})


def _class_names(ds: Any) -> Optional[List[str]]:
    """Class names in index order for folder / torchvision datasets, else None."""
    c2i = None
    reader = getattr(ds, 'reader', None)
    if reader is not None and isinstance(getattr(reader, 'class_to_idx', None), dict):
        c2i = reader.class_to_idx
    elif isinstance(getattr(ds, 'class_to_idx', None), dict):
        c2i = ds.class_to_idx
    if c2i:
        if sorted(c2i.values()) == list(range(len(c2i))):
            return [str(name) for name, _ in sorted(c2i.items(), key=lambda kv: kv[1])]
        return None
    classes = getattr(ds, 'classes', None)
    return [str(c) for c in classes] if isinstance(classes, (list, tuple)) else None


def _split_root(ds: Any) -> Optional[str]:
    reader = getattr(ds, 'reader', None)
    root = getattr(reader, 'root', None) or getattr(ds, 'root', None)
    return os.path.realpath(root) if isinstance(root, (str, os.PathLike)) else None


def is_folder_like(dataset: str) -> bool:
    """Datasets read from --data-dir on disk (which is then required and must exist): folders, tars, shards."""
    return dataset.lower().startswith('wds/') or is_image_folder(dataset)


def is_image_folder(dataset: str) -> bool:
    """Datasets whose splits are sub-folders of --data-dir, looked up as timm does (see splits.py)."""
    name = dataset.lower()
    return name in ('', 'folder', 'tar') or name.startswith(('folder/', 'tar/', 'torch/image_folder', 'torch/folder'))


def create_split_dataset(args: argparse.Namespace, split: str, is_training: bool, class_map: Any, label: str) -> Any:
    in_chans = args.in_chans or (args.input_size[0] if args.input_size else 3)
    kwargs: Dict[str, Any] = dict(
        root=args.data_dir, split=split, is_training=is_training, class_map=class_map,
        download=args.dataset_download, batch_size=args.batch_size,
        input_img_mode=args.input_img_mode or ('RGB' if in_chans == 3 else 'L'))
    if is_training:
        kwargs.update(seed=args.seed, repeats=args.epoch_repeats)
    for key, opt in (('input_key', 'input_key'), ('target_key', 'target_key'),
                     ('num_samples', 'train_num_samples' if is_training else 'val_num_samples')):
        if getattr(args, opt) is not None:
            kwargs[key] = getattr(args, opt)
    if args.dataset_trust_remote_code:
        kwargs['trust_remote_code'] = True
    where = args.data_dir or args.dataset
    wds_names = None
    if args.dataset.lower().startswith('wds/'):
        wds_names = check_wds(args.data_dir, split, class_map)
    try:
        ds = create_dataset(args.dataset, **kwargs)
    except Exception as e:  # timm and torchvision raise many kinds for a missing or malformed dataset
        msg = one_line(e, limit=None)
        raise UserError(f'cannot load the {label} split {split!r} of {where}: {msg}') from None
    if isinstance(ds, torch.utils.data.Dataset) and hasattr(ds, '__len__') \
            and not isinstance(ds, torch.utils.data.IterableDataset) and len(ds) == 0:
        raise UserError(f'no images in the {label} split {split!r} of {where}')
    if args.dataset.lower().startswith('wds/'):
        adopt_wds(ds, args.data_dir, wds_names)
        # our shards: each training sample once per epoch, unless timm's reader is asked to size the epoch itself
        if is_training and wds_names is not None and args.train_num_samples is None and not args.epoch_repeats:
            use_shard_samples(ds, args.data_dir, check_split(args.data_dir, split), args)
    return ds


def build_datasets(args: argparse.Namespace) -> Tuple[Any, Optional[Any], Optional[List[str]]]:
    """The training and validation datasets (timm's create_dataset) and the class names, checked."""
    if args.demo_data:
        try:
            data = importlib.import_module('timm_alexnet_split.data')
        except ImportError as e:
            raise UserError(f'--demo-data needs timm_alexnet_split.data, which is missing ({e})') from None
        name = getattr(args, 'demo_dataset', 'demo')
        ensure = data.ensure_demo_data if name == 'demo' else lambda root, **kw: data.ensure_dataset(name, root, **kw)
        if getattr(args, 'distributed', False):
            # one writer at a time: process 0 generates, then the first process on each other machine (nothing to
            # do on a shared disk), then the rest find it there
            for turn in (args.rank == 0, args.local_rank == 0 and args.rank != 0, args.local_rank != 0):
                if turn:
                    args.data_dir = str(ensure(args.data_dir or None, progress=args.rank == 0))
                dist.barrier()
        else:
            args.data_dir = str(ensure(args.data_dir or None))
        _logger.info(f'demo data: {args.data_dir}')
    if args.data and not args.data_dir:
        args.data_dir = args.data
    if not args.data_dir and is_folder_like(args.dataset):
        raise UserError('no data: give --data-dir DIR (ImageFolder with train/ and validation/), '
                        '--dataset torch/NAME, or --demo-data')
    if args.data_dir and is_folder_like(args.dataset) and not os.path.exists(args.data_dir):
        raise UserError(f'data folder {args.data_dir} not found')
    class_map = args.class_map or None
    has_val = _check_folder_splits(args)
    train_ds = create_split_dataset(args, args.train_split, True, class_map, 'training')
    names = _class_names(train_ds)
    eval_ds = None
    if has_val:
        eval_ds = create_split_dataset(args, args.val_split, False, class_map, 'validation')
        eval_ds = align_classes(args, eval_ds, names, lambda cmap: create_split_dataset(
            args, args.val_split, False, cmap, 'validation'))
        # a folder dataset whose two splits resolve to one folder (other datasets, e.g. hfds/, keep splits apart
        # under one root by name)
        tr, ev = _split_root(train_ds), _split_root(eval_ds)
        if tr is not None and tr == ev and is_image_folder(args.dataset):
            _logger.warning(f'WARNING: the {args.val_split!r} split of {args.data_dir or args.dataset} is the training '
                            'split itself: training without validation metrics')
            eval_ds = None
    return train_ds, eval_ds, names


def _check_folder_splits(args: argparse.Namespace) -> bool:
    """For a folder dataset, check that the training split is there (UserError naming the splits that are) and say
    whether there is a validation split. A folder without split folders is itself the training data. Training without
    validation data is said once here; it is never another split's images under the validation name."""
    if not args.val_split:
        return False
    if not (args.data_dir and is_image_folder(args.dataset) and os.path.isdir(args.data_dir)):
        return True
    root = Path(args.data_dir)
    train_dir = find_split(root, args.train_split)
    if train_dir is None:
        _logger.warning(f'WARNING: {root} has no split folders: training on all of it, without validation metrics '
                        f'(give it {args.train_split}/ and {args.val_split}/ sub-folders to validate)')
        return False
    present = split_folders(root)
    if not any(p.lower() in EVAL_NAMES for p in present) and args.val_split.split('[')[0] not in present:
        _logger.warning(f'WARNING: no validation split {args.val_split!r} in {root} (it has {", ".join(present)}): '
                        'training without validation metrics; model_best.pth.tar is not written, last.pth.tar holds '
                        'the final weights')
        return False
    find_split(root, args.val_split)  # a validation folder under another name: the error names what is there
    return True


def align_classes(args: Any, ds: Any, names: Optional[List[str]], recreate: Callable[[Dict[str, int]], Any]) -> Any:
    """Give a dataset the class indices of ``names``; refuse classes ``names`` lacks."""
    got = _class_names(ds)
    if names is None or got is None or got == names:
        return ds
    extra = sorted(set(got) - set(names))
    if extra:
        shown = ', '.join(extra[:5]) + (' ...' if len(extra) > 5 else '')
        raise UserError(f'the evaluation data has classes the model was not trained on: {shown}')
    if getattr(args, 'class_map', ''):
        return ds
    _logger.info(f'evaluation data has {len(got)} of the {len(names)} classes: using the training class indices')
    return recreate({n: i for i, n in enumerate(names)})
