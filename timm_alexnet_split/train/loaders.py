"""Loaders: timm's create_loader for training and evaluation, the paper's crops, ten-crop batches."""
from __future__ import annotations

import argparse
import atexit
import logging
import math
import os
import signal
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from timm.data import create_loader
from timm.data.distributed_sampler import OrderedDistributedSampler
from timm.data.transforms import MaybePILToTensor, RandomResizedCropAndInterpolation, str_to_interp_mode
from torchvision import transforms

from ..data.batch_buffers import BatchBuffers
from ..data.collate import CollateUint8
from ..data.decode import DraftDecode, device_loader, draft_bytes, draft_target, use_draft
from ..data.shard_reader import ShardBytes, ShardSamples, check_split, dropped_note, wds_train_loader
from ..errors import UserError
from .data import SkipNoneCollate, SkipUnreadable
from .worker_seeds import DrawsAsFresh, end_workers, persist_workers

_logger = logging.getLogger('timm_alexnet_split.train')


class _StopSignalsToMain:
    """A loader worker's init: stop signals left to the main process, then the loader's own init.

    A stop signal sent to the whole process group (`timeout`, Slurm's scancel, Ctrl-C) is the main process's to
    obey: it finishes the batch, saves, and ends its workers itself. PyTorch's worker handler would let SIGTERM kill
    the worker, and the main process would then die of "DataLoader worker exited unexpectedly" instead of saving. So
    the worker ignores SIGINT, and ignores SIGTERM while the main process runs; once the main process has begun to
    exit (the flag that :func:`_main_exiting` sets at exit), a SIGTERM ends the worker. That SIGTERM is the one
    Python's multiprocessing sends each daemonic child at exit before it joins them: a worker that ignored it would
    keep the main process waiting forever (a persistent loader still referenced at exit: a test's exception info, a
    reference cycle). Workers also end when the main process goes: PyTorch's watchdog in each worker sees the parent
    gone. A class, not a closure: picklable for spawned workers (the flag travels as shared memory)."""

    def __init__(self, init: Any) -> None:
        self.init = init
        self.main_exiting = _main_exiting()

    def __call__(self, worker_id: int) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, self._on_sigterm)
        if self.init is not None:
            self.init(worker_id)

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        if self.main_exiting.value:
            os._exit(0)  # ends at once, as SIGTERM would; status 0, or the main process reports a worker failure


_MAIN_EXITING: Any = None


def _main_exiting() -> Any:
    """A byte in shared memory that turns 1 when the main process begins to exit (one per process, made the first
    time a loader's workers get the stop-signal rule). The hook that sets it is registered after multiprocessing's
    own exit function, so it runs before that function terminates and joins the workers (atexit runs last-in,
    first-out)."""
    global _MAIN_EXITING
    if _MAIN_EXITING is None:
        import multiprocessing.sharedctypes
        import multiprocessing.util  # noqa: F401  (its exit function registered before ours)
        _MAIN_EXITING = multiprocessing.sharedctypes.RawValue('b', 0)
        atexit.register(_set_main_exiting, _MAIN_EXITING)
    return _MAIN_EXITING


def _set_main_exiting(flag: Any) -> None:
    flag.value = 1


def _torch_loader(loader: Any) -> Any:
    """The torch DataLoader inside ``loader`` (itself, or timm's PrefetchLoader or our wrappers around one, in
    ``.loader``); None for None; TypeError for anything else."""
    inner = loader
    while inner is not None and not isinstance(inner, torch.utils.data.DataLoader):
        inner = getattr(inner, '__dict__', {}).get('loader')
    if inner is None and loader is not None:
        raise TypeError(f'{type(loader).__name__} holds no torch DataLoader (in .loader) to give its workers the '
                        'stop-signal rule')
    return inner


