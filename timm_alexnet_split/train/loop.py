"""The loops: one training epoch, evaluation, and the stop requests they obey."""
from __future__ import annotations

import argparse
import contextlib
import logging
import math
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
import torchvision.utils
from timm import utils
from timm.data.distributed_sampler import OrderedDistributedSampler
from tqdm import tqdm

from ..atomic import replace_when_done
from ..errors import UserError
from .stops import Interrupted, StopRequest, signal_flags, signal_from_flags  # noqa: F401  (loop.StopRequest)

_logger = logging.getLogger('timm_alexnet_split.train')


class Diverged(Exception):
    def __init__(self, epoch: int, batch: int, value: float) -> None:
        super().__init__(epoch, batch, value)
        self.epoch, self.batch, self.value = epoch, batch, value


def _batches(loader: Any, stop: Optional[StopRequest]) -> Iterator[Any]:
    """The loader's batches. A loader worker killed by a stop signal that reached it too (in the moment after it
    starts and before it ignores such signals: train.loaders.leave_stop_signals_to_main) ends the loop as the stop
    does, after the last batch trained, not as a crash."""
    it = iter(loader)
    done = 0
    while True:
        try:
            batch = next(it)
        except StopIteration:
            return
        except RuntimeError as e:
            if stop is None or stop.signum is None or 'DataLoader worker' not in str(e):
                raise
            stop.last_batch = done - 1 if done else stop.last_batch
            raise Interrupted(stop.signum) from None
        yield batch
        done += 1


def _progress(iterable: Any, total: int, desc: str) -> Any:
    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True, disable=not sys.stderr.isatty())


@dataclass(frozen=True)
class TrainStep:
    """What every training step of a run uses, built once per run (``train.run``): the model and what trains it,
    the options, and where the loop reports (stop request, recovery checkpoints, sample images).

    Invariant: nothing in it changes between epochs; what an epoch counts lives in ``_EpochMeters``.
    """
    model: nn.Module
    optimizer: torch.optim.Optimizer
    loss_fn: nn.Module
    args: argparse.Namespace
    device: torch.device
    lr_scheduler: Any = None
    amp_autocast: Callable = contextlib.nullcontext
    loss_scaler: Any = None
    model_dtype: Optional[torch.dtype] = None
    pca: Optional[Callable] = None
    stop: Optional[StopRequest] = None
    on_recovery: Optional[Callable[[int, int], None]] = None   # (epoch, batch): save a recovery checkpoint
    run_dir: Optional[Path] = None                             # sample images (--save-images); None: not written


@dataclass
class _EpochMeters:
    """What one training epoch counts: running loss and top-1, update times, the rates used, batches and samples."""
    num_updates: int
    losses: Any = field(default_factory=utils.AverageMeter)
    top1: Any = field(default_factory=utils.AverageMeter)
    update_time: Any = field(default_factory=utils.AverageMeter)
    lr_sum: float = 0.0
    updates: int = 0
    batches: int = 0
    samples: int = 0
    images: int = 0
    t_update: float = field(default_factory=time.perf_counter)
    t_start: float = field(default_factory=time.perf_counter)


def _save_batch_image(input: torch.Tensor, path: Path) -> None:
    """``--save-images``: the batch as one picture (timm train.py's), written atomically."""
    with replace_when_done(path, True, 'while training', keep_suffix=True) as tmp:
        torchvision.utils.save_image(input.float(), tmp, padding=0, normalize=True)


