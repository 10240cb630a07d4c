"""Caffe's bvlc_alexnet located in an ONNX graph by structure, not names: the five Conv nodes in graph order with
their weight shapes and ``group`` attributes, the three fully connected layers (Gemm, or MatMul + Add), and the
operators between them (Relu, LRN, MaxPool, Reshape/Flatten, Dropout, Softmax), each checked against what
alexnet_split_2 can compute (``zoo_pads`` for the padding and pooling arithmetic).

Torch-free (onnx, numpy). Invariant: a graph that is not bvlc_alexnet, or computes something the model cannot
(other padding, pooling, LRN constants), is one UserError line naming what differs; nothing is guessed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .errors import KernelsError, UserError
from .onnx_graph import Graph, attrs, tensor_array
from .onnx_graph import default_opset as _default_opset
from .onnx_graph import load_onnx as _load_checked
from .zoo_pads import check_pool, conv_pads, hw

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



# ---- reading the graph -------------------------------------------------------------------------
def check_input_path(path: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise UserError(f'{path} does not exist; download bvlcalexnet-12.onnx from the ONNX Model Zoo (see docs/zoo.md)')
    if not p.is_file():
        raise UserError(f'{path} is not a file; give the path of an .onnx file')
    return p


def load_onnx(path: str):
    """The ModelProto in ``path`` with its external data, checked as the kernel tool checks files (declared sizes,
    external data only from the model's folder), or a UserError saying why it cannot be read."""
    p = check_input_path(path)
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


@dataclass
class Located:
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
    pads = conv_pads(a, what, shape[2:], stride, size)
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
        self.size = check_pool(op, attrs(op), what, self.size, self.ceil_ok, self.sizes, self.pool_pads)

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
        walk.sizes.append(f'conv1 {hw(walk.size)}')
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


def locate_layers(model, input_size: Optional[int] = None, base: Path = Path('.')) -> Located:
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
    return Located(walk.layers, input_name, (h, w), output_name, softmax, kwargs, walk.sizes, walk.pool_pads, notes)


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