def leave_stop_signals_to_main(loader: Any) -> Any:
    """``loader`` (a DataLoader, or timm's PrefetchLoader or our wrappers around one) with workers that ignore stop
    signals (_StopSignalsToMain); returned for chaining. None passes through."""
    inner = _torch_loader(loader)
    if inner is not None and not isinstance(inner.worker_init_fn, _StopSignalsToMain):
        inner.worker_init_fn = _StopSignalsToMain(inner.worker_init_fn)
    return loader


def shut_down_workers(*loaders: Any) -> None:
    """End the worker processes that persistent loaders (training, the trainer's evaluation, the device decoding
    path) keep between epochs, now rather than whenever the loader object is collected: a run's end frees them
    whichever way it ends, an exception included, and a process that trains several runs (bench --train-input, a
    sweep) does not gather them. Loaders without workers alive, anything holding no DataLoader, and None, pass."""
    for loader in loaders:
        try:
            inner = _torch_loader(loader)
        except TypeError:  # holds no DataLoader (a list of batches in a test): no workers to end
            continue
        if inner is not None:
            end_workers(inner)


class PaperCrop:
    """The paper's training crop: shorter side to ``size / crop_pct`` (256 for 224), centre square, random crop.

    Takes a PIL image, or an (H, W, 3) uint8 array (jpeg.decode_rgb's ``array``): an array whose shorter side is
    already the target (our 256-px shards) is cropped as a (3, h, w) tensor view of its pixels, with the same random
    draws and pixels as its PIL image (resizing to its own size changes nothing), without the copies; other arrays
    become PIL images first."""

    def __init__(self, size: Tuple[int, int], crop_pct: float, interpolation: str = 'bilinear') -> None:
        self.scale = int(math.floor(max(size) / crop_pct))
        self.size = tuple(size)
        self.resize = transforms.Resize(self.scale, interpolation=str_to_interp_mode(interpolation))
        self.square = transforms.CenterCrop(self.scale)
        self.crop = transforms.RandomCrop(self.size)

    def __call__(self, img: Any) -> Any:
        if isinstance(img, np.ndarray):
            if img.ndim == 3 and min(img.shape[:2]) == self.scale:
                return self._crop_view(torch.from_numpy(img).permute(2, 0, 1))
            img = Image.fromarray(img)
        return self.crop(self.square(self.resize(img)))

    def _crop_view(self, chw: torch.Tensor) -> torch.Tensor:
        """The centre square and the random crop of a (3, h, w) view whose shorter side is the scale, as a view:
        CenterCrop's offsets and RandomCrop's draws (two from torch's generator; none when the crop is the whole
        square), without their per-call checks (~25 us an image, ~5% of the shards pipeline)."""
        (th, tw), s = self.size, self.scale
        if th > s or tw > s:  # RandomCrop refuses it: let it say so
            return self.crop(self.square(chw))
        top, left = int(round((chw.shape[1] - s) / 2.0)), int(round((chw.shape[2] - s) / 2.0))
        i = j = 0
        if (th, tw) != (s, s):
            i = int(torch.randint(0, s - th + 1, size=(1,)).item())
            j = int(torch.randint(0, s - tw + 1, size=(1,)).item())
        return chw[:, top + i:top + i + th, left + j:left + j + tw]

    def __repr__(self) -> str:
        return f'{type(self).__name__}(resize={self.resize.size}, square, random_crop={self.size})'


class TenCrop:
    """Ten crops for evaluation: resize the shorter side to ``size / crop_pct``, then the four corners and the
    centre of the image and of its mirror image (torchvision's ten_crop), as a uint8 tensor (10, C, H, W)."""

    def __init__(self, size: Tuple[int, int], crop_pct: float, interpolation: str = 'bilinear') -> None:
        h, w = size
        scale = int(math.floor(h / crop_pct)) if h == w else (int(math.floor(h / crop_pct)), int(math.floor(w / crop_pct)))
        self.size = (h, w)
        self.resize = transforms.Resize(scale, interpolation=str_to_interp_mode(interpolation))

    def __call__(self, img: Any) -> torch.Tensor:
        img = self.resize(img)
        return torch.stack([TF.pil_to_tensor(c) for c in TF.ten_crop(img, list(self.size))])


