"""Import Caffe's bvlc_alexnet, as the ONNX Model Zoo ships it (bvlcalexnet-*.onnx), into alexnet_split_2.

    timm-alexnet-split import-onnx bvlcalexnet-12.onnx -o bvlc_alexnet.safetensors

The layers are found from the graph's structure, not its names: the five Conv nodes in graph
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

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import ort
from .atomic import check_writable, replace_when_done
from .contracts import ST_FORMAT, ST_MODEL, ST_MODEL_KWARGS, ST_NUM_CLASSES
from .errors import KernelsError, UserError
from .onnx_graph import Graph, attrs, tensor_array
from .onnx_graph import default_opset as _default_opset
from .onnx_graph import load_onnx as _load_checked

__all__ = ['ImportReport', 'import_bvlc_onnx', 'locate_layers', 'save_safetensors', 'verify', 'main']

PROG = 'timm-alexnet-split import-onnx'
MAX_REL_ERROR = 1e-4
CAFFE_MEAN_BGR = (104.0, 117.0, 123.0)
VARIANT, TAG = 'alexnet_split_2', 'bvlc_in1k'
NUM_TOWERS = 2

# bvlc_alexnet's layers: weight shape in Caffe's layout, group, stride, padding (None: read from the graph)
CONV_SPECS = {
    'conv1': ((96, 3, 11, 11), 1, 4, None),
    'conv2': ((256, 48, 5, 5), 2, 1, 2),
    'conv3': ((384, 256, 3, 3), 1, 1, 1),
    'conv4': ((384, 192, 3, 3), 2, 1, 1),
    'conv5': ((256, 192, 3, 3), 2, 1, 1),
}
FC_SPECS = {'fc6': (4096, 9216), 'fc7': (4096, 4096), 'fc8': (None, 4096)}
# operators between a layer and the one before it (Identity and Dropout are no-ops at inference)
BETWEEN = {
    'conv2': ('Relu', 'LRN', 'MaxPool'),
    'conv3': ('Relu', 'LRN', 'MaxPool'),
    'conv4': ('Relu',),
    'conv5': ('Relu',),
    'fc6': ('Relu', 'MaxPool'),
    'fc7': ('Relu',),
    'fc8': ('Relu',),
}
NO_OPS = ('Identity', 'Dropout')
FLATTEN_OPS = ('Reshape', 'Flatten')
POOL_KERNEL, POOL_STRIDE = 3, 2


@dataclass
class Layer:
    """One located layer: its weights in Caffe's layout (conv [out, in/group, kh, kw], fc [out, in])."""
    name: str
    op: str
    weight: np.ndarray
    bias: np.ndarray
    sources: Tuple[str, ...]
    out: str
    group: int = 1


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


