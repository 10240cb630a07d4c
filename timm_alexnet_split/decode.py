"""Decoding where it is cheapest: batches of JPEG bytes on the device (nvjpeg), or PIL's draft mode on the CPU.

- :func:`decode_batch`: JPEG bytes -> uint8 CHW images with ``torchvision.io.decode_jpeg`` on any device (nvjpeg on
  CUDA); unreadable ones are left out and counted.
- :func:`crop_flip_normalise`: the paper's crops (shorter side to ``scale``, random ``size`` crop in training,
  centre crop in evaluation), horizontal flips and the mean/std normalisation, as tensors on that device. The
  result equals timm's CPU path with ``--paper-crop`` (PaperCrop, flip, ToTensor, Normalize) for the same crop
  and flip; PCA lighting is then added on the device by the trainer (augment.BatchPCALighting), as for folders.
- :class:`DeviceDecodeLoader`: batches of shard bytes from loader workers -> normalised batches on the device.
- :class:`DraftDecode`: a PIL transform for full-size JPEG folders that decodes at the smallest DCT scale
  (1/2, 1/4, 1/8) that still leaves the shorter side >= the resize target.
"""
from __future__ import annotations

import io
import logging
import math
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

_logger = logging.getLogger('timm_alexnet_split.decode')


# ---------------------------------------------------------------------------------------------------------------------
# device decoding
# ---------------------------------------------------------------------------------------------------------------------
def decode_batch(data: Sequence[torch.Tensor], device: torch.device) -> Tuple[List[torch.Tensor], List[int]]:
    """Decode JPEG byte tensors (uint8, 1-D) to RGB uint8 (3, H, W) images on ``device``.

    Returns the images and the positions of those that decoded (a corrupt one is left out)."""
    from torchvision.io import ImageReadMode, decode_jpeg
    data = list(data)
    try:
        return list(decode_jpeg(data, mode=ImageReadMode.RGB, device=device)), list(range(len(data)))
    except RuntimeError:  # one bad image fails the batch call: decode one by one and leave the bad ones out
        images, ok = [], []
        for i, d in enumerate(data):
            try:
                images.append(decode_jpeg(d, mode=ImageReadMode.RGB, device=device))
                ok.append(i)
            except RuntimeError:
                pass
        return images, ok


def resize_shorter(img: torch.Tensor, scale: int) -> torch.Tensor:
    """A uint8 (3, H, W) image with its shorter side resized to ``scale`` (bilinear, antialiased), as
    torchvision's Resize(scale) computes the other side."""
    h, w = img.shape[-2:]
    if min(h, w) == scale:
        return img
    nh, nw = (scale, int(scale * w / h)) if h <= w else (int(scale * h / w), scale)
    out = F.interpolate(img[None].float(), size=(nh, nw), mode='bilinear', align_corners=False, antialias=True)
    return out[0].round_().clamp_(0, 255).to(torch.uint8)


def _centre(n: int, k: int) -> int:
    return int(round((n - k) / 2.0))  # torchvision CenterCrop's rounding


def crop_flip_normalise(images: Sequence[torch.Tensor], size: Tuple[int, int], scale: int, train: bool,
                        mean: Sequence[float], std: Sequence[float], hflip: float = 0.5,
                        dtype: torch.dtype = torch.float32, generator: Optional[torch.Generator] = None,
                        offsets: Optional[torch.Tensor] = None, flips: Optional[torch.Tensor] = None) -> torch.Tensor:
    """A normalised batch (N, 3, h, w) from uint8 images on one device.

    Training: shorter side to ``scale``, centre ``scale`` square, random ``size`` crop, flip with probability
    ``hflip`` (timm's --paper-crop). Evaluation: shorter side to ``scale``, centre ``size`` crop (timm's eval
    transform). ``mean``/``std`` in 0-1 units as timm's. ``offsets`` (N, 2) of (top, left) in the square and
    ``flips`` (N,) bool replace the random draws (tests)."""
    h, w = size
    n = len(images)
    device = images[0].device if n else torch.device('cpu')
    if train and offsets is None:
        offsets = torch.stack([torch.randint(0, scale - h + 1, (n,), generator=generator),
                               torch.randint(0, scale - w + 1, (n,), generator=generator)], 1)
    if train and flips is None:
        flips = torch.rand(n, generator=generator) < hflip
    out = torch.empty((n, 3, h, w), dtype=torch.uint8, device=device)
    for i, img in enumerate(images):
        img = resize_shorter(img, scale)
        ih, iw = img.shape[-2:]
        if train:
            top, left = _centre(ih, scale) + int(offsets[i, 0]), _centre(iw, scale) + int(offsets[i, 1])
        else:
            top, left = _centre(ih, h), _centre(iw, w)
        crop = img[:, top:top + h, left:left + w]
        out[i] = crop.flip(-1) if train and bool(flips[i]) else crop
    m = torch.tensor([255 * v for v in mean], device=device).view(1, 3, 1, 1)
    s = torch.tensor([255 * v for v in std], device=device).view(1, 3, 1, 1)
    return out.float().sub_(m).div_(s).to(dtype)