# Steps that give the same pixels on a uint8 tensor as on a PIL image (flips; timm's to-tensor passes tensors)
_EXACT_ON_TENSORS = (transforms.RandomHorizontalFlip, transforms.RandomVerticalFlip, MaybePILToTensor)


def _use_paper_crop(loader: Any, data_config: Dict[str, Any], interpolation: str) -> None:
    """timm's random-resized crop replaced by PaperCrop. When the paper crop comes first and every step after it
    gives the same pixels on tensors, our shards' reader hands it arrays (ShardSamples.arrays: no PIL copies)."""
    tf = loader.dataset.transform
    steps = getattr(tf, 'transforms', None)
    idx = [i for i, t in enumerate(steps or []) if isinstance(t, RandomResizedCropAndInterpolation)]
    if not idx:
        raise UserError("--paper-crop: timm's training transform has no random-resized crop to replace")
    steps[idx[0]] = PaperCrop(tuple(data_config['input_size'][1:]), data_config['crop_pct'], interpolation)
    reader = getattr(loader.dataset, 'reader', None)
    if isinstance(reader, ShardSamples) and idx[0] == 0 and all(isinstance(t, _EXACT_ON_TENSORS) for t in steps[1:]):
        reader.arrays = True


def gpu_decode_problems(args: Any) -> List[str]:
    """Options the device decoding path does not implement (it does the paper's crops and flips, or no
    augmentation)."""
    bad = []
    if not (args.dataset or '').lower().startswith('wds/'):
        bad.append(f'--decode {args.decode} reads WebDataset shards: give --dataset wds/NAME (make them with '
                   'prepare-shards)')
    if not args.no_aug:
        if not args.paper_crop:
            bad.append(f'--decode {args.decode} does the paper\'s crops: add --paper-crop (or --no-aug)')
        for opt, val, off in (('--color-jitter', args.color_jitter, 0), ('--vflip', args.vflip, 0),
                              ('--reprob', args.reprob, 0), ('--aa', args.aa, None),
                              ('--grayscale-prob', args.grayscale_prob or 0, 0),
                              ('--gaussian-blur-prob', args.gaussian_blur_prob or 0, 0)):
            if val != off:
                bad.append(f'--decode {args.decode} does not implement {opt} {val} (set it to {off})')
        if (args.train_interpolation or 'random') not in ('random', 'bilinear'):
            bad.append(f'--decode {args.decode} resizes bilinear: it does not implement --train-interpolation '
                       f'{args.train_interpolation} (random picks the model\'s, bilinear)')
    return bad


def decode_mode(args: Any, device: torch.device, logger: logging.Logger = _logger) -> str:
    """``--decode`` after its checks: cpu, draft, or device (decoded in this process on ``device``: ``gpu`` on a
    CUDA device, ``device`` anywhere). ``gpu`` without CUDA falls back to cpu, saying so in one line."""
    decode = getattr(args, 'decode', 'cpu')
    if decode == 'draft' and not (args.paper_crop or args.no_aug):
        raise UserError("--decode draft needs --paper-crop (or --no-aug): timm's random-resized crop may zoom in "
                        'further than a reduced decode keeps')
    if decode in ('gpu', 'device'):
        problems = gpu_decode_problems(args)
        if problems:
            raise UserError(problems[0])
        if decode == 'gpu' and device.type != 'cuda':
            logger.warning(f'--decode gpu: no CUDA device ({device}); decoding on the CPU in the loader workers '
                           '(--decode device runs the GPU path on the CPU)')
            return 'cpu'
        return 'device'
    return decode


