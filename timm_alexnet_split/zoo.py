"""Import Caffe's bvlc_alexnet, as the ONNX Model Zoo ships it (bvlcalexnet-*.onnx), into alexnet_split_2.

    timm-alexnet-split import-onnx bvlcalexnet-12.onnx -o bvlc_alexnet.safetensors

The layers are found (``zoo_graph``, ``zoo_pads``) from the graph's structure, not its names: the five Conv nodes in graph
order with their weight shapes and ``group`` attributes, the three fully connected layers (Gemm,
or MatMul + Add), and the operators between them (Relu, LRN, MaxPool, Reshape/Flatten, Dropout,
Softmax). conv2, conv4 and conv5 carry group=2: group g becomes tower g; conv1 (96 outputs) and
conv3 (384, sees all 256 maps) are split by output channel, 0-47 / 0-191 to tower 0. conv1's input
channels are flipped from Caffe's BGR to RGB. The options the graph computes with (conv1 padding,
pooling rounding, LRN constants) are read from it and checked against what the model can do.

Before anything is written, onnxruntime runs the source graph and the model runs the imported
weights on the same random images (BGR to the graph, RGB to the model); above a relative error of
1e-4 on the output (softmax, if the graph ends in one) nothing is written.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from . import ort
from .atomic import check_writable, replace_when_done
from .contracts import ST_FORMAT, ST_MODEL, ST_MODEL_KWARGS, ST_NUM_CLASSES
from .errors import CommandParser, UserError
from .zoo_graph import CONV_SPECS, FC_SPECS, Layer, Located, check_input_path, default_opset, load_onnx, locate_layers

__all__ = ['ImportReport', 'import_bvlc_onnx', 'locate_layers', 'save_safetensors', 'verify', 'main']

PROG = 'timm-alexnet-split import-onnx'
MAX_REL_ERROR = 1e-4
CAFFE_MEAN_BGR = (104.0, 117.0, 123.0)
VARIANT, TAG = 'alexnet_split_2', 'bvlc_in1k'
NUM_TOWERS = 2

@dataclass
class ImportReport:
    """What was read, how it maps onto the model, and how well the model reproduces the graph."""
    source: str
    sha256: str
    opset: int
    ir_version: int
    producer: str
    input_name: str
    input_size: Tuple[int, int]
    graph_order: str
    ends_in_softmax: bool
    num_classes: int
    model_kwargs: Dict[str, Any]
    layers: Dict[str, Dict[str, Any]]
    sizes: List[str]
    pool_pads: List[List[int]]
    max_rel_error: Optional[float] = None
    samples: int = 0
    notes: List[str] = field(default_factory=list)

    @property
    def flipped(self) -> str:
        if self.graph_order == 'bgr':
            return 'conv1 input channels BGR (graph) -> RGB (model)'
        return 'nothing (the graph already takes RGB)'

    def extra_kwargs(self) -> Dict[str, Any]:
        """Options these weights need that the tag alexnet_split_2.bvlc_in1k does not already set."""
        import inspect

        from .model import BVLC_MODEL_ARGS, AlexNetSplit
        defaults = {k: p.default for k, p in inspect.signature(AlexNetSplit).parameters.items()}
        tag = {**defaults, **BVLC_MODEL_ARGS}
        args = dict(self.model_kwargs, num_classes=self.num_classes)
        return {k: v for k, v in args.items() if tag.get(k) != v}

    def usage(self, out: str) -> str:
        extra = ''.join(f', {k}={v!r}' for k, v in self.extra_kwargs().items())
        return (f"timm.create_model('{VARIANT}.{TAG}', pretrained=True, "
                f"pretrained_cfg_overlay=dict(file={out!r}){extra})")

    def metadata(self) -> Dict[str, str]:
        """safetensors metadata (strings only)."""
        meta = {
            ST_FORMAT: 'pt',
            ST_MODEL: f'{VARIANT}.{TAG}',
            ST_NUM_CLASSES: str(self.num_classes),
            ST_MODEL_KWARGS: json.dumps(self.model_kwargs, sort_keys=True),
            'source_file': Path(self.source).name,
            'source_sha256': self.sha256,
            'source_opset': str(self.opset),
            'source_ir_version': str(self.ir_version),
            'source_producer': self.producer,
            'source_input': f'{self.input_name} {self.input_size[0]}x{self.input_size[1]} {self.graph_order.upper()}',
            'source_output': 'softmax' if self.ends_in_softmax else 'logits',
            'flipped': self.flipped,
            'layers': json.dumps({k: v['sources'] for k, v in self.layers.items()}),
            'verified_max_rel_error': 'not verified' if self.max_rel_error is None else f'{self.max_rel_error:.3g}',
            'verified_samples': str(self.samples),
        }
        return meta

    def summary(self) -> str:
        lines = [f'{self.source}: ONNX opset {self.opset}, IR {self.ir_version}, producer {self.producer or "?"!r}',
                 f'  sha256 {self.sha256}',
                 f'  input {self.input_name} 1x3x{self.input_size[0]}x{self.input_size[1]} ({self.graph_order.upper()}), '
                 f'output {"softmax" if self.ends_in_softmax else "logits"} over {self.num_classes} classes',
                 'layers, located by structure:']
        for name, info in self.layers.items():
            g = f' group {info["group"]}' if info['group'] > 1 else ''
            lines.append(f'  {name:<6}{info["op"]:<7}{str(info["shape"]):<22}{g:<9}<- {", ".join(info["sources"]):<26}'
                         f'-> {info["target"]}')
        a = self.model_kwargs
        pads = ', '.join(f'{p[2]}/{p[3]}' for p in self.pool_pads)
        lines += [f'  LRN size {a["lrn_size"]} alpha {a["lrn_alpha"]:g} beta {a["lrn_beta"]:g} bias {a["lrn_k"]:g} '
                  f'across all channels (lrn_scope=all); conv1 padding {a["conv1_pad"]}',
                  f'  MaxPool end pads {pads}; map sizes {", ".join(self.sizes)}: '
                  f'ceil_mode={a["ceil_mode"]} reproduces them',
                  f'  flipped: {self.flipped}']
        lines += [f'  note: {n}' for n in self.notes]
        if self.max_rel_error is not None:
            what = 'softmax' if self.ends_in_softmax else 'logits'
            lines.append(f'verified: onnxruntime on the graph vs {VARIANT} on {self.samples} random '
                         f'{self.input_size[0]}x{self.input_size[1]} images: max relative error of the {what} '
                         f'{self.max_rel_error:.2e} (limit {MAX_REL_ERROR:g})')
        return '\n'.join(lines)


# ---- mapping onto the model ---------------------------------------------------------------------
def _targets() -> Dict[str, str]:
    return {
        'conv1': 'towers.{0,1}.conv1, output channels 0-47 | 48-95',
        'conv2': 'towers.{0,1}.conv2, group g -> tower g',
        'conv3': 'towers.{0,1}.conv3, output channels 0-191 | 192-383',
        'conv4': 'towers.{0,1}.conv4, group g -> tower g',
        'conv5': 'towers.{0,1}.conv5, group g -> tower g',
        'fc6': 'pre_logits.fc6', 'fc7': 'pre_logits.fc7', 'fc8': 'fc8',
    }


def to_state_dict(layers: Dict[str, Layer], flip_bgr: bool = True) -> Dict[str, Any]:
    """alexnet_split_2's state dict from Caffe-layout layers: towers by output channel (= by group)."""
    import torch

    from .model import tower_widths
    sd: Dict[str, torch.Tensor] = {}
    for name in CONV_SPECS:
        w, b = layers[name].weight, layers[name].bias
        if name == 'conv1' and flip_bgr:
            w = w[:, ::-1]
        start = 0
        for t, width in enumerate(tower_widths(w.shape[0], NUM_TOWERS)):
            sd[f'towers.{t}.{name}.weight'] = torch.from_numpy(np.ascontiguousarray(w[start:start + width]))
            sd[f'towers.{t}.{name}.bias'] = torch.from_numpy(np.ascontiguousarray(b[start:start + width]))
            start += width
    for name in FC_SPECS:
        key = name if name == 'fc8' else f'pre_logits.{name}'
        sd[f'{key}.weight'] = torch.from_numpy(np.ascontiguousarray(layers[name].weight))
        sd[f'{key}.bias'] = torch.from_numpy(np.ascontiguousarray(layers[name].bias))
    return sd


