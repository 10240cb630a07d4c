"""ONNX export of a split AlexNet, verified with onnxruntime; the ``export`` subcommand.

The graph comes from torch.onnx's dynamo exporter (no Cast / Identity noise, one ``LRN`` node per
tower and layer), then is tidied for readers (Netron) and for the ``kernels`` tool:

- nodes are named by module (``export_tidy``), TorchScript style: ``/towers.0/conv1/Conv``, ``/towers.1/norm2/LRN``,
  ``/pre_logits/fc6/Gemm``; the two places where the towers meet, ``/conv3_input/Concat`` and
  ``/fc6_input/Concat``; tensors ``<node>_output_0``;
- every Conv / Gemm reads initializers named by its parameters (``towers.0.conv1.weight`` ...), even
  where the exporter shared or dropped equal (e.g. all-zero) tensors;
- the batch axis is dynamic; the IR version is the lowest the opset needs (onnx 1.23 would write 14,
  which onnxruntime 1.31 refuses), checked against what the installed onnxruntime loads;
- another opset (``opset``: MIN_OPSET up to the newest the installed onnxruntime loads) comes from onnx's
  version converter, helped where it has no adapter (``export_opset``: also what onnxruntime loads);
- ``metadata_props``: architecture, num_towers, conv1_nodes, channel_order, mean, std, input_size,
  lrn, package_version, and class_names / checkpoint_sha256 when known.

Verification (``export_verify``) runs the written file in onnxruntime (CUDA when torch sees a GPU, else CPU) on random
0-255 images minus the mean pixel and compares with PyTorch fp32 on the CPU. The error is
``max |onnx - torch| / max |torch|`` over the batch's logits; above ``tolerance`` (default 1e-4) the
export fails and no file is left behind.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from . import export_verify
from .atomic import replace_when_done
from .contracts import (
    ONNX_ARCHITECTURE,
    ONNX_CHANNEL_ORDER,
    ONNX_CONV1_NODES,
    ONNX_INPUT_SIZE,
    ONNX_LRN,
    ONNX_MEAN,
    ONNX_NUM_CLASSES,
    ONNX_NUM_TOWERS,
    ONNX_PACKAGE_VERSION,
    ONNX_PREPROCESSING,
    ONNX_STD,
)
from .errors import CommandParser, UserError
from .export_opset import MIN_OPSET, check_opset, convert_opset, ir_version_for, opset_of, ort_limits
from .export_tidy import tidy_graph
from .export_verify import INPUT_NAME, mean_std, random_images

__all__ = ['DEFAULT_TOLERANCE', 'MIN_OPSET', 'create_split_model', 'export_onnx', 'main', 'ort_limits']

DEFAULT_TOLERANCE = 1e-4
PROG = 'timm-alexnet-split export'


# ---- what onnxruntime accepts ------------------------------------------------------------------


# ---- model creation ------------------------------------------------------------------------------
def create_split_model(name: str, **kwargs: Any) -> nn.Module:
    """``timm.create_model(name, **kwargs)`` for a registered split AlexNet (``name[.tag]``); user mistakes as UserError.

    Other names are refused before timm sees them, so nothing (an ``hf-hub:`` config) is downloaded.
    """
    import timm

    from .model import AlexNetSplit
    names = timm.list_models('alexnet_split*')
    choices = ', '.join(names)
    base = name.split('.', 1)[0]
    if base not in names:
        if timm.is_model(name):
            raise UserError(f'{name} is not a split AlexNet; choose from {choices}')
        raise UserError(f'unknown model {name!r}; choose from {choices}')
    try:
        model = timm.create_model(name, **kwargs)
    except RuntimeError as e:
        if 'tag' not in str(e) and 'Unknown model' not in str(e):
            raise
        raise UserError(f'{name}: {str(e).rstrip(".")}; known: {", ".join(timm.list_models(base, include_tags=True))}') from e
    except (ValueError, TypeError) as e:
        raise UserError(f'cannot build {name}: {e}') from e
    assert isinstance(model, AlexNetSplit)
    return model


# ---- graph tidying ---------------------------------------------------------------------------------


def _graph_facts(proto, model: nn.Module, lrn_form: str = 'node') -> Dict[str, Any]:
    """conv1 nodes by tower, LRN nodes; RuntimeError if the export did not come out as one conv1 per tower and, for
    ``lrn_form='node'``, one LRN per tower and layer (for 'ops': none, and a Pow per LRN)."""
    import re
    graph = proto.graph
    conv1 = {}
    for n in graph.node:
        m = re.fullmatch(r'/towers\.(\d+)/conv1/Conv', n.name)
        if m and n.op_type == 'Conv' and n.input[0] == INPUT_NAME:
            conv1[int(m.group(1))] = n.name
    towers = model.num_towers
    if sorted(conv1) != list(range(towers)):
        raise RuntimeError(f'export: expected one conv1 Conv per tower reading the input ({towers}), found {sorted(conv1)}')
    lrn = [n.name for n in graph.node if n.op_type == 'LRN']
    expected = sum(1 for m in model.modules() if type(m).__name__ == 'TowerLRN')
    if lrn_form == 'ops':
        pows = sum(1 for n in graph.node if n.op_type == 'Pow')
        if lrn or pows != expected:
            raise RuntimeError(f'export: expected the {expected} LRNs as elementary ops, found {len(lrn)} LRN nodes '
                               f'and {pows} Pow nodes')
    elif len(lrn) != expected:
        raise RuntimeError(f'export: expected {expected} LRN nodes, found {len(lrn)} (was LRN decomposed?)')
    return dict(conv1_nodes=[conv1[t] for t in range(towers)], lrn_nodes=lrn, lrn_form=lrn_form)


_LRN_FORMS = {
    'node': 'one ONNX LRN node per tower and layer',
    'ops': 'elementary ops per tower and layer: x * (k + Conv1x1(x * x, banded kernel of alpha / size)) ** -beta',
}


def _lrn_meta(model: nn.Module, lrn_form: str = 'node') -> Dict[str, Any]:
    from .lrn import TowerLRN
    m = next((m for m in model.modules() if isinstance(m, TowerLRN)), None)
    if m is None:
        return {}
    return dict(size=m.size, alpha=m.onnx_alpha, beta=m.beta, k=m.k, scope=model.lrn_scope,
                convention='x / (k + alpha / size * sum of squares over size channels) ** beta (ONNX LRN)',
                onnx_form=lrn_form, written_as=_LRN_FORMS[lrn_form])


@contextlib.contextmanager
def _lrn_written_as(model: nn.Module, lrn_form: str):
    """Every TowerLRN of ``model`` exports as ``lrn_form`` inside the block, as before after it."""
    from .lrn import TowerLRN
    mods = [m for m in model.modules() if isinstance(m, TowerLRN)]
    before = [m.onnx_form for m in mods]
    for m in mods:
        m.onnx_form = lrn_form
    try:
        yield
    finally:
        for m, form in zip(mods, before):
            m.onnx_form = form


def _metadata(model: nn.Module, input_size: Sequence[int], facts: Dict[str, Any],
              extra: Optional[Dict[str, Any]]) -> Dict[str, str]:
    from . import __version__
    cfg = getattr(model, 'pretrained_cfg', None) or {}
    arch = cfg.get('architecture') or type(model).__name__
    mean, std = mean_std(model, input_size[0])
    meta: Dict[str, Any] = {
        ONNX_ARCHITECTURE: arch + (f'.{cfg["tag"]}' if cfg.get('tag') else ''),
        ONNX_NUM_TOWERS: model.num_towers,
        ONNX_NUM_CLASSES: model.num_classes,
        ONNX_CONV1_NODES: facts['conv1_nodes'],
        ONNX_CHANNEL_ORDER: {3: 'RGB', 1: 'L'}.get(input_size[0], f'{input_size[0]} channels'),
        ONNX_MEAN: list(mean),
        ONNX_STD: list(std),
        ONNX_INPUT_SIZE: list(input_size),
        ONNX_PREPROCESSING: 'input = (rgb / 255 - mean) / std, rgb in 0..255, NCHW',
        ONNX_LRN: _lrn_meta(model, facts.get('lrn_form', 'node')),
        ONNX_PACKAGE_VERSION: __version__,
    }
    meta.update({k: v for k, v in (extra or {}).items() if v is not None})
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}


# ---- verification ------------------------------------------------------------------------------------


# ---- export ------------------------------------------------------------------------------------------
def _to_onnx(model: nn.Module, x: torch.Tensor):
    """torch.onnx dynamo export at the exporter's own opset with a dynamic batch axis, quietly; returns the ModelProto."""
    out_name = 'logits' if model.num_classes else 'features'
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter('ignore')
        program = torch.onnx.export(
            model, (x,), None, dynamo=True, input_names=[INPUT_NAME], output_names=[out_name],
            dynamic_shapes=({0: 'batch'},), optimize=True, verbose=False, external_data=False)
    return program.model_proto


