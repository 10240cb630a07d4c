"""A training run as named phases: options, devices, data and model, loaders, optimizer, schedule, run folder, epochs.

Each phase reads and fills one ``Run`` (the run's shared state). Nothing is written to disk before every phase that
can refuse the options has accepted them (the run folder is made after the schedule is built).
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import math
import signal
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
import yaml
from timm import utils
from timm.data import resolve_data_config
from timm.models import safe_model_name
from timm.optim import create_optimizer_v2, optimizer_kwargs
from torch.nn.parallel import DistributedDataParallel

from .. import contracts as C
from .. import run_files as RF
from ..checkpoint import load_into, read_training_checkpoint
from ..errors import UserError
from ..model import MIN_INPUT_SIZE, AlexNetSplit
from .checkpoints import RunSaver, restore_rng, restore_scheduler, rng_state, weights_digest
from .collectives import PeerLost, agreed_signal, broadcast_from_primary, gather_objects, is_comm_failure, peer_lost_message
from .curves import plot_curves
from .data import UNREADABLE, SkipUnreadable, build_datasets, skip_counts
from .devices import create_train_model, init_device, model_parallel_devices, model_parallel_kind
from .loaders import FirstBatchAgain, build_loaders, check_batches, leave_stop_signals_to_main, shut_down_workers
from .logs import logging_to
from .loop import Diverged, TrainStep, evaluate, train_one_epoch
from .options import args_dict, check_args, parse_args, plain
from .parts import build_pca, build_scheduler, loss_fns, metric_value, plateau_metric_name
from .rundir import conv1_kernels, new_run_dir, save_npy, trim_summary, write_text
from .stops import Interrupted, StopRequest

__all__ = ['Run', 'main', 'checkpoint_state', 'weights_metadata', 'save_recovery']

_logger = logging.getLogger('timm_alexnet_split.train')


@dataclass
class Run:
    """The state the phases of one run share, filled phase by phase (None until its phase has run)."""
    argv: List[str]
    attach_log: Callable[[Path], None]
    stop: StopRequest
    args: Optional[argparse.Namespace] = None  # the options (parse_args), then as resolved by the phases
    ckpt: Optional[Dict[str, Any]] = None  # the checkpoint resumed from, until the epochs start
    device: Any = None
    mp_devices: Optional[List[torch.device]] = None
    primary: bool = True
    model_dtype: Optional[torch.dtype] = None
    amp_autocast: Callable = contextlib.nullcontext
    loss_scaler: Any = None
    train_ds: Any = None
    eval_ds: Any = None
    class_names: Optional[List[str]] = None
    model: Any = None
    train_model: Any = None  # compiled and/or DDP-wrapped
    eval_model: Any = None
    data_config: Any = None
    loader_train: Any = None
    loader_eval: Any = None
    pca: Optional[Callable] = None
    train_loss_fn: Any = None
    eval_loss_fn: Any = None
    optimizer: Any = None
    lr_scheduler: Any = None
    num_epochs: int = 0
    start_epoch: int = 0
    plateau_metric: Optional[str] = None
    run_dir: Optional[Path] = None
    skip_log: Optional[Path] = None
    saver: Optional[RunSaver] = None
    save_conv1: bool = False
    step: Optional[TrainStep] = None  # what every training step uses (the epochs)
    epoch: int = 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``timm-alexnet-split train``: returns 0, or 128 + signal number after SIGINT/SIGTERM (checkpoint saved)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    failed = False
    with logging_to() as attach_log, StopRequest() as stop:
        r = Run(argv, attach_log, stop)
        try:
            return _run(r)
        except PeerLost as e:
            failed = True
            _logger.error(e.message)
            return 1
        except RuntimeError as e:
            if not is_comm_failure(e):
                raise
            failed = True
            _logger.error(peer_lost_message(e))
            return 1
        finally:
            shut_down_workers(r.loader_train, r.loader_eval)
            if dist.is_available() and dist.is_initialized() and not failed:
                dist.destroy_process_group()


def _run(r: Run) -> int:
    _read_options(r)
    _set_up_devices(r)
    _set_up_precision(r)
    _build_data_and_model(r)
    _build_loaders(r)
    _build_optimizer(r)
    _resume_weights(r)
    _wrap_model(r)
    if not _build_schedule(r):
        return 0
    _open_run_folder(r)
    _write_run_files(r)
    if r.ckpt is not None and r.ckpt.get('complete', True):  # last: everything above may draw random numbers
        restore_rng(r.ckpt, r.args, r.start_epoch)
    r.ckpt = None  # free the loaded tensors
    code = _train_epochs(r)
    if code == 0:
        _report_end(r)
    return code


# ---------------------------------------------------------------------------------------------------------------------
# phases before the run folder: each may refuse the options
# ---------------------------------------------------------------------------------------------------------------------
def _read_options(r: Run) -> None:
    """The options; with --resume, the checkpoint's options as defaults; --device-modules imported."""
    r.args = parse_args(r.argv)
    if r.args.resume:
        r.ckpt = read_training_checkpoint(Path(r.args.resume))
        saved = r.ckpt.get('args')
        r.args = parse_args(r.argv, resume_args=saved if isinstance(saved, dict) else None)
    for mod in r.args.device_modules or []:
        try:
            importlib.import_module(mod)
        except ImportError as e:
            raise UserError(f'--device-modules {mod}: {e}') from None