class DeviceDecodeLoader:
    """Normalised batches on ``device`` from a loader of (JPEG byte tensors, labels) batches (shard_reader.ShardBytes).

    Quacks like timm's PrefetchLoader for the trainer: iterating gives (input, target) on the device, ``len`` the
    batches per epoch, ``sampler.set_epoch`` a new shuffle, ``dataset`` the byte dataset."""

    def __init__(self, loader: Any, device: torch.device, size: Tuple[int, int], scale: int, train: bool,
                 mean: Sequence[float], std: Sequence[float], hflip: float = 0.5, dtype: torch.dtype = torch.float32):
        self.loader, self.device, self.size, self.scale, self.train = loader, device, tuple(size), scale, train
        self.mean, self.std, self.hflip, self.dtype = tuple(mean), tuple(std), hflip, dtype
        self.skipped = 0
        self.dataset = loader.dataset
        self.sampler = loader.dataset  # has set_epoch: the trainer calls loader.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        for data, target in self.loader:
            images, ok = decode_batch(data, self.device)
            if len(ok) < len(data):
                self.skipped += len(data) - len(ok)
                _logger.warning(f'skipped {len(data) - len(ok)} undecodable image(s) in a batch')
                target = target[ok]
            if not images:
                continue
            x = crop_flip_normalise(images, self.size, self.scale, self.train, self.mean, self.std, self.hflip,
                                    self.dtype)
            yield x, target.to(self.device, non_blocking=True)


def _batch(items: Any) -> Any:
    return items  # ShardBytes yields whole batches