def _export_proto(model: nn.Module, input_size: Tuple[int, ...], batch_size: int, opset: Optional[int], lrn_form: str,
                  metadata: Optional[Dict[str, Any]]):
    """The checked, tidied ModelProto of ``model`` (eval mode, CPU) and its graph facts."""
    import onnx
    cfg = getattr(model, 'pretrained_cfg', None) or {}
    x = random_images(batch_size, input_size, *mean_std(model, input_size[0]), seed=0)
    with _lrn_written_as(model, lrn_form):
        proto = _to_onnx(model, x)
    tidy_graph(proto, model)
    if opset is not None:
        proto = convert_opset(proto, opset)
    facts = _graph_facts(proto, model, lrn_form)
    proto.ir_version = ir_version_for(proto)
    proto.graph.name = (cfg.get('architecture') or type(model).__name__)
    proto.doc_string = 'AlexNet split into towers (Krizhevsky et al. 2012); see metadata_props.'
    onnx.helper.set_model_props(proto, _metadata(model, input_size, facts, metadata))
    onnx.checker.check_model(proto, full_check=True)
    return proto, facts


def export_onnx(
        model: nn.Module,
        path,
        *,
        batch_size: int = 2,
        opset: Optional[int] = None,
        input_size: Optional[Sequence[int]] = None,
        metadata: Optional[Dict[str, Any]] = None,
        verify: bool = True,
        tolerance: float = DEFAULT_TOLERANCE,
        overwrite: bool = False,
        lrn_form: str = 'node',
) -> Dict[str, Any]:
    """Export a split AlexNet to ONNX at ``path`` (written to a temp file, checked, verified, then renamed).

    Args:
        model: an AlexNetSplit (any device; exported and compared on the CPU in fp32, eval mode).
        path: output file; its folder is created. An existing file is an error unless ``overwrite``.
        batch_size: batch of the example input (>= 2; the batch axis is dynamic in the file).
        opset: ai.onnx opset (default: the exporter's); must be one onnxruntime loads.
        input_size: (C, H, W); default the model's pretrained_cfg input size.
        metadata: extra metadata_props (class_names, checkpoint_sha256...); non-strings stored as JSON.
        verify: run the file in onnxruntime and compare with PyTorch at batch 1 and ``batch_size + 1``.
        tolerance: largest accepted ``max |onnx - torch| / max |torch|``.
        overwrite: replace an existing file.
        lrn_form: 'node' (one ONNX LRN node per tower and layer, the default) or 'ops' (the same maths in Mul,
            a 1x1 Conv, Add, Pow, Mul: faster in onnxruntime's CPU provider, whose LRN kernel is slow).

    Returns:
        A report: path, bytes, opset, ir_version, num_towers, conv1_nodes, lrn_nodes, lrn_form, input_size,
        tolerance, seconds; with ``verify`` also provider, max_rel_err, max_abs_err, verified_batches.
    """
    t0 = time.perf_counter()
    path = Path(path)
    _check_export_args(path, batch_size, opset, tolerance, overwrite, lrn_form)
    input_size = _input_size(model, input_size)
    training = model.training
    if any(p.device.type != 'cpu' for p in model.parameters()):
        model = copy.deepcopy(model).cpu()
        training = None
    model.eval()
    try:
        with replace_when_done(path, overwrite, 'during the export', make_folder=True) as tmp:  # unwritable: error now
            proto, facts = _export_proto(model, input_size, batch_size, opset, lrn_form, metadata)
            tmp.write_bytes(proto.SerializeToString())
            report: Dict[str, Any] = dict(path=str(path), bytes=tmp.stat().st_size, opset=opset_of(proto),
                                          ir_version=proto.ir_version, num_towers=model.num_towers,
                                          input_size=list(input_size), tolerance=tolerance, **facts)
            report.update(_check_written(tmp, model, input_size, batch_size, tolerance, verify))
    finally:
        if training is not None:
            model.train(training)
    report['seconds'] = time.perf_counter() - t0
    return report