def train_one_epoch(epoch: int, loader: Any, step: TrainStep) -> 'OrderedDict[str, float]':
    """One pass over the training data: loss and top-1 of the training batches (as trained on).

    Distributed: one all-reduce per batch carries the loss, top-1 and any stop request, so every process sees the
    global values, stops after the same batch, and a NaN on one process stops all of them.

    Also returns ``img_s``, the images trained per second of the whole epoch (the loader's start-up included: all
    processes' images when distributed), and ``lr``, the mean learning rate of the epoch's updates (the rate used).
    An epoch without a single batch is a UserError, never an epoch of zeros."""
    args, stop = step.args, step.stop
    step.model.train()
    accum = args.grad_accum_steps
    n = len(loader)
    last_accum = n % accum
    updates_per_epoch = (n + accum - 1) // accum
    last_idx_to_accum = n - last_accum
    meters = _EpochMeters(num_updates=epoch * updates_per_epoch)
    step.optimizer.zero_grad()
    bar = _progress(loader, n, f'train {epoch}')
    for batch_idx, (input, target) in enumerate(_batches(bar, stop)):
        last_batch = batch_idx == n - 1
        need_update = last_batch or (batch_idx + 1) % accum == 0
        update_idx = batch_idx // accum
        if batch_idx >= last_idx_to_accum:
            accum = last_accum
        input, target = _prepare_batch(step, input, target)
        loss_value, acc1_value, agreed = _train_step(step, input, target, epoch, batch_idx, accum, need_update)
        bs = input.shape[0]
        meters.batches += 1
        meters.losses.update(loss_value, bs)
        meters.top1.update(acc1_value, bs)
        meters.samples += bs * args.world_size
        meters.images += bs * args.world_size
        if args.save_images and step.run_dir is not None and batch_idx % args.log_interval == 0:
            _save_batch_image(input, step.run_dir / f'train-batch-{batch_idx}.jpg')
        if need_update:
            _after_update(meters, step, epoch, batch_idx, update_idx, updates_per_epoch, last_batch, bar)
        _obey_stop(stop, agreed if args.distributed else (stop.signum if stop is not None else None), batch_idx)
    if hasattr(step.optimizer, 'sync_lookahead'):
        step.optimizer.sync_lookahead()
    if not meters.batches:
        raise UserError(f'epoch {epoch} had no training batch: the training data is empty or smaller than one batch '
                        f'of {args.batch_size} (lower --batch-size)')
    for d in {p.device for p in step.model.parameters() if p.device.type == 'cuda'}:
        torch.cuda.synchronize(d)  # the epoch's rate counts its last step done
    return OrderedDict([('loss', meters.losses.avg), ('top1', meters.top1.avg),
                        ('img_s', meters.images / max(time.perf_counter() - meters.t_start, 1e-9)),
                        ('lr', meters.lr_sum / max(meters.updates, 1))])