def device_loader(dataset: Any, device: torch.device, data_config: Dict[str, Any], train: bool, workers: int,
                  hflip: float = 0.5, dtype: torch.dtype = torch.float32, pin_memory: bool = False) -> DeviceDecodeLoader:
    """A DeviceDecodeLoader over ``dataset`` (shard_reader.ShardBytes) read by ``workers`` loader processes."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=workers, collate_fn=_batch,
                                         pin_memory=pin_memory, persistent_workers=False)
    return DeviceDecodeLoader(loader, device, tuple(data_config['input_size'][1:]), draft_target(data_config), train,
                              data_config['mean'], data_config['std'], hflip, dtype)


def gpu_decode_problems(args: Any) -> List[str]:
    """Options the device decoding path does not implement (it does the paper's crops and flips only)."""
    bad = []
    if not (args.dataset or '').lower().startswith('wds/'):
        bad.append('--decode gpu reads WebDataset shards: give --dataset wds/NAME (make them with prepare-shards)')
    if not args.no_aug:
        if not args.paper_crop:
            bad.append('--decode gpu does the paper\'s crops: add --paper-crop (or --no-aug)')
        for opt, val, off in (('--color-jitter', args.color_jitter, 0), ('--vflip', args.vflip, 0),
                              ('--reprob', args.reprob, 0), ('--aa', args.aa, None),
                              ('--grayscale-prob', args.grayscale_prob or 0, 0),
                              ('--gaussian-blur-prob', args.gaussian_blur_prob or 0, 0)):
            if val != off:
                bad.append(f'--decode gpu does not implement {opt} {val} (set it to {off})')
    return bad


# ---------------------------------------------------------------------------------------------------------------------
# CPU: PIL draft mode for full-size JPEG folders
# ---------------------------------------------------------------------------------------------------------------------
class DraftDecode:
    """Bytes (or a file object) -> PIL RGB image, decoded at the smallest JPEG DCT scale whose shorter side is still
    at least ``target``: a 500x375 JPEG for a 256 resize is decoded in full, a 1000x750 one at 1/2 (500x375).

    ``last_scale`` is the reduction the last call used (1 = full decode), for tests and benchmarks."""

    def __init__(self, target: int, mode: str = 'RGB') -> None:
        self.target, self.mode = int(target), mode
        self.last_scale = 1

    def __call__(self, data: Any) -> Any:
        from PIL import Image
        img = Image.open(io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data)
        full = img.size
        img.draft(self.mode, (self.target, self.target))
        self.last_scale = max(1, full[0] // img.size[0]) if img.size[0] else 1
        return img.convert(self.mode)

    def __repr__(self) -> str:
        return f'{type(self).__name__}(target={self.target})'


def draft_target(data_config: Dict[str, Any]) -> int:
    """The shorter side the paper's crops and timm's eval transform resize to: floor(size / crop_pct)."""
    return int(math.floor(max(data_config['input_size'][1:]) / data_config['crop_pct']))


def draft_bytes(ds: Any) -> Any:
    """Make a folder dataset (under SkipUnreadable or not) hand out file bytes; returns the inner dataset."""
    inner = getattr(ds, 'dataset', ds)
    if not hasattr(inner, 'load_bytes'):
        from .errors import UserError
        raise UserError('--decode draft needs an image folder dataset (--dataset "" or folder/...)')
    inner.load_bytes = True
    return inner


def use_draft(loader: Any, target: int) -> None:
    """Make a folder loader's dataset hand file bytes to a DraftDecode put first in its transform."""
    inner = draft_bytes(loader.dataset)
    steps = getattr(inner.transform, 'transforms', None)
    if steps is None:
        from .errors import UserError
        raise UserError('--decode draft: the loader has no transform list to put the decoder in')
    steps.insert(0, DraftDecode(target, inner.input_img_mode or 'RGB'))


# ---------------------------------------------------------------------------------------------------------------------
# the trainer's --decode option
# ---------------------------------------------------------------------------------------------------------------------
def decode_mode(args: Any, device: torch.device, logger: logging.Logger = _logger) -> str:
    """``--decode`` after its checks: gpu without CUDA falls back to cpu, saying so in one line."""
    from .errors import UserError
    decode = getattr(args, 'decode', 'cpu')
    if decode == 'draft' and not (args.paper_crop or args.no_aug):
        raise UserError("--decode draft needs --paper-crop (or --no-aug): timm's random-resized crop may zoom in "
                        'further than a reduced decode keeps')
    if decode == 'gpu':
        problems = gpu_decode_problems(args)
        if problems:
            raise UserError(problems[0])
        if device.type != 'cuda':
            logger.warning(f'--decode gpu: no CUDA device ({device}); decoding on the CPU in the loader workers')
            return 'cpu'
    return decode


def device_decode_loaders(args: Any, data_config: Dict[str, Any], device: torch.device, eval_ds: Optional[Any],
                          img_dtype: torch.dtype, logger: logging.Logger = _logger) -> Tuple[Any, Optional[Any]]:
    """``--decode gpu``: training (and centre-crop evaluation) batches decoded and cropped on ``device``."""
    from .shard_reader import ShardBytes, check_split
    from .train.loaders import eval_loader
    world, rank = (args.world_size, args.rank) if args.distributed else (1, 0)
    train_bytes = ShardBytes(args.data_dir, check_split(args.data_dir, args.train_split), args.batch_size, True,
                             args.workers, args.seed, rank, world)
    if train_bytes.dropped:
        logger.warning(f'--decode gpu: {train_bytes.dropped} training samples per epoch left out to keep whole, '
                       'equal batches on every reader')
    hflip = 0.0 if args.no_aug else args.hflip
    loader_train = device_loader(train_bytes, device, data_config, True, args.workers, hflip, img_dtype, args.pin_mem)
    loader_eval = None
    eval_batch = args.validation_batch_size or args.batch_size
    if eval_ds is not None and (args.ten_crop or args.distributed):  # ten crops, evaluation shared by rank: timm's
        loader_eval = eval_loader(eval_ds, data_config, eval_batch, args.workers, device, ten_crop=args.ten_crop,
                                  prefetcher=args.prefetcher, distributed=args.distributed, pin_memory=args.pin_mem,
                                  img_dtype=img_dtype)
    elif eval_ds is not None:
        eval_bytes = ShardBytes(args.data_dir, check_split(args.data_dir, args.val_split), eval_batch, False,
                                args.workers)
        loader_eval = device_loader(eval_bytes, device, data_config, False, args.workers, 0.0, img_dtype, args.pin_mem)
    return loader_train, loader_eval