# ---- verification ----------------------------------------------------------------------------------
def _runnable(model, opset: int):
    """The model as onnxruntime can run it: opsets below 7 get their legacy attributes dropped (same maths)."""
    if opset >= 7:
        return model
    import onnx
    from onnx import helper, numpy_helper
    m = onnx.ModelProto()
    m.CopyFrom(model)
    drop = {'consumed_inputs', 'is_test', 'broadcast'}
    extra = []
    for n in m.graph.node:
        keep = [a for a in n.attribute if a.name not in drop and not (n.op_type in ('Add', 'Mul', 'Sub', 'Div', 'Gemm')
                                                                      and a.name == 'axis')]
        if n.op_type == 'Reshape' and any(a.name == 'shape' for a in keep):
            shape = list(helper.get_attribute_value([a for a in keep if a.name == 'shape'][0]))
            keep = [a for a in keep if a.name != 'shape']
            name = f'{n.output[0]}__shape'
            extra.append(numpy_helper.from_array(np.array(shape, np.int64), name))
            n.input.append(name)
        del n.attribute[:]
        n.attribute.extend(keep)
    m.graph.initializer.extend(extra)
    for o in m.opset_import:
        if o.domain in ('', 'ai.onnx'):
            o.version = 7
    return m


def _session(model, path: str, opset: int):
    """A CPU session of the graph (its opset < 7 form made runnable); UserError when onnxruntime cannot load it."""
    runnable = _runnable(model, opset)
    return ort.session(path if runnable is model else runnable.SerializeToString(), path)