def _set_up_devices(r: Run) -> None:
    """This process's device (and the process group), the options checked, the towers' devices."""
    args = r.args
    args.prefetcher = not args.no_prefetcher
    model_parallel_kind(args)
    r.device = init_device(args)
    check_args(args)
    r.mp_devices = model_parallel_devices(args)
    if r.mp_devices is not None:  # inputs, the head, loss and metrics on the first of this process's devices
        r.device = r.mp_devices[0]
        if r.device.type == 'cuda':
            torch.cuda.set_device(r.device)
        args.device = str(r.device)
    r.primary = utils.is_primary(args)
    if not r.primary:
        _logger.setLevel(logging.WARNING)  # one process tells the story


def _set_up_precision(r: Run) -> None:
    """Model dtype, autocast and loss scaler; the seeds."""
    args = r.args
    r.model_dtype = getattr(torch, args.model_dtype) if args.model_dtype else None
    if args.amp:
        amp_dtype = torch.bfloat16 if args.amp_dtype == 'bfloat16' else torch.float16
        r.amp_autocast = partial(torch.autocast, device_type=r.device.type, dtype=amp_dtype)
        if r.device.type == 'cuda' and amp_dtype == torch.float16:
            r.loss_scaler = utils.NativeScaler(device=r.device.type)
    utils.random_seed(args.seed, args.rank)


def _build_data_and_model(r: Run) -> None:
    """The datasets, then the model for their classes, and the data config it resolves to (checked)."""
    args = r.args
    r.train_ds, r.eval_ds, r.class_names = build_datasets(args)
    if args.num_classes is None and r.class_names:
        args.num_classes = len(r.class_names)
        _logger.info(f'num_classes {args.num_classes} (the training set\'s classes)')
    r.model = create_train_model(args, r.device, r.model_dtype)
    if args.num_classes is None:
        args.num_classes = getattr(r.model, 'num_classes', None)
    if r.class_names and args.num_classes is not None and len(r.class_names) > args.num_classes:
        raise UserError(f'the training data has {len(r.class_names)} classes but the model {args.num_classes} outputs '
                        '(--num-classes)')
    r.data_config = resolve_data_config(vars(args), model=r.model, verbose=False)
    if isinstance(r.model, AlexNetSplit) and min(r.data_config['input_size'][1:]) < MIN_INPUT_SIZE:
        raise UserError(f'input size {tuple(r.data_config["input_size"])} is too small: the split AlexNet needs at least '
                        f'{MIN_INPUT_SIZE} pixels (--img-size)')
    if args.grad_checkpointing:
        r.model.set_grad_checkpointing(enable=True)
    if args.channels_last:
        r.model.to(memory_format=torch.channels_last)