def device_decode_loaders(args: Any, data_config: Dict[str, Any], device: torch.device, eval_ds: Optional[Any],
                          img_dtype: torch.dtype, logger: logging.Logger = _logger) -> Tuple[Any, Optional[Any]]:
    """``--decode gpu|device``: training (and centre-crop evaluation) batches decoded and cropped on ``device``."""
    if data_config['interpolation'] != 'bilinear':
        raise UserError(f'--decode {args.decode} resizes bilinear: the interpolation {data_config["interpolation"]!r} '
                        'is not implemented there (--interpolation bilinear, or --decode cpu)')
    if data_config['input_size'][1] != data_config['input_size'][2]:
        raise UserError(f'--decode {args.decode} crops squares: the input size {tuple(data_config["input_size"][1:])} '
                        'is not square (or use --decode cpu)')
    world, rank = (args.world_size, args.rank) if args.distributed else (1, 0)
    train_bytes = ShardBytes(args.data_dir, check_split(args.data_dir, args.train_split), args.batch_size, True,
                             args.workers, args.seed, rank, world)
    note = dropped_note(train_bytes.dropped, sum(train_bytes.lengths), train_bytes.readers(), args.batch_size, world)
    if note:
        logger.warning(f'WARNING: --decode {args.decode}: {note}')
    hflip = 0.0 if args.no_aug else args.hflip
    loader_train = device_loader(train_bytes, device, data_config, True, args.workers, hflip, img_dtype, args.pin_mem,
                                 no_aug=args.no_aug, channels_last=args.channels_last)
    loader_eval = None
    eval_batch = args.validation_batch_size or args.batch_size
    if eval_ds is not None and (args.ten_crop or args.distributed):  # ten crops, evaluation shared by rank: timm's
        loader_eval = eval_loader(eval_ds, data_config, eval_batch, args.workers, device, ten_crop=args.ten_crop,
                                  prefetcher=args.prefetcher, distributed=args.distributed, pin_memory=args.pin_mem,
                                  img_dtype=img_dtype, persistent=True)
    elif eval_ds is not None:
        eval_bytes = ShardBytes(args.data_dir, check_split(args.data_dir, args.val_split), eval_batch, False,
                                args.workers)
        loader_eval = device_loader(eval_bytes, device, data_config, False, args.workers, 0.0, img_dtype, args.pin_mem,
                                    channels_last=args.channels_last)
    return loader_train, loader_eval


def keeps_workers(args: argparse.Namespace, train_ds: Any) -> bool:
    """Whether the training loader's workers persist across epochs, seeded per epoch (worker_seeds.py): with
    workers, timm's 'all' or 'part' worker seeding, and a dataset whose sample order the workers' seeds do not
    decide (map-style datasets; our shards' reader). Others keep fresh workers each epoch."""
    if args.workers < 1 or args.use_multi_epochs_loader or args.worker_seeding not in ('all', 'part'):
        return False
    if isinstance(train_ds, torch.utils.data.IterableDataset):
        return isinstance(getattr(train_ds, 'reader', None), ShardSamples)
    return True