def _check_export_args(path: Path, batch_size: int, opset: Optional[int], tolerance: float, overwrite: bool,
                       lrn_form: str) -> None:
    """UserError, before any work, for an export that cannot be done as asked."""
    if path.is_dir():
        raise UserError(f'output {path} is a folder; give a file name such as {path / "model.onnx"}')
    if path.exists() and not overwrite:
        raise UserError(f'{path} exists; use --force to replace it, or choose another --output')
    if batch_size < 2:
        raise UserError('batch_size must be >= 2 (torch.export would fix a batch of 1 in the graph)')
    if not 0 < tolerance <= 1:
        raise UserError(f'tolerance must be in (0, 1], got {tolerance}')
    if lrn_form not in _LRN_FORMS:
        raise UserError(f'lrn_form must be one of {", ".join(_LRN_FORMS)}, got {lrn_form!r}')
    check_opset(opset)


def _input_size(model: nn.Module, input_size: Optional[Sequence[int]]) -> Tuple[int, int, int]:
    """(C, H, W) to export at: the given one, checked against the model's in_chans, or the pretrained_cfg's."""
    cfg = getattr(model, 'pretrained_cfg', None) or {}
    chans = getattr(model, 'in_chans', 3)
    if input_size is None:  # the pretrained_cfg says 3 channels also for a model made with in_chans=1
        input_size = (chans, *tuple(cfg.get('input_size') or (3, 224, 224))[1:])
    input_size = tuple(int(s) for s in input_size)
    if len(input_size) != 3:
        raise UserError(f'input_size must be (C, H, W), got {input_size}')
    if input_size[0] != chans:
        raise UserError(f'input_size {input_size} has {input_size[0]} channels; the model takes {chans} (in_chans)')
    return input_size