def _build_loaders(r: Run) -> None:
    """Unreadable images skipped (map-style datasets), the loaders, PCA lighting."""
    args = r.args
    if not isinstance(r.train_ds, torch.utils.data.IterableDataset):
        r.train_ds = SkipUnreadable(r.train_ds, args.train_split)
    if r.eval_ds is not None and not isinstance(r.eval_ds, torch.utils.data.IterableDataset):
        r.eval_ds = SkipUnreadable(r.eval_ds, args.val_split, substitute=False)
    r.loader_train, r.loader_eval = build_loaders(args, r.data_config, r.device, r.train_ds, r.eval_ds,
                                                  r.model_dtype or torch.float32)
    leave_stop_signals_to_main(r.loader_train)
    leave_stop_signals_to_main(r.loader_eval)
    check_batches(r.loader_train, r.train_ds, args)
    if args.synthetic_input:
        r.loader_train = FirstBatchAgain(r.loader_train, r.device)
        _logger.warning('WARNING: --synthetic-input: every training step sees the first batch again (a speed '
                        'measurement): this run\'s losses and accuracies mean nothing')
    r.pca = build_pca(args, r.data_config) if not args.no_aug else None


def _build_optimizer(r: Run) -> None:
    """The learning rate (from --lr-base when --lr is not given), the loss functions and the optimizer."""
    args = r.args
    if not args.lr:
        global_batch = args.batch_size * args.world_size * args.grad_accum_steps
        ratio = global_batch / args.lr_base_size
        if not args.lr_base_scale:
            args.lr_base_scale = 'sqrt' if any(o in args.opt.lower() for o in ('ada', 'lamb')) else 'linear'
        args.lr = args.lr_base * (ratio ** 0.5 if args.lr_base_scale == 'sqrt' else ratio)
        _logger.info(f'lr {args.lr:g} from --lr-base {args.lr_base} for a global batch of {global_batch}')
    r.train_loss_fn, r.eval_loss_fn = loss_fns(args, r.device)
    try:
        r.optimizer = create_optimizer_v2(r.model, **optimizer_kwargs(cfg=args), **args.opt_kwargs)
    except (AssertionError, ValueError, TypeError) as e:
        raise UserError(f'--opt {args.opt}: {e}') from None


def _resume_weights(r: Run) -> None:
    """With --resume: the weights, the optimizer and loss-scaler states, and the next epoch."""
    if r.ckpt is None:
        return
    args, ckpt = r.args, r.ckpt
    load_into(r.model, ckpt['state_dict'], f'{args.model} with these options', args.resume)
    if not args.no_resume_opt and ckpt.get('optimizer') is not None:
        r.optimizer.load_state_dict(ckpt['optimizer'])
        if r.loss_scaler is not None and r.loss_scaler.state_dict_key in ckpt:
            r.loss_scaler.load_state_dict(ckpt[r.loss_scaler.state_dict_key])
    r.start_epoch = int(ckpt['epoch']) + (1 if ckpt.get('complete', True) else 0)
    _logger.info(f'resumed from {args.resume}: epoch {r.start_epoch} next')


def _wrap_model(r: Run) -> None:
    """torch.compile and DistributedDataParallel around the model, when asked."""
    args = r.args
    r.train_model = r.model
    if args.torchcompile:
        r.train_model = torch.compile(r.model, backend=args.torchcompile, mode=args.torchcompile_mode)
    if args.distributed:
        ddp_kwargs = {'broadcast_buffers': False} if args.no_ddp_bb else {}
        # device_ids only for a model on one GPU: None on CPU (gloo) and for towers on several devices
        one_gpu = r.device.type == 'cuda' and r.mp_devices is None
        r.train_model = DistributedDataParallel(r.train_model, device_ids=[r.device] if one_gpu else None, **ddp_kwargs)
    r.eval_model = r.train_model.module if args.distributed else r.train_model


def _build_schedule(r: Run) -> bool:
    """The schedule, at the start epoch; False when a resumed run is already complete (nothing to do)."""
    args = r.args
    updates_per_epoch = (len(r.loader_train) + args.grad_accum_steps - 1) // args.grad_accum_steps
    r.lr_scheduler, r.num_epochs = build_scheduler(args, r.optimizer, updates_per_epoch, r.loader_eval is not None)
    restore_scheduler(r.lr_scheduler, r.ckpt)
    if args.start_epoch is not None:
        r.start_epoch = args.start_epoch
    if r.lr_scheduler is not None and r.start_epoch > 0:
        if args.sched_on_updates:
            r.lr_scheduler.step_update(r.start_epoch * updates_per_epoch)
        else:
            r.lr_scheduler.step(r.start_epoch)
    if args.sched == 'plateau':
        r.plateau_metric = plateau_metric_name(args, r.loader_eval is not None)
    if r.ckpt is not None and r.start_epoch >= r.num_epochs:
        _logger.info(f'{args.resume}: the run is complete (epochs 0..{r.start_epoch - 1} trained, the schedule has '
                     f'{r.num_epochs}); nothing to do. To train on, resume with --epochs N, N > {r.start_epoch}')
        return False
    return True