def _prepare_batch(step: TrainStep, input: torch.Tensor, target: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """On the device (without the prefetcher), PCA lighting, in the model's layout."""
    if not step.args.prefetcher:
        input, target = input.to(device=step.device, dtype=step.model_dtype), target.to(device=step.device)
    if step.pca is not None:
        input = step.pca(input)
    return in_model_layout(input, step.args.channels_last), target


def in_model_layout(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """A batch (B, C, H, W) in the model's memory layout: channels_last, or contiguous NCHW. The loader workers'
    batches are NHWC in memory whatever the model's layout (loaders.WORKER_BATCHES_NHWC: the decoded pixels' own
    order), so this is where a model without --channels-last gets NCHW (a copy on the device; none when the batch
    is in the model's layout already)."""
    return x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def _train_step(step: TrainStep, input: torch.Tensor, target: torch.Tensor, epoch: int, batch_idx: int, accum: int,
                need_update: bool) -> Tuple[float, float, Optional[int]]:
    """Forward, loss, backward (and the optimizer step on an update): the batch's loss and top-1 (global values when
    distributed) and the stop request the processes agree on. A non-finite loss raises Diverged."""
    model, optimizer, args, loss_scaler = step.model, step.optimizer, step.args, step.loss_scaler
    second_order = getattr(optimizer, 'is_second_order', False)
    no_sync = model.no_sync() if hasattr(model, 'no_sync') and not need_update else contextlib.nullcontext()
    with no_sync:  # DDP: gradients are all-reduced once per update, not per accumulated batch
        with step.amp_autocast():
            output = model(input)
            if target.device != output.device:
                target = target.to(output.device)
            loss = step.loss_fn(output, target)
        with torch.no_grad():
            acc1 = utils.accuracy(output.detach().float(), target, topk=(1,))[0]
        loss_value, acc1_value, agreed = _batch_values(loss, acc1, args, step.stop)
        if not math.isfinite(loss_value):
            raise Diverged(epoch, batch_idx, loss_value)
        if accum > 1:
            loss = loss / accum
        if loss_scaler is not None:
            loss_scaler(loss, optimizer, clip_grad=args.clip_grad, clip_mode=args.clip_mode,
                        parameters=model.parameters(), create_graph=second_order, need_update=need_update)
        else:
            loss.backward(create_graph=second_order)
            if need_update:
                if args.clip_grad is not None:
                    utils.dispatch_clip_grad(model.parameters(), value=args.clip_grad, mode=args.clip_mode)
                optimizer.step()
    return loss_value, acc1_value, agreed


def _batch_values(loss: torch.Tensor, acc1: torch.Tensor, args: argparse.Namespace,
                  stop: Optional[StopRequest]) -> Tuple[float, float, Optional[int]]:
    """Loss and top-1 of the batch; distributed: averaged over the processes in one all-reduce that also carries
    the stop requests."""
    if not args.distributed:
        return loss.item(), acc1.item(), None
    t = torch.stack([loss.detach().float().reshape(()), acc1.float().reshape(()),
                     *loss.new_tensor(signal_flags(stop), dtype=torch.float32)])
    dist.all_reduce(t)
    loss_value, acc1_value, n_int, n_other = t.tolist()
    return loss_value / args.world_size, acc1_value / args.world_size, signal_from_flags(n_int, n_other)


def _after_update(meters: _EpochMeters, step: TrainStep, epoch: int, batch_idx: int, update_idx: int,
                  updates_per_epoch: int, last_batch: bool, bar: Any) -> None:
    """After an optimizer update: timing, the rate used, progress, recovery checkpoint, the schedule's step."""
    model, optimizer, args = step.model, step.optimizer, step.args
    meters.num_updates += 1
    optimizer.zero_grad()
    if args.synchronize_step:
        for d in {p.device for p in model.parameters() if p.device.type == 'cuda'}:
            torch.cuda.synchronize(d)
    now = time.perf_counter()
    meters.update_time.update(now - meters.t_update)
    lr = sum(g['lr'] for g in optimizer.param_groups) / len(optimizer.param_groups)
    meters.lr_sum, meters.updates = meters.lr_sum + lr, meters.updates + 1
    losses_m, top1_m = meters.losses, meters.top1
    if sys.stderr.isatty():
        bar.set_postfix(loss=f'{losses_m.avg:.3f}', top1=f'{top1_m.avg:.1f}', lr=f'{lr:.2e}')
    elif args.rank == 0 and (update_idx % args.log_interval == 0 or last_batch):
        _logger.info(f'Train: {epoch} [{update_idx:>4d}/{updates_per_epoch} '
                     f'({100. * (update_idx + 1) / updates_per_epoch:>3.0f}%)]  '
                     f'Loss: {losses_m.val:#.3g} ({losses_m.avg:#.3g})  Top-1: {top1_m.avg:.2f}  '
                     f'LR: {lr:.3e}  {meters.samples / max(now - meters.t_update, 1e-9):.1f} img/s')
    meters.t_update, meters.samples = now, 0
    if step.on_recovery is not None and args.recovery_interval and (update_idx + 1) % args.recovery_interval == 0:
        step.on_recovery(epoch, batch_idx)
    if step.lr_scheduler is not None:
        step.lr_scheduler.step_update(num_updates=meters.num_updates, metric=losses_m.avg)


def _obey_stop(stop: Optional[StopRequest], sig: Optional[int], batch_idx: int) -> None:
    """Stop after this batch when a stop was requested (on any process, when distributed)."""
    if stop is not None and sig is not None:
        stop.signum = stop.signum or sig
        stop.last_batch = batch_idx
        stop.check()


def evaluate(model: nn.Module, loader: Any, loss_fn: nn.Module, device: torch.device, *, prefetcher: bool = True,
             ten_crop: bool = False, data_config: Optional[Dict[str, Any]] = None, channels_last: bool = False,
             amp_autocast: Callable = contextlib.nullcontext, model_dtype: Optional[torch.dtype] = None,
             distributed: bool = False, world_size: int = 1, stop: Optional[StopRequest] = None,
             desc: str = 'eval') -> 'OrderedDict[str, float]':
    """Top-1, top-5 (%) and cross-entropy over a loader. ``ten_crop``: batches (B, 10, C, H, W) of uint8 crops,
    normalised here; the softmax of the ten is averaged, and the loss is -log of that average at the label.

    ``distributed``: each process evaluates its share (timm's OrderedDistributedSampler, whose padding repeats are
    left out here) and the sums are all-reduced once at the end, so the metrics are those of the whole split."""
    loss_sum, correct1, correct5, count = 0.0, 0.0, 0.0, 0
    keep = _own_share(loader) if distributed else None
    model.eval()
    if ten_crop:
        assert data_config is not None
        mean = torch.tensor([m * 255 for m in data_config['mean']], device=device).view(1, -1, 1, 1)
        std = torch.tensor([s * 255 for s in data_config['std']], device=device).view(1, -1, 1, 1)
    with torch.inference_mode():
        for input, target in _batches(_progress(loader, len(loader), desc), stop):
            if target.shape[0] == 0:
                continue
            if ten_crop:
                b, k = input.shape[:2]
                x = input.to(device).flatten(0, 1).float().sub_(mean).div_(std).to(model_dtype or torch.float32)
                target = target.to(device)
            elif not prefetcher:
                x, target = input.to(device=device, dtype=model_dtype), target.to(device)
            else:
                x = input
            x = in_model_layout(x, channels_last)
            with amp_autocast():
                output = model(x)
            if isinstance(output, (tuple, list)):
                output = output[0]
            output = output.float()
            target = target.to(output.device)
            if ten_crop:
                scores = output.softmax(-1).view(b, k, -1).mean(1)
            else:
                scores = output
            if keep is not None:
                n_keep = max(0, min(target.shape[0], keep - count))
                scores, target = scores[:n_keep], target[:n_keep]
            n = target.shape[0]
            if n:
                loss = F.nll_loss(scores.clamp_min(1e-12).log(), target) if ten_crop else loss_fn(scores, target)
                hits = scores.topk(min(5, scores.shape[1]), 1).indices.eq(target[:, None])  # as timm's accuracy
                loss_sum += loss.item() * n
                correct1 += hits[:, :1].sum().item()
                correct5 += hits.sum().item()
                count += n
            if stop is not None and not distributed:
                stop.check()
    if distributed:
        totals = torch.tensor([loss_sum, correct1, correct5, count], dtype=torch.float64, device=device)
        dist.all_reduce(totals)
        loss_sum, correct1, correct5, count = totals.tolist()
    if not count:
        return OrderedDict([('loss', math.nan), ('top1', math.nan), ('top5', math.nan), ('images', 0)])
    return OrderedDict([('loss', loss_sum / count), ('top1', 100 * correct1 / count), ('top5', 100 * correct5 / count),
                        ('images', int(count))])


def _own_share(loader: Any) -> Optional[int]:
    """How many items of a distributed evaluation loader are this process's own (not padding), when known."""
    sampler = getattr(loader, 'sampler', None)
    if isinstance(sampler, OrderedDistributedSampler):
        return len(range(sampler.rank, len(sampler.dataset), sampler.num_replicas))
    return None
