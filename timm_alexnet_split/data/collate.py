"""Batching uint8 images in the loader worker: timm's ``fast_collate``, with the copies it pays cut.

timm's ``fast_collate`` fills a zeroed tensor in the worker's ordinary memory, one image at a time through
PyTorch's strided copy of the HWC pixels (``pil_to_tensor`` gives a CHW view of them) into CHW; the batch then
crosses to the main process through shared memory, which takes another copy of the whole batch. Here the batch
is made in shared memory in the first place (as PyTorch's own ``default_collate`` does in a worker), left
unzeroed (every byte is written), and each image is copied by NumPy (about twice as fast for this transpose) or,
for a channels_last batch, straight (the HWC pixels are channels_last already). Same values, same dtypes. Given
:class:`~.batch_buffers.BatchBuffers`, the images and class indices go into buffers the worker fills again once
the main process has dropped their batch (batch_buffers.py), instead of fresh shared memory per batch.

Invariant: :func:`collate_uint8` returns exactly what ``fast_collate`` returns for the same items (the tests
compare them); items it does not speed up (tuples of images, non-uint8 arrays) go to ``fast_collate`` itself.
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
import torch
from timm.data.loader import fast_collate

from .batch_buffers import BatchBuffers, SentBatch, batch_view


def _empty_batch(shape: Sequence[int], channels_last: bool, buffers: Optional[BatchBuffers] = None) -> torch.Tensor:
    """An unfilled uint8 (B, C, H, W) batch: in shared memory inside a loader worker (the trip to the main process
    then copies nothing; one of ``buffers``' when given), NHWC in memory when ``channels_last``."""
    b, c, h, w = shape
    stored = (b, h, w, c) if channels_last else (b, c, h, w)
    if buffers is not None:
        storage = buffers.storage(b * c * h * w)
    elif torch.utils.data.get_worker_info() is not None:
        storage = torch.UntypedStorage._new_shared(b * c * h * w)
    else:
        storage = torch.UntypedStorage(b * c * h * w)
    out = batch_view(storage, stored, torch.uint8)
    return out.permute(0, 3, 1, 2) if channels_last else out


def _targets(labels: List[Any], buffers: Optional[BatchBuffers]) -> torch.Tensor:
    """The int64 target vector fast_collate makes; class indices go into one of ``buffers``' when given."""
    if buffers is not None and all(isinstance(label, (int, np.integer)) for label in labels):
        out = batch_view(buffers.storage(8 * len(labels), 'targets'), (len(labels),), torch.int64)
        out.numpy()[:] = labels
        return out
    targets = torch.utils.data.default_collate(labels)
    return targets.long() if targets.ndim == 1 else targets


def _as_array(image: Any) -> np.ndarray:
    return image.numpy() if isinstance(image, torch.Tensor) else image


def _fast_case(batch: List[Tuple[Any, Any]]) -> bool:
    """Items of one uint8 (C, H, W) image each, as tensors or arrays: what collate_uint8 batches itself."""
    first = batch[0][0] if batch and isinstance(batch[0], tuple) else None
    if not isinstance(first, (torch.Tensor, np.ndarray)) or first.ndim != 3:
        return False
    return all(len(item) >= 2 and _is_uint8(item[0]) and tuple(item[0].shape) == tuple(first.shape) for item in batch)


def _is_uint8(image: Any) -> bool:
    if isinstance(image, torch.Tensor):
        return image.dtype == torch.uint8 and image.device.type == 'cpu'
    return isinstance(image, np.ndarray) and image.dtype == np.uint8


def collate_uint8(batch: List[Tuple[Any, Any]], channels_last: bool = False,
                  buffers: Optional[BatchBuffers] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """(uint8 images (B, C, H, W), targets) from (image, target, ...) items, as timm's fast_collate makes them;
    the images and class indices in ``buffers``' when given (batch_buffers.py)."""
    if not _fast_case(batch):
        return fast_collate(batch)
    targets = _targets([item[1] for item in batch], buffers)  # further fields dropped, as timm's
    out = _empty_batch((len(batch), *batch[0][0].shape), channels_last, buffers)
    dest = out.permute(0, 2, 3, 1).numpy() if channels_last else out.numpy()
    for i, item in enumerate(batch):
        src = _as_array(item[0])
        np.copyto(dest[i], src.transpose(1, 2, 0) if channels_last else src)
    if buffers is not None and torch.utils.data.get_worker_info() is not None:
        return SentBatch((out, targets), buffers)  # a plain tuple again in the main process, which frees the buffers
    return out, targets


class CollateUint8:
    """:func:`collate_uint8` with its layout (and its workers' reusable buffers, if any) chosen once; picklable for
    spawned workers."""

    def __init__(self, channels_last: bool = False, buffers: Optional[BatchBuffers] = None) -> None:
        self.channels_last, self.buffers = channels_last, buffers

    def __call__(self, batch: List[Tuple[Any, Any]]) -> Tuple[torch.Tensor, torch.Tensor]:
        return collate_uint8(batch, self.channels_last, self.buffers)