# ---------------------------------------------------------------------------------------------------------------------
# the run folder
# ---------------------------------------------------------------------------------------------------------------------
def _run_folder(r: Run) -> Path:
    """The resumed run's folder, or a new one named by process 0 (and told to the others)."""
    args = r.args
    if r.ckpt is not None:
        return Path(args.resume).resolve().parent
    name = args.experiment or '-'.join([datetime.now().strftime('%Y%m%d-%H%M%S'), safe_model_name(args.model),
                                        str(r.data_config['input_size'][-1])])
    run_dir = new_run_dir(Path(args.output or './output/train'), name) if r.primary else None
    if args.distributed:  # rank 0 names (and makes) the folder; the others learn its name
        run_dir = Path(broadcast_from_primary(str(run_dir) if r.primary else None))
    assert run_dir is not None
    return run_dir


def _open_run_folder(r: Run) -> None:
    """The run folder made (once everything that can refuse the options has accepted them), log.txt, the skip log,
    the checkpoint saver."""
    args, device = r.args, r.device
    r.run_dir = run_dir = _run_folder(r)
    if r.primary:
        r.attach_log(run_dir)
        placed = f' (towers on {", ".join(str(t.device) for t in r.model.towers)})' if r.mp_devices is not None else ''
        world = f'; {args.world_size} processes ({args.dist_backend or ("nccl" if device.type == "cuda" else "gloo")})' \
            if args.distributed else ''
        _logger.info(f'run folder {run_dir}; device {device}{placed}{world}; model {args.model} '
                     f'({sum(p.numel() for p in r.model.parameters()):,} parameters)')
    # every process records its unreadable images in the run folder when it can see it (same machine or shared disk)
    r.skip_log = run_dir / 'skipped_images.txt' if r.primary or run_dir.is_dir() else None
    for ds in (r.train_ds, r.eval_ds):
        if isinstance(ds, SkipUnreadable):
            ds.log_path = str(r.skip_log) if r.skip_log else None
    # without validation there is no metric: no model_best, no ranked history
    r.saver = RunSaver(run_dir, decreasing=args.eval_metric == 'loss', max_history=args.checkpoint_hist,
                       safetensors=args.safetensors)
    if r.ckpt is not None and isinstance(r.ckpt.get('saver'), dict):
        r.saver.load_state_dict(r.ckpt['saver'])


def _write_run_files(r: Run) -> None:
    """Process 0: args.yaml (or args-resume-epochN.yaml), class_map.txt, conv1/towers.json and epoch_0000.npy; the
    summary rows of the epochs a resume repeats dropped."""
    r.save_conv1 = r.args.save_conv1
    if not r.primary:
        return
    run_dir = r.run_dir
    yaml_name = RF.ARGS if r.ckpt is None else RF.args_resume(r.start_epoch)
    write_text(run_dir / yaml_name, yaml.safe_dump(args_dict(r.args), default_flow_style=False, sort_keys=False))
    if r.class_names:
        write_text(run_dir / RF.CLASS_MAP, ''.join(f'{c}\n' for c in r.class_names))
    if r.save_conv1:
        _start_conv1_snapshots(r)
    trim_summary(run_dir / RF.SUMMARY, r.start_epoch)


def _start_conv1_snapshots(r: Run) -> None:
    try:
        k, per_tower = conv1_kernels(r.model)
    except (ValueError, AttributeError) as e:
        _logger.warning(f'conv1 snapshots off: {e}')
        r.save_conv1 = False
        return
    conv1_dir = r.run_dir / RF.CONV1
    conv1_dir.mkdir(exist_ok=True)
    towers = {'num_towers': len(per_tower), 'kernels_per_tower': per_tower,
              'channel_order': 'RGB' if k.shape[1] == 3 else 'L'}
    write_text(conv1_dir / RF.TOWERS, json.dumps(towers) + '\n')
    if r.start_epoch == 0:
        save_npy(RF.snapshot_path(r.run_dir, 0), k)