def verify(model, path: str, opset: int, located: Located, state_dict: Dict[str, Any],
           graph_order: str = 'bgr', samples: int = 4, seed: int = 0) -> float:
    """Max over ``samples`` random images of max|ours - graph| / max|graph| (softmax if the graph ends in one)."""
    import timm
    import torch
    from tqdm import tqdm
    sess = _session(model, path, opset)
    with torch.device('meta'):  # no random init of 61M parameters that are replaced at once
        net = timm.create_model(VARIANT, num_classes=located.layers['fc8'].weight.shape[0], **located.model_kwargs)
    net.load_state_dict(state_dict, strict=True, assign=True)
    net.eval()
    rng = np.random.default_rng(seed)
    h, w = located.input_size
    mean = np.array(CAFFE_MEAN_BGR, np.float32)[None, :, None, None]
    worst = 0.0
    for _ in tqdm(range(samples), desc='verify', unit='image', disable=None, leave=False):
        bgr = (rng.uniform(0, 255, (1, 3, h, w)).astype(np.float32) - mean).astype(np.float32)
        rgb = np.ascontiguousarray(bgr[:, ::-1])
        ref = ort.run(sess, {located.input_name: bgr if graph_order == 'bgr' else rgb}, f'{path} at {h}x{w}',
                      [located.output_name])[0]
        with torch.no_grad():
            out = net(torch.from_numpy(rgb))
            if located.ends_in_softmax:
                out = out.softmax(-1)
        worst = max(worst, ort.max_rel_error(out.double().numpy(), np.asarray(ref).reshape(out.shape)))
    return worst


# ---- public API ------------------------------------------------------------------------------------
def import_bvlc_onnx(
        path: str,
        samples: int = 4,
        seed: int = 0,
        graph_order: str = 'bgr',
        input_size: Optional[int] = None,
        verify_graph: bool = True,
) -> Tuple[Dict[str, Any], ImportReport]:
    """Read bvlc_alexnet from an ONNX file; returns (alexnet_split_2 state dict in RGB, report).

    Args:
        path: the .onnx file (e.g. the ONNX Model Zoo's bvlcalexnet-12.onnx).
        samples: random images for the check against onnxruntime.
        seed: their seed.
        graph_order: 'bgr' (Caffe; conv1 is flipped to RGB) or 'rgb' (left as is).
        input_size: the square input to check the graph at when it does not fix one.
        verify_graph: run the check (UserError above a relative error of 1e-4).
    """
    from .checkpoint import sha256_file  # torch: only when importing, not when this module is read
    if graph_order not in ('bgr', 'rgb'):
        raise UserError(f"graph_order must be 'bgr' or 'rgb', got {graph_order!r}")
    if samples < 1 and verify_graph:
        raise UserError('--samples must be at least 1')
    model = load_onnx(path)
    opset = default_opset(model)
    located = locate_layers(model, input_size)
    sd = to_state_dict(located.layers, flip_bgr=graph_order == 'bgr')
    targets = _targets()
    report = ImportReport(
        source=str(path), sha256=sha256_file(Path(path)), opset=opset, ir_version=int(model.ir_version),
        producer=model.producer_name, input_name=located.input_name, input_size=located.input_size,
        graph_order=graph_order, ends_in_softmax=located.ends_in_softmax,
        num_classes=int(located.layers['fc8'].weight.shape[0]), model_kwargs=located.model_kwargs,
        layers={k: dict(op=v.op, shape=list(v.weight.shape), group=v.group, sources=list(v.sources), target=targets[k])
                for k, v in located.layers.items()},
        sizes=located.sizes, pool_pads=located.pool_pads, notes=list(located.notes))
    if located.input_size != (227, 227):
        report.notes.append(f'the graph runs at {located.input_size[0]}x{located.input_size[1]}; the model reproduces it '
                            'there, and at 227x227 (the tag\'s input size) computes what Caffe computes')
    if verify_graph:
        report.max_rel_error = verify(model, str(path), opset, located, sd, graph_order, samples, seed)
        report.samples = samples
        if not report.max_rel_error <= MAX_REL_ERROR:
            raise UserError(f'the imported model differs from the graph: max relative error {report.max_rel_error:.2e} '
                            f'> {MAX_REL_ERROR:g}; nothing written (is the graph really bvlc_alexnet?)')
    return sd, report