def build_loaders(args: argparse.Namespace, data_config: Dict[str, Any], device: torch.device, train_ds: Any,
                  eval_ds: Optional[Any], img_dtype: torch.dtype) -> Tuple[Any, Optional[Any]]:
    """timm's create_loader for training (and centre-crop evaluation); a ten-crop loader when asked.
    ``--decode gpu``: shard bytes decoded on the device (decode.py); ``--decode draft``: PIL draft mode."""

    decode = decode_mode(args, device, _logger)
    if decode == 'device':
        _logger.info(f'--decode {args.decode}: batches of shard JPEGs decoded on {device} by the training process')
        return device_decode_loaders(args, data_config, device, eval_ds, img_dtype, _logger)
    common = dict(mean=data_config['mean'], std=data_config['std'], pin_memory=args.pin_mem, img_dtype=img_dtype,
                  device=device, distributed=args.distributed, use_prefetcher=args.prefetcher)
    train_interpolation = args.train_interpolation
    if args.no_aug or not train_interpolation:
        train_interpolation = data_config['interpolation']
    persistent = keeps_workers(args, train_ds)
    buffers = batch_buffers(args.workers, keep_mapped=persistent) if args.prefetcher else None
    loader_train = create_loader(
        train_ds, input_size=data_config['input_size'], batch_size=args.batch_size, is_training=True,
        no_aug=args.no_aug, re_prob=args.reprob, re_mode=args.remode, re_count=args.recount, re_split=args.resplit,
        train_crop_mode=args.train_crop_mode, scale=args.scale, ratio=args.ratio, hflip=args.hflip, vflip=args.vflip,
        color_jitter=args.color_jitter or None,  # 0: no ColorJitter of zeros (a no-op that cost ~4% of a worker)
        color_jitter_prob=args.color_jitter_prob,
        grayscale_prob=args.grayscale_prob or 0., gaussian_blur_prob=args.gaussian_blur_prob or 0.,
        auto_augment=args.aa, num_aug_repeats=int(args.aug_repeats), interpolation=train_interpolation,
        num_workers=args.workers, worker_seeding=args.worker_seeding,
        use_multi_epochs_loader=args.use_multi_epochs_loader,
        collate_fn=CollateUint8(WORKER_BATCHES_NHWC, buffers) if args.prefetcher else None,
        persistent_workers=persistent,  # seeded per epoch (worker_seeds.py): exact resume
        **common)
    if args.paper_crop and not args.no_aug:
        interp = data_config['interpolation'] if train_interpolation == 'random' else train_interpolation
        _use_paper_crop(loader_train, data_config, interp)
    if decode == 'draft':
        use_draft(loader_train, draft_target(data_config))
    if isinstance(train_ds, torch.utils.data.IterableDataset):
        loader_train = wds_train_loader(args, train_ds, loader_train, _logger)
    if persistent:
        loader_train = persist_workers(loader_train, _torch_loader(loader_train), args.worker_seeding)
    loader_eval = None
    if eval_ds is not None:
        loader_eval = eval_loader(eval_ds, data_config, args.validation_batch_size or args.batch_size, args.workers,
                                  device, ten_crop=args.ten_crop, prefetcher=args.prefetcher,
                                  distributed=args.distributed, pin_memory=args.pin_mem, img_dtype=img_dtype,
                                  draft=decode == 'draft', persistent=True)
    return loader_train, loader_eval


# The workers' uint8 batches (timm's prefetcher on) are NHWC in memory, (B, C, H, W) in shape, whatever the model's
# layout: the decoded pixels are HWC, so each image goes into the batch as one straight copy (4 us for 224 px against
# 42 us for the transposing copy into NCHW, ~8% of a worker's time from shards), and the batch reaches the model's
# layout on the device, where the step or evaluation puts it (loop.in_model_layout). Same values either way.
WORKER_BATCHES_NHWC = True


def batch_buffers(workers: int, keep_mapped: bool = False) -> Optional[BatchBuffers]:
    """Reusable shared-memory batch buffers for ``workers`` loader workers (data/batch_buffers.py); None without
    workers. Slots per worker: the batches it has queued (PyTorch's prefetch factor, 2), the two timm's prefetcher
    holds, the one being made. ``keep_mapped`` (workers that persist): the main process keeps the buffers mapped and
    a reused one crosses without its file descriptor."""
    return BatchBuffers(workers, slots=2 + 2 + 1, keep_mapped=keep_mapped) if workers > 0 else None