# ---------------------------------------------------------------------------------------------------------------------
# what a checkpoint holds
# ---------------------------------------------------------------------------------------------------------------------
def checkpoint_state(r: Run, epoch: int, metric: Optional[float], complete: bool = True, batch_idx: Optional[int] = None,
                     rng_ranks: Optional[List[Any]] = None) -> Dict[str, Any]:
    """A .pth.tar checkpoint: weights, optimizer, schedule, options, data config, classes, generators."""
    args = r.args
    s: Dict[str, Any] = {
        'epoch': epoch, 'arch': args.model, 'version': 2, 'complete': complete,
        'state_dict': utils.get_state_dict(r.train_model, utils.unwrap_model),
        'optimizer': r.optimizer.state_dict(),
        'scheduler': plain(r.lr_scheduler.state_dict()) if r.lr_scheduler is not None else None,
        'args': args_dict(args), 'data_config': plain(dict(r.data_config)), 'class_names': r.class_names,
        'metric': metric, 'rng': rng_state(), 'world_size': args.world_size,
    }
    if rng_ranks is not None:
        s['rng_ranks'] = rng_ranks  # every process's generators, for an exact resume with as many processes
    if batch_idx is not None:
        s['batch_idx'] = batch_idx
    if r.loss_scaler is not None:
        s[r.loss_scaler.state_dict_key] = r.loss_scaler.state_dict()
    return s


def weights_metadata(r: Run, epoch: int) -> Dict[str, str]:
    """The safetensors header of last/model_best.safetensors."""
    args = r.args
    return {C.ST_FORMAT: 'pt', C.ST_MODEL: args.model, C.ST_NUM_CLASSES: str(args.num_classes), C.ST_EPOCH: str(epoch),
            C.ST_MODEL_KWARGS: json.dumps(plain(args.model_kwargs)), C.ST_CLASS_NAMES: json.dumps(r.class_names or []),
            C.ST_DATA_CONFIG: json.dumps(plain(dict(r.data_config))),
            C.ST_GLOBAL_POOL: json.dumps(getattr(args, 'gp', None)),
            C.ST_IN_CHANS: json.dumps(getattr(args, 'in_chans', None))}


def save_recovery(r: Run, epoch: int, batch_idx: int) -> Path:
    """recovery.pth.tar: the weights after ``batch_idx`` of ``epoch`` (an incomplete epoch)."""
    return r.saver.save_recovery(checkpoint_state(r, epoch, None, complete=False, batch_idx=batch_idx))


# ---------------------------------------------------------------------------------------------------------------------
# the epochs
# ---------------------------------------------------------------------------------------------------------------------
def _train_epochs(r: Run) -> int:
    """Every epoch from the start epoch; 0, or 128 + signal number when stopped. A diverged loss, images that cannot
    be read and a lost peer end in one line."""
    args = r.args
    _logger.info(f'training epochs {r.start_epoch}..{r.num_epochs - 1}; {len(r.loader_train)} batches of '
                 f'{args.batch_size}; lr {args.lr:g} '
                 f'({args.sched}{", watching " + r.plateau_metric if r.plateau_metric else ""})')
    skipped_seen = skip_counts(r.skip_log)[0]
    r.step = _train_step_of(r)
    r.epoch = r.start_epoch
    try:
        for epoch in range(r.start_epoch, r.num_epochs):
            r.epoch = epoch
            skipped_seen = _one_epoch(r, epoch, skipped_seen)
            sig = agreed_signal(r.stop, args, r.device)
            if sig is not None:
                r.stop.signum = r.stop.signum or sig
                r.stop.check()
    except Interrupted as e:
        return _stopped(r, e.signum)
    except Diverged as e:
        good = f'the last good checkpoint {r.saver.last} is intact' if r.saver.last.is_file() else 'no checkpoint was written'
        raise UserError(f'loss is {e.value} at epoch {e.epoch}, batch {e.batch}: training diverged and stopped; {good} '
                        f'(lower --lr, or add --warmup-epochs)') from None
    except RuntimeError as e:
        if UNREADABLE in str(e):
            raise UserError(str(e).split('Original Traceback')[0].strip().splitlines()[-1]) from None
        if args.distributed and is_comm_failure(e):
            raise PeerLost(peer_lost_message(e, args.dist_timeout, r.saver.last)) from None
        raise
    return 0


