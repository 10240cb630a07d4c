"""Loading weights into a model: state_dict files, training checkpoints, safetensors, run folders.

Accepted sources:

- a plain ``state_dict`` saved with ``torch.save`` (``.pth`` / ``.pt`` / ``.bin``);
- a timm training checkpoint (or ours): a dict holding ``state_dict_ema`` / ``model_ema`` (preferred,
  as timm's ``load_checkpoint`` does), ``state_dict`` or ``model``;
- a ``.safetensors`` file;
- a run folder as timm's ``train.py`` leaves it: ``args.yaml`` (``model``, ``num_classes``,
  ``model_kwargs``, ...) and ``model_best.pth.tar`` / ``last.pth.tar`` / ``*.safetensors``
  (the best one is preferred).

Every pickle is read with ``torch.load(weights_only=True)`` (``argparse.Namespace`` allowed, as timm
stores its arguments in checkpoints); ``module.`` and ``_orig_mod.`` prefixes are stripped. A file that
does not fit the model raises :class:`UserError` naming the first mismatching key.

What a source says about its model (:class:`ModelInfo`: name, num_classes, model_kwargs, input size,
mean, std, crop fraction, interpolation, class names) comes from args.yaml and the run's class map, from a training checkpoint's
``args`` / ``arch`` / ``class_names`` / ``data_config``, or from a safetensors file's metadata (the
trainer writes ``model``, ``num_classes``, ``model_kwargs``, ``class_names``, ``data_config``).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn as nn

from . import run_files as RF
from .contracts import ST_CLASS_NAMES, ST_DATA_CONFIG, ST_GLOBAL_POOL, ST_IN_CHANS, ST_MODEL, ST_NUM_CLASSES, header_model_kwargs
from .errors import UserError

__all__ = ['Checkpoint', 'ModelInfo', 'RunInfo', 'find_run_checkpoint', 'load_checkpoint_file', 'load_into', 'read_checkpoint',
           'read_run', 'read_training_checkpoint', 'sha256_file', 'state_dict_kwargs', 'state_dict_num_classes']

_PREFIXES = ('module.', '_orig_mod.')
_STATE_KEYS = ('state_dict_ema', 'model_ema', 'state_dict', 'model')
_BEST = (RF.BEST, RF.BEST_WEIGHTS, 'best.pth.tar', 'best.safetensors', 'model_best.pth')   # ours, then others'
_LAST = (RF.LAST, RF.LAST_WEIGHTS, 'last.pth')
_CLASS_FILES = (RF.CLASS_MAP, 'class_map.json', 'classes.txt', 'classes.json', 'class_names.json')


@dataclass
class ModelInfo:
    """What a run folder or a checkpoint says about the model it holds (None / empty where it says nothing)."""
    model: Optional[str] = None
    num_classes: Optional[int] = None
    model_kwargs: Dict[str, Any] = field(default_factory=dict)
    input_size: Optional[Tuple[int, ...]] = None
    mean: Optional[Tuple[float, ...]] = None
    std: Optional[Tuple[float, ...]] = None
    crop_pct: Optional[float] = None
    interpolation: Optional[str] = None
    class_names: Optional[List[str]] = None

    def data_args(self) -> Dict[str, Any]:
        """What is known of the preprocessing, as arguments for ``timm.data.resolve_data_config``."""
        known = dict(input_size=self.input_size, mean=self.mean, std=self.std, crop_pct=self.crop_pct,
                     interpolation=self.interpolation)
        return {k: v for k, v in known.items() if v is not None}

    def merged(self, other: 'ModelInfo') -> 'ModelInfo':
        """Fields of ``self``, with ``other`` filling what ``self`` leaves unsaid."""
        pick = {f: getattr(self, f) if getattr(self, f) is not None else getattr(other, f)
                for f in ('model', 'num_classes', 'input_size', 'mean', 'std', 'crop_pct', 'interpolation', 'class_names')}
        return ModelInfo(model_kwargs={**other.model_kwargs, **self.model_kwargs}, **pick)


@dataclass
class RunInfo(ModelInfo):
    """A run folder: what it says about the model, and its best checkpoint."""
    run_dir: Optional[Path] = None
    checkpoint: Optional[Path] = None


@dataclass
class Checkpoint:
    """A loaded checkpoint: its state_dict, where in the file it was, and what the file says about the model."""
    path: Path
    state_dict: Dict[str, torch.Tensor]
    source: str
    info: ModelInfo = field(default_factory=ModelInfo)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(chunk), b''):
            h.update(block)
    return h.hexdigest()


def _strip_prefixes(sd: Dict[str, Any]) -> Dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        while k.startswith(_PREFIXES):
            k = k[len(next(p for p in _PREFIXES if k.startswith(p))):]
        out[k] = v
    return out


def _torch_load(path: Path) -> Any:
    """``torch.load(weights_only=True)``; a file it cannot read, whatever the reason, is a one-line UserError."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as e:
        try:
            unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
        except Exception:  # not a zip checkpoint at all
            unsafe = []
        if unsafe:
            raise UserError(f'{path}: refused: loading it would need {", ".join(unsafe[:3])}, which weights_only=True '
                            'does not allow; save the model\'s state_dict (or use safetensors) instead') from e
        raise UserError(f'{path}: not a readable PyTorch checkpoint; is the file complete and saved with torch.save?') from e
    except MemoryError:
        raise
    except Exception as e:  # a text file, a truncated zip, another format: pickle, zip and torch raise many kinds
        raise UserError(f'{path}: not a readable PyTorch checkpoint ({type(e).__name__}); '
                        'is the file complete and saved with torch.save?') from e