# ---- reading the graph -------------------------------------------------------------------------
def _check_input_path(path: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise UserError(f'{path} does not exist; download bvlcalexnet-12.onnx from the ONNX Model Zoo (see docs/zoo.md)')
    if not p.is_file():
        raise UserError(f'{path} is not a file; give the path of an .onnx file')
    return p


def load_onnx(path: str):
    """The ModelProto in ``path`` with its external data, checked as the kernel tool checks files (declared sizes,
    external data only from the model's folder), or a UserError saying why it cannot be read."""
    p = _check_input_path(path)
    try:
        model = _load_checked(p, external=True)
    except KernelsError as e:  # the checks' own one line
        raise UserError(str(e)) from None
    if not len(model.graph.node):
        raise UserError(f'{path} holds no ONNX graph (not an ONNX model, or an empty one)')
    return model


def default_opset(model) -> int:
    opset = _default_opset(model)
    if opset is None:
        raise UserError('the model declares no opset for the default ONNX domain; the file is incomplete or not ONNX')
    return opset


def _array(graph: Graph, name: str, what: str) -> np.ndarray:
    """The constant ``name`` as a writable float32 array; UserError when it is computed at run time or unreadable."""
    t = graph.constant(name)
    if t is None:
        raise UserError(f"{what}: '{name}' is neither an initializer nor a Constant in the file "
                        '(weights computed at run time are not supported; is the file truncated?)')
    try:
        return np.array(tensor_array(t, graph.base), dtype=np.float32)  # writable, owned
    except KernelsError as e:  # tensor_array's own one line
        raise UserError(f'{what}: {e}') from None
    except (TypeError, ValueError) as e:  # a type that does not convert to float32
        raise UserError(f"{what}: the tensor '{name}' cannot be read ({type(e).__name__}: {e}); "
                        'the file is corrupt or truncated') from None


def _is_no_op(node) -> bool:
    """Identity, Dropout (at inference) and Cast to float32 (the graph computes in float32 throughout)."""
    return node.op_type in NO_OPS or (node.op_type == 'Cast' and attrs(node).get('to') == 1)


def _f32(v: float) -> float:
    """A float32 attribute as the shortest decimal that reads back to it (1e-4, not 9.99999974e-05)."""
    return float(str(np.float32(v)))


def _fmt(ops: Sequence[str]) -> str:
    return ', '.join(ops) if ops else 'nothing'


def _conv_pads(attrs: Dict[str, Any], what: str, kernel: Sequence[int], stride: int, size: Sequence[int]) -> List[int]:
    """[top, left, bottom, right] padding of a Conv or MaxPool, auto_pad resolved."""
    auto = attrs.get('auto_pad', 'NOTSET')
    if auto in ('NOTSET', ''):
        pads = list(attrs.get('pads', [0, 0, 0, 0]))
    elif auto == 'VALID':
        pads = [0, 0, 0, 0]
    elif auto in ('SAME_UPPER', 'SAME_LOWER'):
        total = [max((-(-s // stride) - 1) * stride + k - s, 0) for s, k in zip(size, kernel)]
        small = [t // 2 for t in total]
        big = [t - t // 2 for t in total]
        pads = small + big if auto == 'SAME_UPPER' else big + small
    else:
        raise UserError(f'{what}: unknown auto_pad {auto!r}')
    if len(pads) != 4:
        raise UserError(f'{what}: pads {pads} is not 2-D padding; bvlc_alexnet is a 2-D network')
    return [int(p) for p in pads]


def _pool_out(size: int, end_pad: int, ceil: bool) -> int:
    """Output length of a 3/2 max pool with padding only at the end (PyTorch's and ONNX's rule for ceil)."""
    span = size + end_pad - POOL_KERNEL
    out = (-(-span // POOL_STRIDE) if ceil else span // POOL_STRIDE) + 1
    if ceil and (out - 1) * POOL_STRIDE >= size:  # no window may start in the padding
        out -= 1
    return out


@dataclass
class _Located:
    layers: Dict[str, Layer]
    input_name: str
    input_size: Tuple[int, int]
    output_name: str
    ends_in_softmax: bool
    model_kwargs: Dict[str, Any]
    sizes: List[str]
    pool_pads: List[List[int]]
    notes: List[str]


def _check_input(graph: Graph, input_size: Optional[int]) -> Tuple[str, Tuple[int, int], List[str]]:
    notes: List[str] = []
    if len(graph.input_infos) != 1:
        names = ', '.join(graph.inputs) or 'none'
        raise UserError(f'input: the graph has {len(graph.inputs)} data inputs ({names}); bvlc_alexnet has one image input')
    vi = graph.input_infos[0]
    dims = vi.type.tensor_type.shape.dim
    if len(dims) != 4:
        raise UserError(f"input: '{vi.name}' has {len(dims)} dimensions; bvlc_alexnet takes N x 3 x H x W images")
    vals = [d.dim_value if d.HasField('dim_value') else None for d in dims]
    if vals[1] not in (3, None):
        raise UserError(f"input: '{vi.name}' has {vals[1]} channels; bvlc_alexnet takes 3 (BGR)")
    hw = vals[2:]
    if input_size is not None:
        if all(v is not None for v in hw) and tuple(hw) != (input_size, input_size):
            raise UserError(f'--input-size {input_size} differs from the graph\'s fixed input {hw[0]}x{hw[1]}')
        hw = [input_size, input_size]
    elif any(v is None for v in hw):
        hw = [224, 224]
        notes.append('the graph does not fix its input size; checked at 224x224 (--input-size to change)')
    return vi.name, (int(hw[0]), int(hw[1])), notes


def _conv_layer(graph: Graph, node, name: str, index: int, size: Tuple[int, int]) -> Tuple[Layer, int]:
    """Check one Conv node against bvlc_alexnet's ``name``; returns the layer and its symmetric padding."""
    shape, group, stride, pad = CONV_SPECS[name]
    what = f'{name} (Conv node {index + 1}{", " + repr(node.name) if node.name else ""})'
    if len(node.input) < 2:
        raise UserError(f'{what}: has no weight input')
    w = _array(graph, node.input[1], f'{what} weight')
    a = attrs(node)
    g = int(a.get('group', 1))
    if tuple(w.shape) != shape or g != group:
        raise UserError(f"{what}: weights '{node.input[1]}' are {list(w.shape)} with group {g}; "
                        f"bvlc_alexnet's {name} has {list(shape)} with group {group}")
    if len(node.input) > 2 and node.input[2]:
        b = _array(graph, node.input[2], f'{what} bias')
        if b.size != shape[0]:
            raise UserError(f"{what}: bias '{node.input[2]}' has {b.size} values; expected {shape[0]}")
        b = b.reshape(-1)
    else:
        b = np.zeros(shape[0], np.float32)
    strides = list(a.get('strides', [1, 1]))
    if strides != [stride, stride]:
        raise UserError(f"{what}: strides {strides}; bvlc_alexnet's {name} uses {stride}")
    if any(d != 1 for d in a.get('dilations', [1, 1])):
        raise UserError(f'{what}: dilations {list(a["dilations"])}; bvlc_alexnet has none')
    pads = _conv_pads(a, what, shape[2:], stride, size)
    if len(set(pads)) != 1:
        raise UserError(f'{what}: pads {pads} are not the same on every side; the model pads conv layers symmetrically')
    if pad is not None and pads[0] != pad:
        raise UserError(f"{what}: padding {pads[0]}; bvlc_alexnet's {name} pads {pad} (fixed in the model)")
    sources = tuple(i for i in node.input[1:3] if i)
    return Layer(name, 'Conv', w, b, sources, node.output[0], group=g), pads[0]


def _fc_nodes(graph: Graph) -> List[Any]:
    """Gemm nodes, and MatMul nodes with a constant 2-D operand, in graph order."""
    out = []
    for n in graph.nodes:
        if n.op_type == 'Gemm':
            out.append(n)
        elif n.op_type == 'MatMul' and len(n.input) == 2:
            t = graph.constant(n.input[1])
            if t is not None and len(t.dims) == 2:
                out.append(n)
    return out


def _fc_layer(graph: Graph, node, name: str, index: int) -> Layer:
    """Weights [out, in] and bias of a Gemm (any transB, alpha, beta) or MatMul (+ Add) node."""
    what = f'{name} ({node.op_type} node {index + 1}{", " + repr(node.name) if node.name else ""})'
    out_dim, in_dim = FC_SPECS[name]
    a = attrs(node)
    sources = [node.input[1]]
    out = node.output[0]
    if node.op_type == 'Gemm':
        if a.get('transA', 0):
            raise UserError(f'{what}: transA=1 (the layer input transposed); not a fully connected layer of this network')
        w = _array(graph, node.input[1], f'{what} weight')
        if w.ndim != 2:
            raise UserError(f"{what}: weights '{node.input[1]}' are {list(w.shape)}, not a matrix")
        w = w if a.get('transB', 0) else w.T
        if a.get('alpha', 1.0) != 1.0:
            w = w * np.float32(a['alpha'])
        if len(node.input) > 2 and node.input[2]:
            b = _array(graph, node.input[2], f'{what} bias') * np.float32(a.get('beta', 1.0))
            sources.append(node.input[2])
        else:
            b = np.zeros(w.shape[0], np.float32)
    else:
        w = _array(graph, node.input[1], f'{what} weight').T
        b = np.zeros(w.shape[0], np.float32)
        nxt = graph.consumers.get(out, [])
        if len(nxt) == 1 and nxt[0].op_type == 'Add':
            other = [i for i in nxt[0].input if i != out]
            if len(other) == 1 and graph.is_constant(other[0]):
                b = _array(graph, other[0], f'{what} bias')
                sources.append(other[0])
                out = nxt[0].output[0]
    want = [out_dim if out_dim is not None else w.shape[0], in_dim]
    if list(w.shape) != want:
        raise UserError(f"{what}: weights '{node.input[1]}' are {list(w.shape)} as [out, in]; "
                        f"bvlc_alexnet's {name} has [{'classes' if out_dim is None else out_dim}, {in_dim}]")
    if b.size != w.shape[0]:
        raise UserError(f'{what}: bias has {b.size} values; expected {w.shape[0]}')
    return Layer(name, node.op_type, np.ascontiguousarray(w), b.reshape(-1), tuple(sources), out)


def _check_flatten(graph: Graph, node, width: int) -> None:
    """A Flatten(axis=1) or Reshape to [1 or N, width] in front of fc6."""
    a = attrs(node)
    if node.op_type == 'Flatten':
        if int(a.get('axis', 1)) != 1:
            raise UserError(f'fc6: Flatten with axis {a["axis"]} in front of it; bvlc_alexnet flattens from axis 1')
        return
    if 'shape' in a:
        shape = list(a['shape'])
    elif len(node.input) > 1 and graph.is_constant(node.input[1]):
        shape = [int(v) for v in _array(graph, node.input[1], 'fc6 Reshape shape').astype(np.int64)]
    else:
        raise UserError('fc6: the Reshape in front of it takes its shape at run time; expected a constant shape')
    ok = len(shape) == 2 and ((shape[1] == width and shape[0] in (0, 1, -1)) or (shape[1] == -1 and shape[0] in (0, 1)))
    if not ok:
        raise UserError(f'fc6: Reshape to {shape} in front of it; expected [N, {width}] (pool5 flattened per image)')


@dataclass
class _Walk:
    """What locating the layers has found so far, walking the graph from the input to fc8."""
    graph: Graph
    input_hw: Tuple[int, int]
    size: Tuple[int, int]
    prev_out: str
    prev_name: str = 'the input'
    layers: Dict[str, Layer] = field(default_factory=dict)
    lrn: Optional[Dict[str, Any]] = None
    ceil_ok: set = field(default_factory=lambda: {True, False})
    sizes: List[str] = field(default_factory=list)
    pool_pads: List[List[int]] = field(default_factory=list)
    conv1_pad: int = 0

    def between(self, name: str, tensor: str, allowed_extra: Tuple[str, ...] = ()) -> List[Any]:
        """The ops from the previous layer's output to ``tensor`` (no-ops dropped), checked against BETWEEN[name]."""
        chain = self.graph.trace(tensor, self.prev_out)
        if chain is None:
            raise UserError(f"{name}: its input is not computed from {self.prev_name}'s output "
                            f"('{self.prev_out}'); the graph is not wired as bvlc_alexnet")
        kept = [n for n in chain if not _is_no_op(n)]
        ops = [n.op_type for n in kept if n.op_type not in allowed_extra]
        want = list(BETWEEN.get(name, ()))
        if ops != want:
            raise UserError(f'{name}: between {self.prev_name} and {name} the graph has {_fmt(ops)}; '
                            f'bvlc_alexnet has {_fmt(want)}')
        return kept

    def pool(self, op, what: str) -> None:
        self.size = _check_pool(op, attrs(op), what, self.size, self.ceil_ok, self.sizes, self.pool_pads)

    def add(self, layer: Layer) -> None:
        self.layers[layer.name] = layer
        self.prev_out, self.prev_name = layer.out, layer.name


def _lrn_args(name: str, a: Dict[str, Any], first: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """The model's LRN options from an LRN node in front of ``name``; UserError if they differ from the first LRN's."""
    this = dict(lrn_size=int(a['size']), lrn_alpha=_f32(a.get('alpha', 1e-4)),
                lrn_beta=_f32(a.get('beta', 0.75)), lrn_k=_f32(a.get('bias', 1.0)))
    if this['lrn_size'] % 2 == 0 or this['lrn_size'] < 1:
        raise UserError(f'{name}: LRN size {this["lrn_size"]} in front of it; the model needs an odd size')
    if first is not None and this != first:
        raise UserError(f'{name}: the LRN in front of it ({this}) differs from the first LRN ({first}); '
                        'the model uses one setting for both')
    return this


def _locate_conv(walk: _Walk, node, name: str, index: int) -> None:
    """conv``name`` and the Relu / LRN / MaxPool in front of it; the map size after it."""
    for op in walk.between(name, walk.graph.data_input(node) or ''):
        if op.op_type == 'LRN':
            walk.lrn = _lrn_args(name, attrs(op), walk.lrn)
        elif op.op_type == 'MaxPool':
            walk.pool(op, f'pool{len(walk.pool_pads) + 1}')
    layer, pad = _conv_layer(walk.graph, node, name, index, walk.size)
    k, s = layer.weight.shape[2], CONV_SPECS[name][2]
    walk.size = tuple((n + 2 * pad - k) // s + 1 for n in walk.size)
    if min(walk.size) < 1:
        raise UserError(f'{name}: the input {walk.input_hw[0]}x{walk.input_hw[1]} is too small for the network')
    if name == 'conv1':
        walk.conv1_pad = pad
        walk.sizes.append(f'conv1 {_hw(walk.size)}')
    walk.add(layer)


def _locate_convs(walk: _Walk) -> None:
    convs = [n for n in walk.graph.nodes if n.op_type == 'Conv']
    if not convs:
        raise UserError('conv1: the graph has no Conv node; it is not bvlc_alexnet (5 convolutions, 3 fully connected)')
    for i, name in enumerate(CONV_SPECS):
        if i >= len(convs):
            raise UserError(f'{name}: missing; the graph has {len(convs)} Conv nodes, bvlc_alexnet has 5')
        _locate_conv(walk, convs[i], name, i)
    if len(convs) > 5:
        raise UserError(f'the graph has {len(convs)} Conv nodes; bvlc_alexnet has 5 (conv1..conv5)')


def _check_fc6_input(walk: _Walk, node, kept: List[Any]) -> None:
    """pool5's MaxPool, then a Reshape/Flatten to 9216 values per image, in front of fc6."""
    for op in kept:
        if op.op_type == 'MaxPool':
            walk.pool(op, 'pool5')
    flat = [op for op in kept if op.op_type in FLATTEN_OPS]
    size = walk.size
    n_in = CONV_SPECS['conv5'][0][0] * size[0] * size[1]
    if n_in != FC_SPECS['fc6'][1]:
        raise UserError(f'fc6: pool5 gives 256x{size[0]}x{size[1]} = {n_in} values at the input '
                        f'{walk.input_hw[0]}x{walk.input_hw[1]}, but fc6 takes {FC_SPECS["fc6"][1]} (256x6x6)')
    if not flat:
        raise UserError(f'fc6: the {node.op_type} gets pool5\'s 4-D map directly; expected a Reshape or '
                        'Flatten in front of it')
    if kept.index(flat[0]) < len(kept) - len(flat):
        raise UserError('fc6: the Reshape/Flatten comes before pool5\'s MaxPool; the graph is not bvlc_alexnet')
    for op in flat:
        _check_flatten(walk.graph, op, n_in)


def _locate_fcs(walk: _Walk) -> None:
    fcs = _fc_nodes(walk.graph)
    for i, name in enumerate(FC_SPECS):
        if i >= len(fcs):
            raise UserError(f'{name}: missing; the graph has {len(fcs)} fully connected (Gemm/MatMul) nodes, '
                            'bvlc_alexnet has 3')
        layer = _fc_layer(walk.graph, fcs[i], name, i)
        kept = walk.between(name, walk.graph.data_input(fcs[i]) or '', FLATTEN_OPS if name == 'fc6' else ())
        if name == 'fc6':
            _check_fc6_input(walk, fcs[i], kept)
        walk.add(layer)
    if len(fcs) > 3:
        raise UserError(f'the graph has {len(fcs)} fully connected (Gemm/MatMul) nodes; bvlc_alexnet has 3 (fc6..fc8)')


def locate_layers(model, input_size: Optional[int] = None, base: Path = Path('.')) -> _Located:
    """Find conv1..conv5 and fc6..fc8 of bvlc_alexnet in ``model`` by structure; UserError at the first mismatch.

    ``base``: the model's folder (external data is read from there only).
    """
    graph = Graph(model, base)
    input_name, (h, w), notes = _check_input(graph, input_size)
    walk = _Walk(graph, (h, w), (h, w), input_name, sizes=[f'input {h}x{w}'])
    _locate_convs(walk)
    _locate_fcs(walk)
    output_name, softmax = _check_output(graph, walk.prev_out)
    ceil_mode = True in walk.ceil_ok  # Caffe's rounding where the graph's sizes do not tell the two apart
    assert walk.lrn is not None
    kwargs = dict(conv1_pad=walk.conv1_pad, ceil_mode=ceil_mode, lrn_scope='all', lrn_alpha_over_n=True, **walk.lrn)
    return _Located(walk.layers, input_name, (h, w), output_name, softmax, kwargs, walk.sizes, walk.pool_pads, notes)


def _check_pool(node, a: Dict[str, Any], what: str, size: Tuple[int, int], ceil_ok: set,
                sizes: List[str], pool_pads: List[List[int]]) -> Tuple[int, int]:
    """Check a 3/2 MaxPool; narrow ``ceil_ok`` to the rounding modes of the model that give the graph's sizes."""
    kernel = list(a.get('kernel_shape', []))
    strides = list(a.get('strides', [1, 1]))
    if kernel != [POOL_KERNEL] * 2 or strides != [POOL_STRIDE] * 2:
        raise UserError(f'{what}: MaxPool {kernel} stride {strides}; bvlc_alexnet pools 3x3 with stride 2')
    if any(d != 1 for d in a.get('dilations', [1, 1])):
        raise UserError(f'{what}: MaxPool dilations {list(a["dilations"])}; bvlc_alexnet has none')
    pads = _conv_pads(a, what, kernel, POOL_STRIDE, size)
    if pads[0] or pads[1]:
        raise UserError(f'{what}: MaxPool pads {pads} at the top/left; the model pools without leading padding')
    graph_ceil = bool(a.get('ceil_mode', 0))
    out = []
    for dim, n in enumerate(size):
        end = pads[2 + dim]
        got = _pool_out(n, end, graph_ceil)
        ours = {c: _pool_out(n, 0, c) for c in (False, True)}
        ok = {c for c, v in ours.items() if v == got}
        head = f"{what}: the graph's MaxPool (pads {pads}, ceil_mode {int(graph_ceil)}) turns {n} into {got}"
        if not ok:
            raise UserError(f"{head}; the model gives {ours[False]} (rounding down) or {ours[True]} (Caffe's rounding up)")
        if not ok & ceil_ok:
            raise UserError(f'{head}, which needs ceil_mode={ok.pop()}; the pools before it need the other rounding')
        ceil_ok &= ok
        out.append(got)
    sizes.append(f'{what} {_hw(out)}')
    pool_pads.append(pads)
    return out[0], out[1]


def _hw(size: Sequence[int]) -> str:
    return str(size[0]) if size[0] == size[1] else f'{size[0]}x{size[1]}'


def _check_output(graph: Graph, fc8_out: str) -> Tuple[str, bool]:
    for name in graph.outputs:
        chain = graph.trace(name, fc8_out)
        if chain is None:
            continue
        ops = [n for n in chain if not _is_no_op(n)]
        if not ops:
            return name, False
        if [n.op_type for n in ops] == ['Softmax']:
            axis = int(attrs(ops[0]).get('axis', 1))
            if axis not in (1, -1):
                raise UserError(f'output: Softmax over axis {axis}; expected the class axis (1)')
            return name, True
        raise UserError(f'output: after fc8 the graph has {_fmt([n.op_type for n in ops])}; bvlc_alexnet has Softmax')
    raise UserError("output: fc8's output does not reach a graph output")


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


def verify(model, path: str, opset: int, located: _Located, state_dict: Dict[str, Any],
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
    parser = argparse.ArgumentParser(
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
    _check_input_path(args.onnx)
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