def _train_step_of(r: Run) -> TrainStep:
    """What every training step of the run uses, once the model, optimizer, schedule and run folder exist."""
    return TrainStep(r.train_model, r.optimizer, r.train_loss_fn, r.args, r.device, lr_scheduler=r.lr_scheduler,
                     amp_autocast=r.amp_autocast, loss_scaler=r.loss_scaler, model_dtype=r.model_dtype, pca=r.pca,
                     stop=r.stop, on_recovery=partial(save_recovery, r) if r.primary else None,
                     run_dir=r.run_dir if r.primary else None)


def _one_epoch(r: Run, epoch: int, skipped_seen: int) -> int:
    """Train, validate, step the schedule, save and report one epoch; the skip count seen so far."""
    args = r.args
    t0 = time.perf_counter()
    sampler = r.loader_train.sampler
    if hasattr(sampler, 'set_epoch'):  # distributed: a new shuffle per epoch, seeded by --seed
        if hasattr(sampler, 'seed'):
            sampler.seed = args.seed
        sampler.set_epoch(epoch)
    train_m = train_one_epoch(epoch, r.loader_train, r.step)
    if args.distributed and args.dist_bn in ('broadcast', 'reduce'):
        utils.distribute_bn(r.train_model, args.world_size, args.dist_bn == 'reduce')
    eval_m = _validate_epoch(r, epoch)
    lr_used = train_m.pop('lr')
    if lr_used <= 0 and r.primary:
        _logger.warning(f'WARNING: the learning rate was 0 throughout epoch {epoch} (--sched {args.sched}, '
                        f'--epochs {args.epochs}, --min-lr {args.min_lr}): its updates did not move the weights')
    metric = metric_value('val_' + args.eval_metric, train_m, eval_m) if eval_m is not None else None
    if r.lr_scheduler is not None:
        watched = metric_value(r.plateau_metric, train_m, eval_m) if r.plateau_metric else metric
        r.lr_scheduler.step(epoch + 1, watched)
    skipped_now = skip_counts(r.skip_log)[0]
    replicas, rng_ranks = _compare_replicas(r, epoch)
    if r.primary:
        is_best = _save_epoch(r, epoch, metric, train_m, eval_m, lr_used, rng_ranks)
        ev = (f'val loss {eval_m["loss"]:.4f} top-1 {eval_m["top1"]:.2f} top-5 {eval_m["top5"]:.2f}'
              if eval_m is not None else 'no validation')
        _logger.info(f'epoch {epoch}: train loss {train_m["loss"]:.4f} top-1 {train_m["top1"]:.2f} | {ev} | '
                     f'lr {lr_used:.3g} | {time.perf_counter() - t0:.1f} s, {train_m["img_s"]:.0f} training images/s'
                     + (' | best' if is_best else '') + replicas)
        if skipped_now > skipped_seen:
            _logger.warning(f'skipped {skipped_now - skipped_seen} unreadable image(s) this epoch '
                            f'({skip_counts(r.skip_log)[1]} distinct; listed in {r.skip_log})')
    return skipped_now


def _validate_epoch(r: Run, epoch: int) -> Optional[Dict[str, float]]:
    """Validation metrics after ``epoch`` (NaN on epochs between --val-interval), None without validation data."""
    args = r.args
    if r.loader_eval is None:
        return None
    eval_m = OrderedDict([('loss', math.nan), ('top1', math.nan), ('top5', math.nan)])
    if (epoch + 1) % args.val_interval == 0 or epoch + 1 == r.num_epochs:
        try:
            eval_m = evaluate(r.eval_model, r.loader_eval, r.eval_loss_fn, r.device, prefetcher=args.prefetcher,
                              ten_crop=args.ten_crop, data_config=r.data_config, channels_last=args.channels_last,
                              amp_autocast=r.amp_autocast, model_dtype=r.model_dtype, distributed=args.distributed,
                              world_size=args.world_size, stop=r.stop, desc=f'eval {epoch}')
        except Interrupted:
            _logger.warning('validation interrupted: this epoch is saved without validation metrics')
        if eval_m.pop('images', None) == 0 and r.primary:
            _logger.warning(f'WARNING: validation after epoch {epoch} evaluated no image (all unreadable?): '
                            'no validation metrics this epoch')
    return eval_m