def read_training_checkpoint(path: Path) -> Dict[str, Any]:
    """A checkpoint of this trainer (or timm's train.py) to resume from, loaded with weights_only=True: a dict with
    ``state_dict``. A missing, unreadable or foreign file is a one-line UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f'checkpoint {path} not found' if not path.exists() else f'checkpoint {path} is not a file')
    obj = _torch_load(path)
    if not isinstance(obj, dict) or not isinstance(obj.get('state_dict'), dict):
        raise UserError(f'{path} is not a training checkpoint (no state_dict to resume from); '
                        'resume from a run\'s last.pth.tar or recovery.pth.tar')
    return obj


def read_checkpoint(path: Path, use_ema: bool = True) -> Checkpoint:
    """Load the state_dict in ``path`` (EMA weights first when ``use_ema``) and what the file says about its model."""
    path = Path(path)
    if not path.exists():
        raise UserError(f'checkpoint {path} does not exist; give the path of a .pth/.pth.tar/.safetensors file')
    if path.is_dir():
        raise UserError(f'checkpoint {path} is a folder; use --run {path} for a training run folder')
    if path.suffix == '.safetensors':
        from safetensors import SafetensorError, safe_open
        from safetensors.torch import load_file
        try:
            sd = load_file(str(path), device='cpu')
            with safe_open(str(path), 'pt') as f:
                meta = f.metadata() or {}
        except (SafetensorError, OSError, ValueError) as e:
            raise UserError(f'{path}: not a readable safetensors file ({e}); is the file complete?') from e
        return Checkpoint(path, _strip_prefixes(sd), 'safetensors', _info_from_metadata(meta))
    obj = _torch_load(path)
    source, info = 'plain state_dict', ModelInfo()
    if isinstance(obj, dict):
        keys = [k for k in _STATE_KEYS if isinstance(obj.get(k), dict) and (use_ema or 'ema' not in k)]
        if keys:
            info = _info_from_training_checkpoint(obj)
            source, obj = keys[0], obj[keys[0]]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f'{path}: holds no state_dict (a dict of tensors, or a checkpoint with one under '
                        f'{" / ".join(_STATE_KEYS)})')
    return Checkpoint(path, _strip_prefixes(obj), source, info)


def load_checkpoint_file(path: Path, use_ema: bool = True) -> Tuple[Dict[str, torch.Tensor], str]:
    """The state_dict in ``path`` and where it came from ('state_dict', 'state_dict_ema', 'safetensors', ...)."""
    ckpt = read_checkpoint(path, use_ema)
    return ckpt.state_dict, ckpt.source


def state_dict_num_classes(sd: Dict[str, torch.Tensor]) -> Optional[int]:
    """Classifier outputs of an AlexNetSplit state_dict (0 when it has no fc8), None if it is not one."""
    if 'fc8.weight' in sd:
        return int(sd['fc8.weight'].shape[0])
    return 0 if 'pre_logits.fc7.weight' in sd else None


def state_dict_kwargs(sd: Dict[str, torch.Tensor]) -> Dict[str, Any]:
    """Model options an AlexNetSplit state_dict fixes by its keys and shapes: num_towers (towers.N), num_classes (fc8),
    global_pool (fc6's input), and fc_width (fc6's output) and in_chans (conv1's input) where they are not the
    defaults."""
    from .model import PAPER_FC, PAPER_WIDTHS
    out: Dict[str, Any] = {}
    num_classes = state_dict_num_classes(sd)
    if num_classes is not None:
        out['num_classes'] = num_classes
    fc6 = sd.get('pre_logits.fc6.weight')
    if fc6 is not None and fc6.dim() == 2:
        out['global_pool'] = 'avg' if fc6.shape[1] == PAPER_WIDTHS[-1] else ''
        if fc6.shape[0] != PAPER_FC:
            out['fc_width'] = int(fc6.shape[0])
    towers = {k.split('.')[1] for k in sd if k.startswith('towers.') and k.endswith('.conv1.weight')}
    if towers:
        out['num_towers'] = len(towers)
    conv1 = sd.get('towers.0.conv1.weight')
    if conv1 is not None and conv1.dim() == 4 and conv1.shape[1] != 3:
        out['in_chans'] = int(conv1.shape[1])
    return out


def load_into(model: nn.Module, sd: Dict[str, torch.Tensor], name: str = 'the model', source: str = 'checkpoint') -> None:
    """Copy ``sd`` into ``model`` strictly; any missing / unexpected key or shape raises UserError naming the first."""
    own = model.state_dict()
    unexpected = [k for k in sd if k not in own]
    missing = [k for k in own if k not in sd]
    shapes = [k for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    hint = 'is it a checkpoint of another model (or other --num-classes / model options)?'
    if unexpected or missing:
        first, what = (unexpected[0], 'unexpected key') if unexpected else (missing[0], 'missing key')
        n = len(unexpected) + len(missing)
        more = f' (and {n - 1} more mismatching keys)' if n > 1 else ''
        raise UserError(f'{source} does not fit {name}: {what} {first!r}{more}; {hint}')
    if shapes:
        k = shapes[0]
        raise UserError(f'{source} does not fit {name}: {k!r} has shape {tuple(sd[k].shape)}, the model expects '
                        f'{tuple(own[k].shape)}; {hint}')
    model.load_state_dict(sd, strict=True)


def find_run_checkpoint(run_dir: Path) -> Path:
    """The checkpoint of a run folder: model_best first, then last, then the newest checkpoint-N / safetensors."""
    for name in _BEST + _LAST:
        if (run_dir / name).is_file():
            return run_dir / name
    numbered = sorted(run_dir.glob(RF.NUMBERED_GLOB),
                      key=lambda p: int(m.group(1)) if (m := re.search(r'-(\d+)\.pth\.tar$', p.name)) else -1)
    if numbered:
        return numbered[-1]
    st = sorted(run_dir.glob('*.safetensors'), key=lambda p: ('best' in p.name, p.stat().st_mtime))
    if st:
        return st[-1]
    raise UserError(f'run folder {run_dir} holds no checkpoint (model_best.pth.tar, last.pth.tar or *.safetensors)')


def _read_class_names(path: Path) -> Optional[List[str]]:
    """Class names, in index order, from a timm class map (.txt: a name per line) or JSON (list or dict)."""
    try:
        text = path.read_text(encoding='utf-8')
    except (OSError, UnicodeDecodeError):
        return None
    if path.suffix != '.json':
        names = [line.strip() for line in text.splitlines() if line.strip()]
        return names or None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return None
    if isinstance(data, list) and all(isinstance(x, str) for x in data):
        return data or None
    if isinstance(data, dict) and data:
        if all(isinstance(v, int) for v in data.values()):  # name -> index
            return [k for k, _ in sorted(data.items(), key=lambda kv: kv[1])]
        try:  # index -> name
            return [str(v) for _, v in sorted(((int(k), v) for k, v in data.items()))]
        except ValueError:
            return None
    return None


def _tuple(v: Any) -> Optional[tuple]:
    return tuple(v) if isinstance(v, (list, tuple)) and v else None


def _info_from_args(args: Dict[str, Any], where: str) -> ModelInfo:
    """ModelInfo from timm train.py arguments (args.yaml, or a checkpoint's ``args``)."""
    kw = args.get('model_kwargs') or {}
    if not isinstance(kw, dict):
        raise UserError(f'{where}: model_kwargs must be a mapping')
    kw = dict(kw)
    if args.get('in_chans'):
        kw.setdefault('in_chans', int(args['in_chans']))
    if args.get('gp'):
        kw.setdefault('global_pool', args['gp'])
    size = _tuple(args.get('input_size'))
    if size is None and args.get('img_size'):
        img = args['img_size']
        h, w = (img, img) if isinstance(img, int) else tuple(img)[-2:]
        size = (int(kw.get('in_chans', 3)), int(h), int(w))
    num_classes = args.get('num_classes')
    crop_pct = args.get('crop_pct')
    return ModelInfo(model=args.get('model') or None, num_classes=int(num_classes) if num_classes is not None else None,
                     model_kwargs=kw, input_size=tuple(int(s) for s in size) if size else None,
                     mean=_tuple(args.get('mean')), std=_tuple(args.get('std')),
                     crop_pct=float(crop_pct) if crop_pct else None, interpolation=args.get('interpolation') or None)


def _with_data_config(info: ModelInfo, data_config: Any) -> ModelInfo:
    """The resolved data config (input_size, mean, std, crop_pct, interpolation) the model was trained with, over
    the arguments."""
    if isinstance(data_config, dict):
        info.input_size = _tuple(data_config.get('input_size')) or info.input_size
        info.mean = _tuple(data_config.get('mean')) or info.mean
        info.std = _tuple(data_config.get('std')) or info.std
        if isinstance(data_config.get('crop_pct'), (int, float)):
            info.crop_pct = float(data_config['crop_pct'])
        if isinstance(data_config.get('interpolation'), str):
            info.interpolation = data_config['interpolation']
    return info


def _names(v: Any) -> Optional[List[str]]:
    return [str(c) for c in v] if isinstance(v, (list, tuple)) and v else None


def _info_from_training_checkpoint(obj: Dict[str, Any]) -> ModelInfo:
    args = obj.get('args')
    args = vars(args) if isinstance(args, argparse.Namespace) else args if isinstance(args, dict) else {}
    try:
        info = _info_from_args(args, 'checkpoint args')
    except (UserError, TypeError, ValueError):
        info = ModelInfo()
    if not info.model and isinstance(obj.get('arch'), str):
        info.model = obj['arch']
    info.class_names = _names(obj.get('class_names'))
    return _with_data_config(info, obj.get('data_config'))


def _info_from_metadata(meta: Dict[str, str]) -> ModelInfo:
    """ModelInfo from a safetensors header (contracts.ST_*: as the trainer and the importer write it, also the
    importer's older ``model_args``); unparsable entries are ignored."""
    def load(key: str) -> Any:
        try:
            return json.loads(meta[key]) if key in meta else None
        except json.JSONDecodeError:
            return None
    kw, kw_classes = header_model_kwargs(meta)
    kw = kw or {}
    gp, in_chans = load(ST_GLOBAL_POOL), load(ST_IN_CHANS)  # the trainer writes these beside model_kwargs, as its args
    if isinstance(gp, str) and gp:
        kw.setdefault('global_pool', gp)
    if isinstance(in_chans, int) and in_chans > 0:
        kw.setdefault('in_chans', in_chans)
    num_classes = meta.get(ST_NUM_CLASSES, '')
    info = ModelInfo(model=meta.get(ST_MODEL) or None,
                     num_classes=int(num_classes) if num_classes.isdigit() else kw_classes,
                     model_kwargs=kw, class_names=_names(load(ST_CLASS_NAMES)))
    return _with_data_config(info, load(ST_DATA_CONFIG))


def read_run(run_dir: Path) -> RunInfo:
    """Model name, options, preprocessing, class names and best checkpoint of a timm-style run folder."""
    import yaml
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f'run folder {run_dir} does not exist; give the folder that holds args.yaml and the checkpoints')
    args_path = run_dir / RF.ARGS
    args: Dict[str, Any] = {}
    if args_path.is_file():
        try:
            args = yaml.safe_load(args_path.read_text(encoding='utf-8')) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise UserError(f'{args_path}: not valid YAML ({type(e).__name__}); fix or remove it') from e
        if not isinstance(args, dict):
            raise UserError(f'{args_path}: expected a mapping of train.py arguments')
    try:
        info = _info_from_args(args, str(args_path))
    except (TypeError, ValueError) as e:
        raise UserError(f'{args_path}: unreadable model arguments ({e})') from e
    run = RunInfo(**vars(info), run_dir=run_dir, checkpoint=find_run_checkpoint(run_dir))
    candidates = []
    if args.get('class_map'):
        p = Path(args['class_map'])
        candidates += [p] if p.is_absolute() else [run_dir / p, p]
    candidates += [run_dir / n for n in _CLASS_FILES]
    for p in candidates:
        if p.is_file() and (names := _read_class_names(p)):
            run.class_names = names
            break
    return run