def _check_written(tmp: Path, model: nn.Module, input_size: Sequence[int], batch_size: int, tolerance: float,
                   verify: bool) -> Dict[str, Any]:
    """The written file loads in onnxruntime and, with ``verify``, matches PyTorch within ``tolerance`` (else UserError)."""
    if not verify:
        export_verify.session(tmp)
        return {}
    report = export_verify.verify(tmp, model, input_size, (1, batch_size + 1))
    if not report['max_rel_err'] <= tolerance:
        raise UserError(f'onnxruntime ({report["provider"]}) differs from PyTorch by {report["max_rel_err"]:.3g} '
                        f'(relative), above the tolerance {tolerance:g}; nothing written')
    return report


# ---- command line ---------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    p = CommandParser(
        prog=PROG,
        description='Export a split AlexNet to ONNX and verify it.\n\n'
                    'Input: a model name, optionally with trained weights from a checkpoint file (state_dict, timm\n'
                    'training checkpoint or .safetensors) or a training run folder (args.yaml + best checkpoint).\n'
                    'Output: one .onnx file (default exports/MODEL.onnx): dynamic batch axis, one LRN node per tower\n'
                    'and layer, one conv1 Conv per tower reading initializers towers.N.conv1.weight, and metadata\n'
                    '(towers, conv1 nodes, mean/std, input size, class names, checkpoint sha256) that `kernels` reads.\n'
                    'The file passes onnx.checker, loads in the installed onnxruntime, and is run on random images\n'
                    'and compared with PyTorch: the max relative error is printed, and above --tolerance (default\n'
                    f'{DEFAULT_TOLERANCE:g}) the export fails and nothing is written.\n'
                    '--lrn ops writes each LRN as elementary operators instead (Mul, 1x1 Conv, Add, Pow, Mul), which\n'
                    "onnxruntime's CPU provider runs faster than its own LRN kernel; the kernel tool reads both.",
        epilog='examples:\n'
               '  timm-alexnet-split export --model alexnet_split_2\n'
               '  timm-alexnet-split export --run runs/demo --output exports/demo.onnx --force\n'
               '  timm-alexnet-split export --model alexnet_split_3 --checkpoint model_best.pth.tar --num-classes 8\n'
               '  timm-alexnet-split export --run runs/demo --lrn ops --output exports/demo-fast.onnx',
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--model', help='registered model name, e.g. alexnet_split_2 (with --run: taken from args.yaml)')
    src = p.add_mutually_exclusive_group()
    src.add_argument('--checkpoint', type=Path, metavar='PATH',
                     help='weights: a state_dict (.pth/.pt), a timm training checkpoint (.pth.tar) or .safetensors')
    src.add_argument('--run', type=Path, metavar='RUN_DIR',
                     help='a training run folder (args.yaml + model_best.pth.tar / last.pth.tar / *.safetensors)')
    p.add_argument('--num-classes', type=int, metavar='K',
                   help="classifier outputs (default: the checkpoint's, else the run's, else 1000)")
    p.add_argument('--output', type=Path, metavar='FILE', help='output file (default exports/MODEL.onnx)')
    p.add_argument('--opset', type=int, metavar='N',
                   help=f"ai.onnx opset, {MIN_OPSET} up to the newest the installed onnxruntime loads (default: the exporter's)")
    p.add_argument('--tolerance', type=float, default=DEFAULT_TOLERANCE,
                   help=f'largest accepted relative error against PyTorch (default {DEFAULT_TOLERANCE:g})')
    p.add_argument('--lrn', choices=list(_LRN_FORMS), default='node',
                   help='node: one ONNX LRN node per tower and layer (default); ops: the same maths in elementary '
                        'operators, faster in onnxruntime on the CPU')
    p.add_argument('--force', action='store_true', help='replace an existing output file')
    return p