def _compare_replicas(r: Run, epoch: int) -> Tuple[str, Optional[List[Any]]]:
    """Distributed: every process's generators (for the checkpoint) and a check that the weights agree; the log
    line's note and the generators (None when not distributed)."""
    args = r.args
    if not args.distributed:
        return '', None
    peers = gather_objects({'rng': rng_state(), 'digest': weights_digest(utils.get_state_dict(r.train_model))},
                           args.world_size)
    digests = [p['digest'] for p in peers]
    replicas = ''
    if len(set(digests)) == 1:
        replicas = f' | weights identical on {args.world_size} processes (sha256 {digests[0][:12]})'
    elif r.primary:
        odd = [rank for rank, d in enumerate(digests) if d != digests[0]]
        _logger.warning(f'WARNING: after epoch {epoch} the weights of process(es) {odd} differ from process '
                        '0\'s: the replicas have diverged (checkpoints hold process 0\'s weights)')
    return replicas, [p['rng'] for p in peers]


def _save_epoch(r: Run, epoch: int, metric: Optional[float], train_m: Dict[str, float],
                eval_m: Optional[Dict[str, float]], lr_used: float, rng_ranks: Optional[List[Any]]) -> bool:
    """Process 0: summary.csv, the checkpoints, the conv1 snapshot and the curves; True when the epoch is the best."""
    summary = r.run_dir / RF.SUMMARY
    new = not summary.is_file() or summary.stat().st_size == 0
    if not new and 'train_img_s' not in summary.read_text(encoding='utf-8').split('\n', 1)[0].split(','):
        train_m = OrderedDict((k, v) for k, v in train_m.items() if k != 'img_s')  # a run begun before the column
    utils.update_summary(epoch, train_m, eval_m, filename=str(summary), lr=lr_used, write_header=new)
    is_best = r.saver.save(epoch, metric, checkpoint_state(r, epoch, metric, rng_ranks=rng_ranks),
                           utils.get_state_dict(r.train_model), weights_metadata(r, epoch))
    if r.save_conv1:
        save_npy(RF.snapshot_path(r.run_dir, epoch + 1), conv1_kernels(r.train_model)[0])
    plot_curves(r.run_dir, f'{r.args.model}: {r.run_dir.name}')
    return is_best


def _stopped(r: Run, signum: int) -> int:
    """After SIGINT/SIGTERM: process 0 saves what the interrupted epoch reached and says how to resume."""
    name = signal.Signals(signum).name
    batch, epoch, saver = r.stop.last_batch, r.epoch, r.saver
    if not r.primary:  # process 0 saves and tells; all processes stopped after the same batch
        _logger.info(f'process {r.args.rank}: stopped by {name}')
    elif batch is not None:
        path = save_recovery(r, epoch, batch)
        exact = (f' or --resume {saver.last} (exact, from the end of the last full epoch)'
                 if saver.last.is_file() else '')
        _logger.warning(f'stopped by {name} in epoch {epoch} after batch {batch + 1}/{len(r.loader_train)}: saved '
                        f'{path}. Resume with --resume {path} (repeats epoch {epoch} from these weights){exact}')
    elif not saver.last.is_file():
        _logger.warning(f'stopped by {name} in epoch {epoch} before any checkpoint was written: nothing to resume')
    else:
        _logger.warning(f'stopped by {name} after epoch {epoch}: {saver.last} is up to date; resume with '
                        f'--resume {saver.last}')
    return 128 + signum


def _report_end(r: Run) -> None:
    saver = r.saver
    if saver.best_metric is not None:
        _logger.info(f'best {r.args.eval_metric} {saver.best_metric:.4f} at epoch {saver.best_epoch}: {saver.best}')
    total, distinct = skip_counts(r.skip_log)
    if total and r.primary:
        _logger.warning(f'{distinct} unreadable image(s) skipped {total} time(s) in all: see {r.skip_log}')