def save_safetensors(state_dict: Dict[str, Any], report: ImportReport, out: str, force: bool = False) -> Path:
    """Write ``state_dict`` (contiguous) with the report as metadata, atomically; refuse to replace without ``force``."""
    from safetensors.torch import save
    dest = _check_output_path(out, force)
    data = save({k: v.contiguous() for k, v in state_dict.items()}, metadata=report.metadata())
    with replace_when_done(dest, force, 'while importing') as tmp:
        tmp.write_bytes(data)  # (safetensors' save_file raises its own error type for an unwritable place)
    return dest


def _check_output_path(out: str, force: bool) -> Path:
    dest = Path(out)
    if dest.suffix != '.safetensors':
        raise UserError(f'{out}: the output must end in .safetensors (timm picks the loader by the extension)')
    if dest.is_dir():
        raise UserError(f'{out} is a directory; give a file name ending in .safetensors')
    if dest.exists() and not force:
        raise UserError(f'{out} exists; pass --force to replace it, or choose another name')
    check_writable(dest)  # a read-only or missing folder: one line now, not after the import
    return dest


def main(argv: List[str]) -> int:
    """``timm-alexnet-split import-onnx FILE.onnx -o OUT.safetensors [--force]``."""
    parser = CommandParser(
        prog=PROG,
        description="Import Caffe's bvlc_alexnet from an ONNX file (the ONNX Model Zoo's bvlcalexnet-*.onnx, opset 3-12) "
                    'into alexnet_split_2: the layers are located by the graph\'s structure, grouped convolutions '
                    'become towers, conv1 is flipped from BGR to RGB. onnxruntime runs the graph and the model runs the '
                    'imported weights on the same random images; nothing is written above a relative error of 1e-4. '
                    'Writes a weights-only .safetensors file (source sha256, opset and the flip in its metadata) that '
                    "timm.create_model('alexnet_split_2.bvlc_in1k', pretrained=True, "
                    "pretrained_cfg_overlay=dict(file=OUT)) loads.",
        epilog='example: timm-alexnet-split import-onnx bvlcalexnet-12.onnx -o bvlc_alexnet.safetensors')
    parser.add_argument('onnx', metavar='FILE.onnx', help='the ONNX graph of bvlc_alexnet')
    parser.add_argument('-o', '--output', required=True, metavar='OUT.safetensors', help='where to write the weights')
    parser.add_argument('--force', action='store_true', help='replace OUT if it exists')
    parser.add_argument('--samples', type=int, default=4, help='random images for the check (default 4)')
    parser.add_argument('--seed', type=int, default=0, help='their seed (default 0)')
    parser.add_argument('--graph-order', choices=('bgr', 'rgb'), default='bgr',
                        help="channel order the graph takes (default bgr, Caffe's); rgb skips the flip")
    parser.add_argument('--input-size', type=int, default=None,
                        help='square input to check at, for graphs that do not fix it (the Zoo\'s: 224)')
    args = parser.parse_args(argv)
    if Path(args.output).resolve() == Path(args.onnx).resolve():
        raise UserError('the output would overwrite the input; choose another -o')
    check_input_path(args.onnx)
    _check_output_path(args.output, args.force)
    print(f'reading {args.onnx} ...', flush=True)
    sd, report = import_bvlc_onnx(args.onnx, samples=args.samples, seed=args.seed, graph_order=args.graph_order,
                                  input_size=args.input_size)
    print(report.summary())
    dest = save_safetensors(sd, report, args.output, force=args.force)
    n = sum(v.numel() for v in sd.values())
    print(f'wrote {dest} ({n:,} parameters)')
    print(f'load it with: {report.usage(str(dest))}')
    return 0