def _refuse_existing(output: Optional[Path], force: bool) -> None:
    """Refuse before any loading or exporting when the output is there and --force is not."""
    if output is not None and output.exists() and not force:
        raise UserError(f'{output} exists; use --force to replace it, or choose another --output')


def main(argv: List[str]) -> int:
    """``timm-alexnet-split export``: build (and load) the model, export, verify, print a short report."""
    args = _parser().parse_args(argv)
    import timm

    from .checkpoint import ModelInfo, load_into, read_checkpoint, read_run, sha256_file, state_dict_kwargs
    if args.num_classes is not None and args.num_classes < 0:
        raise UserError('--num-classes must be >= 0 (0 exports the pre-logits features, the output of fc7)')
    check_opset(args.opset)  # before any loading
    run = read_run(args.run) if args.run else None
    if args.model and run and run.model and run.model != args.model:
        raise UserError(f'--model {args.model} differs from {run.model} in {run.run_dir / "args.yaml"}; drop --model')
    name = args.model or (run.model if run else None)
    _refuse_existing(args.output or (Path('exports') / f'{name}.onnx' if name else None), args.force)

    ckpt_path = run.checkpoint if run else args.checkpoint
    ckpt = read_checkpoint(ckpt_path) if ckpt_path else None
    info = run or ModelInfo()
    if ckpt is not None:
        said = ckpt.info.model if ckpt.info.model and timm.is_model(ckpt.info.model) else None
        if name and said and said != name:
            raise UserError(f'{ckpt.path} was trained as {said}, not {name}; drop --model (or give the matching one)')
        info = info.merged(ModelInfo(**{**vars(ckpt.info), 'model': said}))
    name = name or info.model
    if not name:
        raise UserError('--model is required (the checkpoint or run does not name its model)')
    output = args.output or Path('exports') / f'{name}.onnx'
    _refuse_existing(output, args.force)

    kwargs = dict(info.model_kwargs)
    if info.num_classes is not None:
        kwargs['num_classes'] = info.num_classes
    if ckpt is not None:
        fixed = state_dict_kwargs(ckpt.state_dict)  # what the shapes fix (fc8, fc6, conv1, towers)
        if args.model:  # a model named here keeps its towers: weights of another tower count are refused below
            fixed.pop('num_towers', None)
        kwargs.update(fixed)
    if args.num_classes is not None:
        kwargs['num_classes'] = args.num_classes
    model = create_split_model(name, **kwargs)
    meta: Dict[str, Any] = {}
    if ckpt is not None:
        load_into(model, ckpt.state_dict, name, f'{ckpt.path} ({ckpt.source})')
        print(f'weights: {ckpt.path} ({ckpt.source}); model options {kwargs}')
        meta['checkpoint_sha256'] = sha256_file(ckpt.path)
        meta['checkpoint_file'] = ckpt.path.name
    else:
        print(f'weights: none given, {name} as initialised (init seed not fixed)')
    if info.mean and info.std:
        model.pretrained_cfg = {**model.pretrained_cfg, 'mean': tuple(info.mean), 'std': tuple(info.std)}
    if info.class_names:
        if len(info.class_names) == model.num_classes:
            meta['class_names'] = info.class_names
        else:
            print(f'note: {len(info.class_names)} class names for {model.num_classes} classes; class_names not written',
                  file=sys.stderr)

    print(f'exporting {name} ({model.num_towers} towers, {model.num_classes} classes) to {output} ...')
    report = export_onnx(model, output, opset=args.opset, input_size=info.input_size, metadata=meta,
                         tolerance=args.tolerance, overwrite=args.force, lrn_form=args.lrn)
    print(f'wrote {report["path"]} ({report["bytes"] / 2**20:.1f} MiB, opset {report["opset"]}, IR {report["ir_version"]}, '
          + (f'{len(report["lrn_nodes"])} LRN nodes' if args.lrn == 'node' else 'LRN as elementary ops')
          + f', conv1: {", ".join(report["conv1_nodes"])})')
    print(f'onnxruntime ({report["provider"]}) vs PyTorch fp32 at batch {" and ".join(map(str, report["verified_batches"]))}: '
          f'max relative error {report["max_rel_err"]:.2e} (tolerance {report["tolerance"]:g}), '
          f'max abs error {report["max_abs_err"]:.2e}')
    return 0
