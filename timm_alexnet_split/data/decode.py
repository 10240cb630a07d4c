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
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from ..errors import UserError

_logger = logging.getLogger('timm_alexnet_split.data.decode')


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


def _squash(img: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """A uint8 image resized to exactly ``size`` (timm's no-aug training transform: Resize((h, w)))."""
    if tuple(img.shape[-2:]) == tuple(size):
        return img
    out = F.interpolate(img[None].float(), size=tuple(size), mode='bilinear', align_corners=False, antialias=True)
    return out[0].round_().clamp_(0, 255).to(torch.uint8)


def _draws(n: int, size: Tuple[int, int], scale: int, hflip: float, generator: Optional[torch.Generator],
           offsets: Optional[torch.Tensor], flips: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Crop offsets (N, 2) in the centre square and flips (N,): the given ones, or random draws."""
    h, w = size
    if offsets is None:
        offsets = torch.stack([torch.randint(0, scale - h + 1, (n,), generator=generator),
                               torch.randint(0, scale - w + 1, (n,), generator=generator)], 1)
    if flips is None:
        flips = torch.rand(n, generator=generator) < hflip
    return offsets, flips


def _crop_corners(images: Sequence[torch.Tensor], size: Tuple[int, int], scale: int, train: bool,
                  offsets: Optional[torch.Tensor]) -> Tuple[List[torch.Tensor], torch.Tensor]:
    """Each image resized (shorter side to ``scale``) and the (top, left) of its crop: the training crop's offset
    in the centre square, or the centre crop."""
    h, w = size
    resized, corners = [], []
    for i, img in enumerate(images):
        img = resize_shorter(img, scale)
        ih, iw = img.shape[-2:]
        if train:
            corners.append((_centre(ih, scale) + int(offsets[i, 0]), _centre(iw, scale) + int(offsets[i, 1])))
        else:
            corners.append((_centre(ih, h), _centre(iw, w)))
        resized.append(img)
    return resized, torch.tensor(corners, dtype=torch.long).view(-1, 2)


def _gather_crops(stack: torch.Tensor, corners: torch.Tensor, size: Tuple[int, int],
                  flips: Optional[torch.Tensor]) -> torch.Tensor:
    """Crops of a uint8 batch (N, 3, H, W) at ``corners`` (N, 2), mirrored where ``flips``: one gather for the
    whole batch, (N, h, w, 3) (channels last)."""
    h, w = size
    dev = stack.device
    corners = corners.to(dev)
    rows = corners[:, :1] + torch.arange(h, device=dev)
    cols = torch.arange(w, device=dev).expand(len(stack), w)
    if flips is not None:
        cols = torch.where(flips.to(dev)[:, None], (w - 1) - cols, cols)
    cols = corners[:, 1:] + cols
    n = torch.arange(len(stack), device=dev)[:, None, None]
    return stack[n, :, rows[:, :, None], cols[:, None, :]]


def crop_flip_normalise(images: Sequence[torch.Tensor], size: Tuple[int, int], scale: int, train: bool,
                        mean: Sequence[float], std: Sequence[float], hflip: float = 0.5,
                        dtype: torch.dtype = torch.float32, generator: Optional[torch.Generator] = None,
                        offsets: Optional[torch.Tensor] = None, flips: Optional[torch.Tensor] = None,
                        no_aug: bool = False, channels_last: bool = False) -> torch.Tensor:
    """A normalised batch (N, 3, h, w) from uint8 images on one device.

    Training: shorter side to ``scale``, centre ``scale`` square, random ``size`` crop, flip with probability
    ``hflip`` (timm's --paper-crop). Evaluation: shorter side to ``scale``, centre ``size`` crop (timm's eval
    transform). ``no_aug`` (training): resized to ``size`` (timm's no-aug training transform). ``mean``/``std`` in
    0-1 units as timm's. ``offsets`` (N, 2) of (top, left) in the square and ``flips`` (N,) bool replace the
    random draws (tests). Images of one size are cropped in one gather; ``channels_last`` returns the batch in
    that memory format at no cost (the gather writes it so)."""
    n = len(images)
    device = images[0].device if n else torch.device('cpu')
    if no_aug:
        images, corners, flips, train = [_squash(img, size) for img in images], torch.zeros(n, 2, dtype=torch.long), \
            None, False
    else:
        if train:
            offsets, flips = _draws(n, size, scale, hflip, generator, offsets, flips)
        else:
            flips = None
        images, corners = _crop_corners(images, size, scale, train, offsets)
    if n and all(img.shape == images[0].shape for img in images):
        crops = _gather_crops(torch.stack(list(images)), corners, size, flips)
    else:  # images of several sizes (keep-aspect shards): one crop each
        h, w = size
        crops = torch.empty((n, h, w, 3), dtype=torch.uint8, device=device)
        for i, img in enumerate(images):
            top, left = (int(v) for v in corners[i])
            crop = img[:, top:top + h, left:left + w]
            crops[i] = (crop.flip(-1) if flips is not None and bool(flips[i]) else crop).permute(1, 2, 0)
    m = torch.tensor([255 * v for v in mean], device=device)
    s = torch.tensor([255 * v for v in std], device=device)
    out = crops.float().sub_(m).div_(s).to(dtype).permute(0, 3, 1, 2)
    return out if channels_last else out.contiguous()


class DeviceDecodeLoader:
    """Normalised batches on ``device`` from a loader of (JPEG byte tensors, labels) batches (shard_reader.ShardBytes).

    Quacks like timm's PrefetchLoader for the trainer: iterating gives (input, target) on the device, ``len`` the
    batches per epoch, ``sampler.set_epoch`` a new shuffle, ``dataset`` the byte dataset. Training batches are made
    whole first (shard_reader.whole_batches): an epoch trains on every sample but fewer than one batch.

    On CUDA the batches are decoded and cropped by a thread of their own on a stream of their own, up to two
    batches ahead of the training step, and handed to the step's stream with an event. Before each decode that
    stream is synchronised with the host: nvJPEG (torchvision's decode_jpeg on CUDA) writes its output before work
    already queued on the stream has run, into memory the caching allocator may have just recycled from that work
    (pytorch/vision#9606). On the training stream that corrupted the step's tensors (NaN losses after a few
    batches, 2026-12 H200 report); on a stream of its own, whose blocks the step never holds (record_stream), only
    the decoder's own queue is at risk, and the synchronisation covers it.

    The random crops and flips come from a generator of the loader's own, seeded from torch's global one at the
    start of each epoch: the same draws whichever thread decodes, and an exact resume restores them."""

    def __init__(self, loader: Any, device: torch.device, size: Tuple[int, int], scale: int, train: bool,
                 mean: Sequence[float], std: Sequence[float], hflip: float = 0.5, dtype: torch.dtype = torch.float32,
                 no_aug: bool = False, channels_last: bool = False):
        self.loader, self.device, self.size, self.scale, self.train = loader, device, tuple(size), scale, train
        self.mean, self.std, self.hflip, self.dtype = tuple(mean), tuple(std), hflip, dtype
        self.no_aug, self.channels_last = no_aug, channels_last
        self.skipped = 0
        self._generator: Optional[torch.Generator] = None
        self.dataset = loader.dataset
        self.sampler = loader.dataset  # has set_epoch: the trainer calls loader.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return self.dataset.steps if self.train else len(self.loader)

    def _batches(self) -> Iterator[Tuple[List[torch.Tensor], torch.Tensor]]:
        if not self.train:
            return iter(self.loader)
        from .shard_reader import whole_batches
        return whole_batches(self.loader, self.dataset.batch_size, len(self))

    def _decode(self, data: List[torch.Tensor], target: torch.Tensor) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
        """One batch decoded, cropped and normalised on the device; None when no image in it decodes (an error in
        a distributed run's training: its processes must all take the same steps)."""
        images, ok = decode_batch(data, self.device)
        if len(ok) < len(data):
            self.skipped += len(data) - len(ok)
            _logger.warning(f'skipped {len(data) - len(ok)} undecodable image(s) in a batch')
            target = target[ok]
        if not images:
            if self.train and getattr(self.dataset, 'world', 1) > 1:
                raise UserError(f'none of the {len(data)} images of a training batch decodes (rank '
                                f'{self.dataset.rank} of {self.dataset.world}): a process of a distributed run cannot '
                                'skip a step, the others would wait for it; repair the shards (prepare-shards) or '
                                'train with --decode cpu')
            return None
        x = crop_flip_normalise(images, self.size, self.scale, self.train, self.mean, self.std, self.hflip,
                                self.dtype, generator=self._generator, no_aug=self.no_aug and self.train,
                                channels_last=self.channels_last)
        return x, target.to(self.device, non_blocking=True)

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        self._generator = torch.Generator().manual_seed(int(torch.randint(0, 2 ** 62, (1,))))
        if self.device.type == 'cuda':
            side = torch.cuda.Stream(self.device)
            yield from self._ahead(lambda data, target: self._decode_on(side, data, target), _hand_over)
        elif self.threaded:
            yield from self._ahead(lambda data, target: (self._decode(data, target), None), lambda b, _: b)
        else:
            for data, target in self._batches():
                batch = self._decode(data, target)
                if batch is not None:
                    yield batch

    AHEAD = 2
    threaded = False  # CPU: decode in the main process (a thread would only compete with the step for the cores)

    def _ahead(self, decode: Callable[[List[torch.Tensor], torch.Tensor], Tuple[Any, Any]],
               hand_over: Callable[[Any, Any], Any]) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        """Batches decoded by a thread of their own, up to AHEAD batches ahead, while the main thread runs the
        step (it waits for each step's loss): decoding and training overlap. Its errors are raised here."""
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor
        queued: Any = deque()
        with ThreadPoolExecutor(1, thread_name_prefix='decode') as pool:
            try:
                for data, target in self._batches():
                    queued.append(pool.submit(decode, data, target))
                    while len(queued) > self.AHEAD or (queued and queued[0].done()):
                        batch = hand_over(*queued.popleft().result())
                        if batch is not None:
                            yield batch
                while queued:
                    batch = hand_over(*queued.popleft().result())
                    if batch is not None:
                        yield batch
            finally:
                for f in queued:
                    f.cancel()

    def _decode_on(self, side: Any, data: List[torch.Tensor], target: torch.Tensor) -> Tuple[Any, Any]:
        """``_decode`` on the decoding stream; the batch and an event recorded after its work."""
        with torch.cuda.stream(side):
            side.synchronize()  # see the class docstring: nvJPEG does not wait for the stream's queue
            batch = self._decode(data, target)
            ready = torch.cuda.Event()
            ready.record(side)
        return batch, ready


def _hand_over(batch: Optional[Tuple[torch.Tensor, torch.Tensor]], ready: Any) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
    """A batch made on the decoding stream, for the current stream: it waits for the batch, and the allocator
    keeps the batch's memory until the current stream is done with it."""
    if batch is None:
        return None
    current = torch.cuda.current_stream(batch[0].device)
    current.wait_event(ready)
    for t in batch:
        t.record_stream(current)
    return batch


def _batch(items: Any) -> Any:
    return items  # ShardBytes yields whole batches


def device_loader(dataset: Any, device: torch.device, data_config: Dict[str, Any], train: bool, workers: int,
                  hflip: float = 0.5, dtype: torch.dtype = torch.float32, pin_memory: bool = False,
                  no_aug: bool = False, channels_last: bool = False) -> DeviceDecodeLoader:
    """A DeviceDecodeLoader over ``dataset`` (shard_reader.ShardBytes) read by ``workers`` loader processes.

    The workers persist across epochs (no start-up per epoch): they only read bytes, in an order fixed by the seed,
    the epoch (shared with them) and the reader, and draw no random number; the iterator's base seed, drawn once
    a run (and once more by a resumed run), comes from a private generator, so an exact resume stays exact."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=workers, collate_fn=_batch,
                                         pin_memory=pin_memory, persistent_workers=workers > 0,
                                         generator=torch.Generator().manual_seed(0))
    return DeviceDecodeLoader(loader, device, tuple(data_config['input_size'][1:]), draft_target(data_config), train,
                              data_config['mean'], data_config['std'], hflip, dtype, no_aug, channels_last)


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
        from ..errors import UserError
        raise UserError('--decode draft needs an image folder dataset (--dataset "" or folder/...)')
    inner.load_bytes = True
    return inner


def use_draft(loader: Any, target: int) -> None:
    """Make a folder loader's dataset hand file bytes to a DraftDecode put first in its transform."""
    inner = draft_bytes(loader.dataset)
    steps = getattr(inner.transform, 'transforms', None)
    if steps is None:
        from ..errors import UserError
        raise UserError('--decode draft: the loader has no transform list to put the decoder in')
    steps.insert(0, DraftDecode(target, inner.input_img_mode or 'RGB'))