def eval_loader(ds: Any, data_config: Dict[str, Any], batch_size: int, workers: int, device: torch.device, *,
                ten_crop: bool = False, prefetcher: bool = True, distributed: bool = False, pin_memory: bool = False,
                img_dtype: torch.dtype = torch.float32, draft: bool = False, persistent: bool = False) -> Any:
    """Evaluation batches: timm's centre-crop loader, or (B, 10, C, H, W) uint8 ten-crop batches that
    ``evaluate(..., ten_crop=True)`` normalises on the device. Unreadable images (None items) are dropped.
    ``draft``: JPEGs decoded in PIL's draft mode (decode.DraftDecode). Centre-crop batches are NHWC in memory
    (WORKER_BATCHES_NHWC). ``persistent``: the workers (if any) stay between passes, as timm's train.py keeps
    its evaluation loader's (the trainer evaluates every epoch; `validate`'s one pass does not need them), and
    each pass draws from the default generator what a fresh iterator draws (worker_seeds.DrawsAsFresh): exact
    resume, and the random stream of runs whose evaluation workers were fresh."""
    persistent = persistent and workers > 0
    c, h, w = data_config['input_size']
    if isinstance(ds, SkipUnreadable) and isinstance(ds.dataset, torch.utils.data.IterableDataset):
        ds = ds.dataset  # no random access to skip by: timm's wds reader skips unreadable samples itself
    iterable = isinstance(ds, torch.utils.data.IterableDataset)  # timm's wds reader shares itself out by rank
    if ten_crop:

        ds.transform = TenCrop((h, w), data_config['crop_pct'], data_config['interpolation'])
        if draft:
            draft_bytes(ds)
            ds.transform = transforms.Compose([DraftDecode(draft_target(data_config)), ds.transform])
        sampler = OrderedDistributedSampler(ds) if distributed and not iterable else None
        collate = SkipNoneCollate(torch.utils.data.default_collate, (10, c, h, w))
        loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False, sampler=sampler,
                                             num_workers=workers, pin_memory=pin_memory, drop_last=False,
                                             collate_fn=collate, persistent_workers=persistent)
        return DrawsAsFresh(loader, loader) if persistent else loader
    buffers = batch_buffers(workers, keep_mapped=persistent) if prefetcher else None
    collate = SkipNoneCollate(CollateUint8(WORKER_BATCHES_NHWC, buffers), (c, h, w)) if prefetcher else \
        SkipNoneCollate(torch.utils.data.default_collate, (c, h, w), torch.float32)
    loader = create_loader(ds, input_size=data_config['input_size'], batch_size=batch_size, is_training=False,
                           interpolation=data_config['interpolation'], mean=data_config['mean'], std=data_config['std'],
                           num_workers=workers, crop_pct=data_config['crop_pct'], collate_fn=collate,
                           pin_memory=pin_memory, img_dtype=img_dtype, device=device,
                           distributed=distributed and not iterable, use_prefetcher=prefetcher, persistent_workers=persistent)
    if draft:
        use_draft(loader, draft_target(data_config))
    return DrawsAsFresh(loader, _torch_loader(loader)) if persistent else loader


class FirstBatchAgain:
    """``--synthetic-input``: the loader's first batch, on ``device``, yielded as many times as the loader has
    batches: a training step's speed without the input path. Quacks like the loader it wraps (``sampler``,
    ``dataset``)."""

    def __init__(self, loader: Any, device: torch.device) -> None:
        self.loader, self.device = loader, device
        self.sampler, self.dataset = getattr(loader, 'sampler', None), getattr(loader, 'dataset', None)
        self._batch: Optional[Tuple[torch.Tensor, torch.Tensor]] = None

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Any:
        if self._batch is None:
            x, y = next(iter(self.loader))
            self._batch = (x.to(self.device), y.to(self.device))
            shut_down_workers(self.loader)  # the only batch it takes: persistent workers would idle all run
        for _ in range(len(self)):
            yield self._batch


def check_batches(loader: Any, dataset: Any, args: argparse.Namespace) -> None:
    """Refuse a training loader with no batch: the training loader drops the last partial batch, so a set smaller
    than one batch would train nothing."""
    try:
        n = len(loader)
    except TypeError:  # an iterable dataset of unknown length: train_one_epoch refuses an empty epoch
        return
    if n == 0:
        size = len(dataset) if hasattr(dataset, '__len__') else 'too few'
        per = f' per process ({args.world_size} processes)' if args.world_size > 1 else ''
        raise UserError(f'the training split has {size} images, fewer than one batch of {args.batch_size}{per}, and '
                        f'training drops the last partial batch: nothing would be trained; lower --batch-size')
