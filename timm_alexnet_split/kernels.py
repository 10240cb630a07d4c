"""What conv1 of any CNN shows, read from an ONNX file, a .safetensors state_dict or a training run folder.

Krizhevsky et al. (2012, section 6.1, Figure 3) say the conv1 kernels of one GPU come out largely
colour-agnostic and those of the other largely colour-specific; Distill's "Branch Specialization" (Voss et al.
2021) adds spatial frequency as a second axis and finds the division latent in unsplit networks. This module
reads the file and orchestrates; the parts are torch-free sibling modules:

- reading (here): conv1 from the graph, not from names: one Conv per tower all reading the image (our
  export), or one Conv whose output channels are split by the ``group`` of the next Conv downstream (Caffe
  style; at least two conv1 channels per group, so a depthwise successor is not towers); metadata written by
  our exporter is used when consistent; ``--groups`` overrides both; conv2 (the next Conv) for the latent
  analysis;
- kernel_measures: chromatic fraction (whole kernel, low-pass part, W - W0), luminance frequency, tests;
- kernel_compare: towers compared on colour and frequency, the verdict in words;
- latent: conv1 -> conv2 connectivity, its SVD against chromatic fraction and frequency;
- kernel_figures / kernel_evolution: the figures, and conv1 over a run's epochs.

It imports onnx, numpy, matplotlib and the standard library only (never torch, never the package's
``__init__``), so it also runs as ``python timm_alexnet_split/kernels.py FILE.onnx --out DIR``.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

if not __package__:  # run as a script: import the sibling torch-free modules without the package's __init__ (torch)
    import types
    _pkg = types.ModuleType('timm_alexnet_split')
    _pkg.__path__ = [str(Path(__file__).resolve().parent)]
    sys.modules.setdefault('timm_alexnet_split', _pkg)
    __package__ = 'timm_alexnet_split'

from . import latent  # noqa: E402
from .kernel_compare import (  # noqa: E402,F401  (re-exported: the tool's public names)
    ALPHA,
    COLOUR_THRESHOLD,
    by_measure,
    compare_axes,
    compare_towers,
    frequency_stats,
    tower_stats,
    verdict,
)
from .kernel_evolution import EVOLUTION_FILES, evolution, read_run  # noqa: E402,F401
from .kernel_evolution import split as _split
from .kernel_figures import (  # noqa: E402,F401
    display_order,
    kernel_tiles,
    mosaic,
    plot_chromatic_fraction,
    plot_colour_frequency,
    plot_kernels,
    plot_latent,
)
from .kernel_io import PROG, KernelsError, check_out, clean, make_out, write_json  # noqa: E402
from .kernel_io import one_line as _one_line
from .kernel_measures import (  # noqa: E402,F401
    DEFAULT_MEASURE,
    FFT_SIZE,
    LOW_PASS_CUTOFF,
    MEASURES,
    PERMUTATIONS,
    SEED,
    SHORT,
    band_chromatic_fraction,
    chromatic_fraction,
    chromatic_measures,
    effect_size,
    format_p,
    low_pass,
    luminance_orientation_frequency,
    measure_label,
    permutation_test,
    resolve_measure,
)

REPORT_FILES = ('report.json', 'kernels.png', 'chromatic_fraction.png', 'colour_frequency.png', 'latent.png')
MAX_ELEMENTS = 2 ** 31   # a declared tensor larger than this is refused, never allocated

# ops between conv1 and conv2 through which conv1's channels pass one to one (Caffe: Relu, LRN, MaxPool)
PASS_THROUGH = frozenset({
    'Relu', 'LeakyRelu', 'PRelu', 'Elu', 'Selu', 'Celu', 'Gelu', 'Clip', 'Sigmoid', 'HardSigmoid', 'Tanh', 'Softplus',
    'HardSwish', 'Mish', 'LRN', 'MaxPool', 'AveragePool', 'LpPool', 'BatchNormalization', 'Dropout', 'Identity', 'Pad',
    'Cast', 'Add', 'Sub', 'Mul', 'Div', 'Pow', 'Sqrt', 'Reciprocal',
})
CONV_OPS = frozenset({'Conv', 'ConvTranspose', 'ConvInteger', 'QLinearConv'})
FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16}
_BITS = {getattr(TensorProto, name): bits for name, bits in {
    'FLOAT': 32, 'DOUBLE': 64, 'FLOAT16': 16, 'BFLOAT16': 16, 'INT8': 8, 'UINT8': 8, 'INT16': 16, 'UINT16': 16,
    'INT32': 32, 'UINT32': 32, 'INT64': 64, 'UINT64': 64, 'BOOL': 8, 'COMPLEX64': 64, 'COMPLEX128': 128,
    'FLOAT8E4M3FN': 8, 'FLOAT8E4M3FNUZ': 8, 'FLOAT8E5M2': 8, 'FLOAT8E5M2FNUZ': 8, 'FLOAT8E8M0': 8,
    'INT4': 4, 'UINT4': 4, 'FLOAT4E2M1': 4, 'INT2': 2, 'UINT2': 2, 'FLOAT6E2M3': 6, 'FLOAT6E3M2': 6,
}.items() if hasattr(TensorProto, name)}
# typed-field element counts that must equal the declared number of elements
_TYPED_FIELD = {TensorProto.FLOAT: 'float_data', TensorProto.DOUBLE: 'double_data', TensorProto.INT64: 'int64_data',
                TensorProto.UINT32: 'uint64_data', TensorProto.UINT64: 'uint64_data',
                **{t: 'int32_data' for t in (TensorProto.INT32, TensorProto.INT16, TensorProto.INT8, TensorProto.UINT8,
                                             TensorProto.UINT16, TensorProto.BOOL, TensorProto.FLOAT16, TensorProto.BFLOAT16)}}



@dataclass
class Conv2Part:
    """conv2 weights over a consecutive block of conv1's kernels (all of them, or one tower's)."""

    label: str                 # conv2's name(s)
    start: int                 # first conv1 kernel it reads (in the concatenated tower order)
    stop: int                  # one past the last
    weight: np.ndarray         # (units, stop - start, kh, kw) float64


@dataclass
class FirstLayer:
    """conv1's kernels split into towers (groups), as found in a file, and what conv2 reads of them."""

    groups: List[np.ndarray]   # per tower (k, 3, h, w) float64, in the file's channel order
    labels: List[str]          # where each tower's kernels came from
    layout: str                # 'towers' (one Conv per tower), 'grouped' (one Conv split by conv2's group), 'single'
    grouping: str              # how the split into towers was decided, in words
    channel_order: str = 'RGB'
    source: str = ''
    warnings: List[str] = field(default_factory=list)
    conv2: List[Conv2Part] = field(default_factory=list)   # empty: conv2_reason says why
    conv2_reason: Optional[str] = None
    initial: Optional[np.ndarray] = None   # W0 (all towers concatenated) when an epoch-0 snapshot exists


# ----------------------------------------------------------------------------------------------- reading ONNX

def _check_file(path: Path, what: str) -> None:
    if not path.exists():
        raise KernelsError(f'{path}: no such file; give the path of {what}')
    if not path.is_file():
        raise KernelsError(f'{path} is not a file; give the path of {what}')


def _graph_tensors(graph: onnx.GraphProto) -> Iterator[TensorProto]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField('t'):
                yield attr.t
            yield from attr.tensors
            if attr.HasField('g'):
                yield from _graph_tensors(attr.g)
            for sub in attr.graphs:
                yield from _graph_tensors(sub)


def _external_target(t: TensorProto, base: Path) -> Tuple[Path, int, Optional[int]]:
    """Validated (file, offset, length) of an external tensor; refuses locations outside ``base``."""
    info = {e.key: e.value for e in t.external_data}
    loc = info.get('location', '')
    name = t.name or '(unnamed)'
    if not loc:
        raise KernelsError(f'tensor {name!r} is marked as external data but names no file; the model is corrupt')
    parts = re.split(r'[\\/]', loc)
    if ('\0' in loc or PurePosixPath(loc).is_absolute() or PureWindowsPath(loc).drive or loc.startswith(('/', '\\'))
            or '..' in parts):
        raise KernelsError(f'tensor {name!r} points at external data {loc!r} outside the model\'s folder {base}: '
                           'refused (path traversal); keep external data files next to the model')
    target = (base / loc).resolve()
    if not target.is_relative_to(base.resolve()):
        raise KernelsError(f'external data {loc!r} of tensor {name!r} leads outside the model\'s folder {base} '
                           '(a link): refused (path traversal); copy the data next to the model')
    if not target.is_file():
        raise KernelsError(f'external data file {loc!r} of tensor {name!r} is missing from {base}; copy it next to the model')
    try:
        offset = int(info.get('offset', '0'))
        length = int(info['length']) if 'length' in info else None
    except ValueError:
        raise KernelsError(f'tensor {name!r} has a non-numeric external data offset/length; the model is corrupt') from None
    if offset < 0 or (length is not None and length < 0):
        raise KernelsError(f'tensor {name!r} has a negative external data offset/length; the model is corrupt')
    return target, offset, length


def _check_tensor(t: TensorProto, base: Path) -> None:
    """Refuse absurd declared sizes, data that does not match the shape, and external data outside ``base``."""
    name = t.name or '(unnamed)'
    dims = list(t.dims)
    if any(d < 0 for d in dims):
        raise KernelsError(f'tensor {name!r} declares a negative dimension {dims}; the model is corrupt')
    n = math.prod(dims)
    if n > MAX_ELEMENTS:
        raise KernelsError(f'tensor {name!r} declares shape {dims} = {n:,} elements (limit 2**31): refused as an '
                           'absurd size; the model is corrupt or hostile')
    bits = _BITS.get(t.data_type)
    nbytes = None if bits is None else (n * bits + 7) // 8
    if t.data_location == TensorProto.EXTERNAL:
        target, offset, length = _external_target(t, base)
        if nbytes is not None and length is not None and length != nbytes:
            raise KernelsError(f'tensor {name!r} declares {length:,} bytes of external data but its shape {dims} needs '
                               f'{nbytes:,}; the model is corrupt')
        if nbytes is not None and offset + nbytes > target.stat().st_size:
            raise KernelsError(f'external data file {target.name!r} is too short for tensor {name!r} '
                               '(truncated?); copy it again')
    elif t.HasField('raw_data'):
        if nbytes is not None and len(t.raw_data) != nbytes:
            raise KernelsError(f'tensor {name!r} holds {len(t.raw_data):,} bytes but its shape {dims} needs {nbytes:,}; '
                               'the model is corrupt or truncated')
    elif t.data_type in _TYPED_FIELD:
        count = len(getattr(t, _TYPED_FIELD[t.data_type]))
        if count != n:
            raise KernelsError(f'tensor {name!r} holds {count:,} values but its shape {dims} needs {n:,}; '
                               'the model is corrupt or truncated')


def load_onnx(path: Path) -> onnx.ModelProto:
    """Parse an ONNX file without its external data, then validate every tensor (sizes, external locations)."""
    path = Path(path)
    _check_file(path, 'an ONNX model')
    if path.stat().st_size == 0:
        raise KernelsError(f'{path} is empty: not an ONNX model; export or download it again')
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf raises DecodeError and friends
        raise KernelsError(f'{path} is not an ONNX model or is truncated ({_one_line(e)}); export or download it again') from None
    if model.ir_version <= 0 or not model.HasField('graph') or not model.opset_import:
        raise KernelsError(f'{path} is not an ONNX model or is truncated (no graph or opset); export or download it again')
    for t in _graph_tensors(model.graph):
        _check_tensor(t, path.parent)
    return model


def _tensor_array(t: TensorProto, base: Path) -> np.ndarray:
    """A validated tensor as float64 (its external data read here, from inside ``base`` only)."""
    name = t.name or '(unnamed)'
    if t.data_type not in FLOAT_TYPES:
        kind = TensorProto.DataType.Name(t.data_type) if t.data_type in TensorProto.DataType.values() else t.data_type
        raise KernelsError(f'conv1 weights {name!r} are {kind}, not floating point (a quantised model?); '
                           'inspect the float model')
    if t.data_location == TensorProto.EXTERNAL:
        target, offset, _ = _external_target(t, base)
        nbytes = (math.prod(t.dims) * _BITS[t.data_type] + 7) // 8
        with open(target, 'rb') as f:
            f.seek(offset)
            raw = f.read(nbytes)
        copy = TensorProto()
        copy.CopyFrom(t)
        copy.ClearField('external_data')
        copy.data_location = TensorProto.DEFAULT
        copy.raw_data = raw
        t = copy
    try:
        return np.asarray(numpy_helper.to_array(t)).astype(np.float64)
    except Exception as e:
        raise KernelsError(f'cannot read tensor {name!r} ({_one_line(e)}); the model is corrupt') from None


def _attr(node: onnx.NodeProto, name: str, default: Any) -> Any:
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _label(node: onnx.NodeProto, index: int) -> str:
    return node.name or f'Conv #{index} (output {node.output[0]!r})'


class _Graph:
    """Producers, consumers and constant tensors of an ONNX graph."""

    def __init__(self, model: onnx.ModelProto, base: Path):
        g = model.graph
        self.base = base
        self.nodes = list(g.node)
        self.index = {id(n): i for i, n in enumerate(self.nodes)}
        self.inits = {t.name: t for t in g.initializer}
        self.producer: Dict[str, onnx.NodeProto] = {}
        self.consumers: Dict[str, List[onnx.NodeProto]] = {}
        for n in self.nodes:
            for o in n.output:
                self.producer[o] = n
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.inputs = [i.name for i in g.input if i.name not in self.inits]

    def constant(self, name: str) -> Optional[TensorProto]:
        """The tensor behind value ``name`` if it is an initializer or a Constant (through Identity), else None."""
        for _ in range(64):
            if name in self.inits:
                return self.inits[name]
            node = self.producer.get(name)
            if node is None:
                return None
            if node.op_type == 'Constant':
                return next((a.t for a in node.attribute if a.name == 'value' and a.HasField('t')), None)
            if node.op_type != 'Identity':
                return None
            name = node.input[0]
        return None

    def label(self, node: onnx.NodeProto) -> str:
        return _label(node, self.index[id(node)])

    def first_convs(self) -> List[onnx.NodeProto]:
        """Conv nodes with no Conv upstream of their data input that read a graph input (in graph order)."""
        conv_up: Dict[str, bool] = {}
        roots: Dict[str, frozenset] = {name: frozenset([name]) for name in self.inputs}
        firsts = []
        for n in self.nodes:
            data = [x for x in (n.input[:1] if n.op_type in CONV_OPS else n.input) if x]
            up = any(conv_up.get(x, False) for x in data)
            root = frozenset().union(*(roots.get(x, frozenset()) for x in data))
            if n.op_type in CONV_OPS and not up and root:
                firsts.append(n)
            for o in n.output:
                conv_up[o] = up or n.op_type in CONV_OPS
                roots[o] = root
        self.roots = roots
        return firsts

    def weight(self, conv: onnx.NodeProto) -> TensorProto:
        """conv's weight tensor, checked to be a 2-D convolution over 3 colour channels."""
        label = self.label(conv)
        if conv.op_type != 'Conv':
            raise KernelsError(f'the first layer {label} is {conv.op_type}, not a float Conv (a quantised model?); '
                               'inspect the float model')
        t = self.constant(conv.input[1]) if len(conv.input) > 1 else None
        if t is None:
            raise KernelsError(f'the weights of the first Conv {label} are computed in the graph, not stored in it: '
                               'nothing to inspect')
        if len(t.dims) != 4:
            raise KernelsError(f'the first Conv {label} has weights of shape {list(t.dims)}: not a 2-D convolution')
        group = int(_attr(conv, 'group', 1))
        channels = t.dims[1] * group
        if channels != 3:
            raise KernelsError(f'the first Conv {label} sees {channels} input channel(s), not 3: not an RGB first layer')
        if group != 1:
            raise KernelsError(f'the first Conv {label} is grouped over the colour channels (group={group}): each kernel '
                               'sees one colour, there is no colour specificity to measure')
        return t

    def next_convs(self, conv: onnx.NodeProto) -> List[onnx.NodeProto]:
        """The Convs that read conv's output as data through ops that keep channels one to one.

        A multi-input op passes when each of its other inputs is a constant or itself reached from conv (SiLU:
        x * Sigmoid(x)); a residual Add whose other input comes through a Conv does not. A Conv reading the square
        of a reached value (x * x or Pow) is LRN written as elementary ops (its band sum), not conv2: it passes.
        """
        reached, frontier, found, seen = {conv.output[0]}, [conv.output[0]], [], set()
        squares: set = set()
        while frontier:
            value = frontier.pop()
            for n in self.consumers.get(value, []):
                if n.op_type in CONV_OPS and value not in squares:
                    if n.input[0] == value and id(n) not in seen:
                        seen.add(id(n))
                        found.append(n)
                elif (n.op_type in CONV_OPS or n.op_type in PASS_THROUGH) and all(
                        x in reached or self.constant(x) is not None for x in n.input if x):
                    if n.op_type == 'Pow' or (n.op_type == 'Mul' and n.input[0] == n.input[1]):
                        squares.add(n.output[0])
                    for o in n.output[:1]:
                        if o not in reached:
                            reached.add(o)
                            frontier.append(o)
        return sorted(found, key=lambda n: self.index[id(n)])

    def downstream_group(self, conv: onnx.NodeProto, k: int) -> Tuple[int, str, List[str]]:
        """conv1's channel split from the ``group`` of the next Conv(s) downstream: (groups, how, warnings).

        A group split needs at least two conv1 channels per group: a depthwise (or otherwise one channel per
        group) next Conv is a per-channel filter, not towers.
        """
        found = self.next_convs(conv)
        if not found:
            return 1, 'one ungrouped first Conv and no Conv reached through activation/normalisation/pooling', []
        groups = {int(_attr(n, 'group', 1)) for n in found}
        names = ', '.join(self.label(n) for n in found[:3])
        if len(groups) > 1:
            return 1, f'one first Conv; the Convs after it disagree on group ({names})', [
                f'the Convs after conv1 have different group attributes ({sorted(groups)}); not splitting (use --groups)']
        g = groups.pop()
        if g == 1:
            return 1, f'one first Conv; the next Conv {names} is not grouped', []
        if k // g < 2:
            return 1, (f'one first Conv; the next Conv {names} has group={g} over {k} channels, one channel per group '
                       '(depthwise): a per-channel filter, not towers'), []
        w2 = self.constant(found[0].input[1]) if len(found[0].input) > 1 else None
        if w2 is not None and len(w2.dims) == 4 and w2.dims[1] * g != k:
            return 1, f'one first Conv; the next Conv {names} has group={g} but does not see all {k} channels', [
                f'{names} has group={g} over {w2.dims[1] * g} channels, conv1 gives {k}; not splitting (use --groups)']
        if k % g:
            return 1, f'one first Conv of {k} kernels; group={g} of {names} does not divide it', [
                f'conv1 has {k} kernels, not divisible by group={g} of {names}; not splitting (use --groups)']
        return g, f'one first Conv, split by group={g} of the next Conv {names} ({k // g} channels per group)', []

    def conv2_weight(self, node: onnx.NodeProto, channels: int) -> np.ndarray:
        """A next Conv's weights as float64, checked to read ``channels`` channels per group (else KernelsError)."""
        label = self.label(node)
        t = self.constant(node.input[1]) if node.op_type == 'Conv' and len(node.input) > 1 else None
        if t is None:
            raise KernelsError(f'the weights of the next Conv {label} are not stored in the graph')
        if len(t.dims) != 4 or t.dims[1] != channels:
            raise KernelsError(f'the next Conv {label} has weights {list(t.dims)}, not over {channels} conv1 channels')
        return _tensor_array(t, self.base)

    def conv2_parts(self, conv: onnx.NodeProto, start: int, k: int) -> Tuple[List[Conv2Part], Optional[str]]:
        """conv2 over conv1's ``k`` channels (from ``start``): whole when ungrouped, per group when grouped with at
        least two channels per group; else ([], the reason in one line)."""
        found = self.next_convs(conv)
        if not found:
            return [], 'no Conv reached from conv1 through activation/normalisation/pooling ops: no conv2 to analyse'
        groups = {int(_attr(n, 'group', 1)) for n in found}
        names = ', '.join(self.label(n) for n in found[:3])
        if len(groups) > 1:
            return [], f'the Convs after conv1 ({names}) disagree on group: no single conv2 to analyse'
        g = groups.pop()
        if g > 1 and k // g < 2:
            return [], f'the next Conv {names} is depthwise (group={g}, one conv1 channel per group): no connectivity'
        if k % g:
            return [], f'group={g} of the next Conv {names} does not divide conv1\'s {k} channels'
        try:
            weights = [self.conv2_weight(n, k // g) for n in found]
        except KernelsError as e:
            return [], str(e)
        if g == 1:
            return [Conv2Part(names, start, start + k, np.concatenate(weights))], None
        parts = []
        for j in range(g):
            units = [w[j * len(w) // g:(j + 1) * len(w) // g] for w in weights]
            parts.append(Conv2Part(f'{names} group {j}', start + j * k // g, start + (j + 1) * k // g,
                                   np.concatenate(units)))
        return parts, None


def _metadata(props: Dict[str, str], warnings: List[str]) -> Tuple[Optional[int], Optional[List[str]], Optional[str]]:
    """(num_towers, conv1_nodes, channel_order) from our exporter's metadata, each None when absent or invalid."""
    num, nodes, order = None, None, None
    if 'num_towers' in props:
        try:
            num = int(props['num_towers'])
            if num < 1:
                raise ValueError
        except ValueError:
            warnings.append(f'metadata num_towers={props["num_towers"]!r} is not a positive integer; ignored')
            num = None
    if 'conv1_nodes' in props:
        try:
            nodes = json.loads(props['conv1_nodes'])
            if not isinstance(nodes, list) or not nodes or not all(isinstance(x, str) for x in nodes):
                raise ValueError
        except ValueError:
            warnings.append('metadata conv1_nodes is not a JSON list of node names; ignored')
            nodes = None
    if 'channel_order' in props:
        order = props['channel_order'].strip().upper()
        if order not in ('RGB', 'BGR'):
            warnings.append(f'metadata channel_order={props["channel_order"]!r} is neither RGB nor BGR; ignored')
            order = None
    return num, nodes, order


def split_counts(total: int, groups: int) -> List[int]:
    """Kernels per group when ``total`` kernels are split into ``groups`` (the first ``total % groups`` take one more)."""
    base, extra = divmod(total, groups)
    return [base + (1 if i < extra else 0) for i in range(groups)]


def _ranges(counts: Sequence[int]) -> List[str]:
    edges = np.concatenate([[0], np.cumsum(counts)])
    return [f'kernels {a}-{b - 1}' for a, b in zip(edges[:-1], edges[1:])]


def _regroup(layer: FirstLayer, groups: int, how: str) -> FirstLayer:
    shapes = {g.shape[1:] for g in layer.groups}
    if len(shapes) > 1:
        raise KernelsError(f'the towers\' kernels differ in shape ({sorted(shapes)}); cannot re-split them with --groups')
    w = np.concatenate(layer.groups)
    if not 1 <= groups <= len(w):
        raise KernelsError(f'--groups {groups}: conv1 has {len(w)} kernels; give a number from 1 to {len(w)}')
    counts = split_counts(len(w), groups)
    layer.groups, layer.labels, layer.grouping = _split(w, counts), _ranges(counts), how
    return layer


def read_onnx_first_layer(path: Path) -> FirstLayer:
    """Find conv1 in an ONNX graph and split its kernels into towers (graph structure first, then metadata)."""
    path = Path(path)
    model = load_onnx(path)
    graph = _Graph(model, path.parent)
    warnings: List[str] = []
    num, names, order = _metadata({p.key: p.value for p in model.metadata_props}, warnings)
    if not any(n.op_type in CONV_OPS for n in graph.nodes):
        raise KernelsError(f'{path} has no Conv node: there is no first convolution layer to inspect')
    firsts = graph.first_convs()
    if not firsts:
        raise KernelsError(f'no Conv in {path} reads a graph input: cannot tell which layer is the first')
    roots = {graph.roots[f.input[0]] for f in firsts}
    if len(roots) > 1:
        raise KernelsError(f'the first Convs of {path} read different inputs ({", ".join(graph.label(f) for f in firsts)}); '
                           'inspect a model with one image input')
    weights = [graph.weight(f) for f in firsts]
    if len(firsts) > 1:
        layout = 'towers'
        grouping = f'graph: {len(firsts)} Convs all reading input {sorted(next(iter(roots)))[0]!r}, one per tower'
        labels = [graph.label(f) for f in firsts]
        if names is not None:
            if sorted(names) == sorted(labels):
                order_idx = [labels.index(n) for n in names]
                firsts, weights = [firsts[i] for i in order_idx], [weights[i] for i in order_idx]
                grouping += ', in the tower order of metadata conv1_nodes'
            else:
                warnings.append(f'metadata conv1_nodes {names} does not match the first Convs in the graph {labels}; '
                                'using the graph (towers in graph order)')
        if num is not None and num != len(firsts):
            warnings.append(f'metadata num_towers={num} but the graph has {len(firsts)} first-layer Convs; using the graph')
        arrays = [_tensor_array(w, path.parent) for w in weights]
        labels = [graph.label(f) for f in firsts]
        starts = np.concatenate([[0], np.cumsum([len(a) for a in arrays])])
        found = [graph.conv2_parts(f, int(a), len(w)) for f, a, w in zip(firsts, starts, arrays)]
        parts = [p for ps, _ in found for p in ps]
        reasons = sorted({f'tower {t}: {r}' for t, (_, r) in enumerate(found) if r})
        reason = '; '.join(reasons) if reasons else None
    else:
        w = _tensor_array(weights[0], path.parent)
        g, grouping, more = graph.downstream_group(firsts[0], len(w))
        warnings += more
        layout = 'grouped' if g > 1 else 'single'
        if g == 1 and num is not None and num > 1:
            if num <= len(w):
                g, layout = num, 'grouped'
                grouping = f'metadata num_towers={num} ({grouping})'
            else:
                warnings.append(f'metadata num_towers={num} exceeds conv1\'s {len(w)} kernels; ignored')
        elif g > 1 and num is not None and num != g:
            warnings.append(f'metadata num_towers={num} but the graph splits conv1 into {g} groups; using the graph')
        counts = split_counts(len(w), g)
        arrays = _split(w, counts)
        labels = [f'{graph.label(firsts[0])} {r}' for r in _ranges(counts)]
        parts, reason = graph.conv2_parts(firsts[0], 0, len(w))
    return FirstLayer(arrays, labels, layout, grouping, order or 'RGB', str(path), warnings, parts, reason)


def read_safetensors_first_layer(path: Path) -> FirstLayer:
    """conv1 from a .safetensors state_dict: ``towers.{i}.conv1.weight`` keys, or one 4-D tensor over 3 channels."""
    path = Path(path)
    _check_file(path, 'a .safetensors file')
    try:
        from safetensors import safe_open
    except ImportError:
        raise KernelsError('reading .safetensors needs the safetensors package (pip install safetensors)') from None
    warnings: List[str] = []
    try:
        with safe_open(str(path), framework='np') as f:
            keys = list(f.keys())
            shapes = {k: list(f.get_slice(k).get_shape()) for k in keys}
            props = f.metadata() or {}
            towers = {int(m.group(1)): k for k in keys if (m := re.fullmatch(r'towers\.(\d+)\.conv1\.weight', k))}
            if towers:
                if sorted(towers) != list(range(len(towers))):
                    raise KernelsError(f'{path} has conv1 weights for towers {sorted(towers)}; expected 0..N-1')
                chosen = [towers[i] for i in range(len(towers))]
            else:
                cands = [k for k, s in shapes.items() if len(s) == 4 and s[1] == 3]
                if len(cands) > 1:
                    cands = [k for k in cands if re.search(r'(^|[./_])conv1([./_]|$)', k)] or cands
                if not cands:
                    raise KernelsError(f'{path} holds no 4-D tensor over 3 input channels (no conv1 weights)')
                if len(cands) > 1:
                    raise KernelsError(f'{path} holds several possible conv1 weights ({", ".join(cands[:5])}); '
                                       'keep only one or name it conv1.weight')
                chosen = cands
            for k in chosen:
                if len(shapes[k]) != 4 or shapes[k][1] != 3:
                    raise KernelsError(f'{k} in {path} has shape {shapes[k]}: not conv1 weights over 3 colour channels')
                if math.prod(shapes[k]) > MAX_ELEMENTS:
                    raise KernelsError(f'{k} in {path} declares {shapes[k]}: refused as an absurd size')
            arrays = [np.asarray(f.get_tensor(k)).astype(np.float64) for k in chosen]
            parts, reason = _safetensors_conv2(f, shapes, chosen, [len(a) for a in arrays])
    except KernelsError:
        raise
    except Exception as e:  # safetensors raises SafetensorError, OSError, TypeError for unsupported dtypes
        raise KernelsError(f'{path} is not a readable .safetensors file ({_one_line(e)})') from None
    num, _, order = _metadata(dict(props), warnings)
    if len(arrays) > 1:
        return FirstLayer(arrays, chosen, 'towers', f'state_dict keys towers.{{i}}.conv1.weight ({len(arrays)} towers)',
                          order or 'RGB', str(path), warnings, parts, reason)
    w = arrays[0]
    g = num if num is not None and 1 <= num <= len(w) else 1
    layer = FirstLayer([w], [chosen[0]], 'single', f'one tensor {chosen[0]!r}; no tower information (use --groups)',
                       order or 'RGB', str(path), warnings, parts, reason)
    if g > 1:
        layer = _regroup(layer, g, f'one tensor {chosen[0]!r}, split by metadata num_towers={g}')
        layer.layout = 'grouped'
    return layer


def _conv2_key(conv1_key: str) -> Optional[str]:
    """The state_dict key of conv2's weights next to ``conv1_key`` ('towers.0.conv1.weight' -> 'towers.0.conv2.weight')."""
    key, n = re.subn(r'conv1(?=[._/]weight$|$)', 'conv2', conv1_key)
    return key if n else None


def _safetensors_conv2(f: Any, shapes: Dict[str, List[int]], conv1_keys: Sequence[str],
                       counts: Sequence[int]) -> Tuple[List[Conv2Part], Optional[str]]:
    """conv2 weights next to each conv1 key (same name with conv2), whole or per group; else ([], the reason)."""
    parts: List[Conv2Part] = []
    reasons = []
    start = 0
    for key, k in zip(conv1_keys, counts):
        part, why = _conv2_from_key(f, shapes, _conv2_key(key), start, k)
        parts += part
        if why:
            reasons.append(why)
        start += k
    return parts, '; '.join(reasons) or None


def _conv2_from_key(f: Any, shapes: Dict[str, List[int]], key: Optional[str], start: int,
                    k: int) -> Tuple[List[Conv2Part], Optional[str]]:
    if key is None or key not in shapes:
        return [], f'no conv2 weights {key or "(no conv1 in the key)"} next to conv1 in the file: nothing to analyse'
    s = shapes[key]
    if len(s) != 4 or math.prod(s) > MAX_ELEMENTS or s[1] < 1 or k % s[1] or s[0] % (k // s[1]):
        return [], f'{key} has shape {s}: not a conv2 over conv1\'s {k} channels'
    g = k // s[1]
    if g > 1 and s[1] < 2:
        return [], f'{key} is depthwise (one conv1 channel per group): no connectivity to analyse'
    w = np.asarray(f.get_tensor(key)).astype(np.float64)
    per = s[0] // g
    return [Conv2Part(key if g == 1 else f'{key} group {j}', start + j * s[1], start + (j + 1) * s[1],
                      w[j * per:(j + 1) * per]) for j in range(g)], None


def read_run_first_layer(run_dir: Path) -> FirstLayer:
    """conv1 of a training run folder: its last snapshot, W0 from epoch 0, conv2 from last.safetensors if there."""
    run_dir = Path(run_dir)
    epochs, arrays, meta = read_run(run_dir, only=[0, -1])
    counts = meta['kernels_per_tower']
    layer = FirstLayer(_split(arrays[-1], counts), [f'conv1/epoch_{epochs[-1]:04d}.npy {r}' for r in _ranges(counts)],
                       'towers' if len(counts) > 1 else 'single', f'run folder: conv1/towers.json {counts}',
                       meta['channel_order'], str(run_dir))
    if epochs[0] == 0 and epochs[-1] > 0:
        layer.initial = arrays[0]
    weights = run_dir / 'last.safetensors'
    if not weights.is_file():
        layer.conv2_reason = f'{run_dir} has no last.safetensors: conv2 weights unknown'
        return layer
    try:
        from safetensors import safe_open
        with safe_open(str(weights), framework='np') as f:
            shapes = {k: list(f.get_slice(k).get_shape()) for k in f.keys()}
            keys = [f'towers.{i}.conv1.weight' for i in range(len(counts))]
            layer.conv2, layer.conv2_reason = _safetensors_conv2(f, shapes, keys, counts)
    except Exception as e:  # a partly written or foreign last.safetensors: conv1 is still readable
        layer.conv2_reason = f'cannot read conv2 from {weights} ({_one_line(e)})'
    return layer


def read_first_layer(path: Path, groups: Optional[int] = None) -> FirstLayer:
    """conv1's kernels per tower from an .onnx or .safetensors file or a run folder; ``groups`` re-splits them."""
    path = Path(path)
    if path.is_dir():
        layer = read_run_first_layer(path)
    elif path.suffix.lower() == '.safetensors':
        layer = read_safetensors_first_layer(path)
    else:
        layer = read_onnx_first_layer(path)
    if groups is not None:
        layer = _regroup(layer, groups, f'--groups {groups}: conv1\'s {sum(len(g) for g in layer.groups)} kernels '
                                        f'split in order into {groups} blocks (was: {layer.grouping})')
    return layer



# ----------------------------------------------------------------------------------------------- commands

def latent_analysis(layer: FirstLayer, cf: np.ndarray, freq: np.ndarray, permutations: int = PERMUTATIONS,
                    seed: int = SEED, alpha: float = ALPHA) -> Dict[str, Any]:
    """The ``latent`` entry of the report: per conv2 part (whole conv1, or each tower) the analysis, or why not.

    ``cf`` and ``freq``: per-kernel values of all of conv1 (towers concatenated in order).
    """
    if not layer.conv2:
        return latent.not_applicable(layer.conv2_reason or 'no conv2 found')
    results = [latent.analyse(p.weight, cf[p.start:p.stop], freq[p.start:p.stop], p.label, permutations, seed, alpha)
               for p in layer.conv2]
    labels = [f'kernels {p.start}-{p.stop - 1}' for p in layer.conv2]
    whole = len(results) == 1 and layer.conv2[0].stop - layer.conv2[0].start == len(cf)
    if whole:
        return {**results[0], 'scope': 'all of conv1'}
    return {'applicable': any(r['applicable'] for r in results), 'reason': layer.conv2_reason,
            'scope': 'within each tower (conv2 reads one tower)', 'conv2': [r['conv2'] for r in results],
            'parts': [{'kernels': lab, **r} for lab, r in zip(labels, results)],
            'summary': latent.combined_summary(results, labels)}


def _latent_figure_entries(layer: FirstLayer, report_latent: Dict[str, Any], w_all: np.ndarray,
                           cf: np.ndarray) -> List[Tuple[str, np.ndarray, np.ndarray, Dict[str, Any]]]:
    parts = report_latent.get('parts') or [report_latent]
    entries = []
    for p, r in zip(layer.conv2, parts):
        if r.get('applicable'):
            c = r['centred'][0]
            label = (f'{p.label} (kernels {p.start}-{p.stop - 1}): component 1 = {c["share"]:.0%} of the centred '
                     f'variance, Spearman {c["spearman_chromatic"]:+.2f} with chromatic fraction, '
                     f'{format_p(c["p_chromatic"])}')
            entries.append((label, w_all[p.start:p.stop], cf[p.start:p.stop], r))
    return entries


def _measure_layer(layer: FirstLayer, cutoff: float) -> Tuple[List[Dict[str, np.ndarray]], List[np.ndarray],
                                                               List[np.ndarray]]:
    """Per tower: the chromatic fraction by every measure, the luminance orientation and frequency."""
    inits = (_split(layer.initial, [len(g) for g in layer.groups]) if layer.initial is not None
             else [None] * len(layer.groups))
    measures = [chromatic_measures(g, g0, cutoff) for g, g0 in zip(layer.groups, inits)]
    orient_freq = [luminance_orientation_frequency(g) for g in layer.groups]
    return measures, [o for o, _ in orient_freq], [f for _, f in orient_freq]


def inspect_file(path: Path, out: Optional[Path] = None, groups: Optional[int] = None, bgr: bool = False,
                 sort: bool = False, force: bool = False, permutations: int = PERMUTATIONS, seed: int = SEED,
                 alpha: float = ALPHA, quiet: bool = False, measure: str = DEFAULT_MEASURE,
                 cutoff: float = LOW_PASS_CUTOFF) -> Dict[str, Any]:
    """Measure conv1 of ``path`` (file or run folder), write report.json and the figures into ``out``; return the report."""
    path = Path(path)
    out = Path(out) if out is not None else (path / 'kernels' if path.is_dir() else path.parent / f'{path.stem}_kernels')
    check_out(out, REPORT_FILES, force)
    layer = read_first_layer(path, groups)
    order = 'BGR' if bgr else layer.channel_order
    requested = measure
    measure, choice, warning = resolve_measure(requested, layer.groups[0].shape, cutoff, layer.initial is not None)
    if warning:
        layer.warnings.append(warning)
    label = measure_label(measure, cutoff)
    measures, orients, freqs = _measure_layer(layer, cutoff)
    cfs = [m[measure] for m in measures]
    stats = [tower_stats(c) for c in cfs]
    if any(np.isnan(c).any() for c in cfs):
        layer.warnings.append(f'{sum(int(np.isnan(c).sum()) for c in cfs)} kernel(s) have no {SHORT[measure]} '
                              '(all zero); left out of the statistics')
    test = compare_axes(cfs, freqs, label, permutations, seed, alpha)
    cf_all, freq_all = np.concatenate(cfs), np.concatenate(freqs)
    latent_entry = latent_analysis(layer, cf_all, freq_all, permutations, seed, alpha)
    groups_out = []
    start = 0
    for i, (g, s, lab) in enumerate(zip(layer.groups, stats, layer.labels)):
        groups_out.append({'index': i, 'kernels': len(g), 'first_kernel': start, 'source': lab,
                           'kernel_shape': list(g.shape[1:]), **s, **frequency_stats(freqs[i]),
                           'chromatic_fraction': cfs[i],
                           **{f'chromatic_fraction_{m}': v for m, v in measures[i].items()},
                           'luminance_orientation_deg': orients[i], 'luminance_frequency': freqs[i]})
        start += len(g)
    figures = {'kernels': 'kernels.png', 'chromatic_fraction': 'chromatic_fraction.png',
               'colour_frequency': 'colour_frequency.png'}
    if latent_entry['applicable']:
        figures['latent'] = 'latent.png'
    report = clean({
        'tool': PROG, 'file': str(path), 'layout': layer.layout, 'grouping': layer.grouping,
        'channel_order': order, 'measure': measure, 'measure_label': label, 'measure_requested': requested,
        'measure_choice': choice, 'low_pass_cutoff': cutoff,
        'colour_threshold': COLOUR_THRESHOLD, 'alpha': alpha, 'num_kernels': start, 'num_groups': len(layer.groups),
        'groups': groups_out, **test, 'measures': {m: {'label': measure_label(m, cutoff), **v}
                                                  for m, v in by_measure(measures, permutations, seed).items()},
        'latent': latent_entry, 'figures': figures, 'warnings': layer.warnings,
    })
    _write_outputs(report, layer, cfs, freqs, stats, out, path, order, sort, seed)
    for w in report['warnings']:
        print(f'{PROG}: warning: {w}', file=sys.stderr)
    if not quiet:
        _print_summary(report, out)
    return report


def _write_outputs(report: Dict[str, Any], layer: FirstLayer, cfs: List[np.ndarray], freqs: List[np.ndarray],
                   stats: List[Dict[str, Any]], out: Path, path: Path, order: str, sort: bool, seed: int) -> None:
    how = {'towers': 'one Conv per tower', 'grouped': 'one Conv split into groups', 'single': 'one Conv, no split'}
    n = len(layer.groups)
    short = SHORT[report['measure']]
    header = (f'{path.name}: conv1, {report["num_kernels"]} kernels in {n} tower{"s" if n > 1 else ""} '
              f'({how[layer.layout]}), shown as {"BGR weights flipped to RGB" if order == "BGR" else "RGB"}\n'
              f'{report["verdict"]}')
    make_out(out)
    try:
        plot_kernels(layer.groups, cfs, stats, header, out / 'kernels.png', bgr=order == 'BGR', sort=sort, measure=short)
        plot_chromatic_fraction(cfs, stats, f'{path.name}\n{report["verdict"]}', out / 'chromatic_fraction.png',
                                short, COLOUR_THRESHOLD, seed)
        plot_colour_frequency(cfs, freqs, f'{path.name}\n{report["verdict"]}', out / 'colour_frequency.png', short)
        if report['latent']['applicable']:
            w_all = np.concatenate(layer.groups)
            entries = _latent_figure_entries(layer, report['latent'], w_all, np.concatenate(cfs))
            plot_latent(entries, f'{path.name}: conv1 along the leading component of conv1->conv2 connectivity\n'
                        f'{report["latent"]["summary"]}', out / 'latent.png', order == 'BGR', short)
        write_json(report, out / 'report.json')
    except OSError as e:
        raise KernelsError(f'cannot write into {out} ({e.strerror or _one_line(e)})') from None


def _print_summary(report: Dict[str, Any], out: Path) -> None:
    n = report['num_groups']
    print(f'{report["file"]}: conv1 = {report["num_kernels"]} kernels in {n} tower{"s" if n > 1 else ""}: '
          f'{report["grouping"]}')
    print(f'  measure: {report["measure_label"]}')
    print(f'  {"tower":<8}{"kernels":>8}{"mean":>8}{"median":>8}{"> 0.3":>8}{"freq":>8}')
    fmt = lambda v, spec: 'n/a' if v is None else format(v, spec)  # noqa: E731
    for g in report['groups']:
        print(f'  {g["index"]:<8}{g["kernels"]:>8}{fmt(g["mean"], ".3f"):>8}{fmt(g["median"], ".3f"):>8}'
              f'{fmt(g["fraction_above_0_3"], ".0%"):>8}{fmt(g["frequency_mean"], ".3f"):>8}')
    if report['p_value'] is not None:
        d = 'n/a (no spread within towers)' if report['effect_size'] is None else f'{report["effect_size"]:.2f}'
        print(f'  colour: difference of means {report["difference_of_means"]:+.3f}, {report["effect_size_measure"]}: '
              f'{d}, {report["p_value_text"]}')
        for m, v in report['measures'].items():
            if m != report['measure']:
                print(f'    by {SHORT[m]}: tower means {", ".join(fmt(t["mean"], ".3f") for t in v["towers"])}, '
                      f'{format_p(v["p_value"])}')
        fd, fdiff = report['frequency_effect_size'], report['frequency_difference_of_means']
        if fdiff is None:  # a tower of pure colour kernels has no luminance frequency
            print('  spatial frequency: not compared (a tower has no kernel with a luminance part)')
        else:
            print(f'  spatial frequency: difference of means {fdiff:+.3f} cycles/px, '
                  f'effect size {"n/a" if fd is None else f"{fd:.2f}"}, {report["frequency_p_value_text"]}')
    print(f'verdict: {report["verdict"]}')
    print(f'latent: {report["latent"]["summary"]}')
    print(f'wrote {out / "report.json"}, ' + ', '.join(report['figures'].values()))


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line on stderr via main(), not argparse's usage + error
        raise KernelsError(f'{message} (see --help)')


def build_parser() -> argparse.ArgumentParser:
    """The ``kernels`` subcommand's argument parser."""
    parser = _Parser(
        prog=PROG,
        description=textwrap.fill(
            'Read the first layer (conv1) of any CNN from an ONNX file (any exporter: one Conv per tower, or one Conv '
            'split by the group of the next Conv as in Caffe, at least two channels per group), a .safetensors '
            'state_dict or a training run folder. Per kernel: chromatic fraction 1 - ||PW||^2/||W||^2 (0 grey, 1 no '
            'luminance) of the whole kernel, its low-pass part, its strongest Fourier components and (run folders) '
            'W - W0, and the spatial frequency of its luminance part. Between towers: permutation tests and effect '
            'sizes on both axes and a one-line verdict naming what the towers differ in (colour, frequency, both, '
            'nothing). Latent branches: SVD of the conv1 -> conv2 connectivity against chromatic fraction and '
            'frequency (whole conv1, or within each tower). Writes report.json, kernels.png (Figure-3 style), '
            'chromatic_fraction.png, colour_frequency.png and latent.png into --out. With --evolution RUN_DIR it '
            'reads a training run\'s conv1/epoch_NNNN.npy snapshots instead and writes evolution.gif, evolution.png, '
            'evolution.json. Bad input: one line on stderr, exit status 2. Definitions: docs/kernels.md.', 100),
        epilog='examples:\n'
               '  timm-alexnet-split kernels exports/alexnet_split_2.onnx --sort\n'
               '  timm-alexnet-split kernels bvlcalexnet-12.onnx --bgr --out bvlc_kernels\n'
               '  timm-alexnet-split kernels runs/demo --measure trained\n'
               '  timm-alexnet-split kernels --evolution runs/demo --out runs/demo/kernel_evolution',
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('file', nargs='?', type=Path, help='model: .onnx, .safetensors holding conv1 (and conv2) '
                                                           'weights, or a training run folder (its last epoch)')
    parser.add_argument('--evolution', type=Path, metavar='RUN_DIR',
                        help='training run folder with conv1/epoch_NNNN.npy and conv1/towers.json (instead of FILE)')
    parser.add_argument('--out', type=Path, metavar='DIR', help='output folder (default: <stem>_kernels/ next to FILE, '
                                                 'RUN_DIR/kernels/ for a run folder, '
                                                 'RUN_DIR/kernel_evolution/ with --evolution)')
    parser.add_argument('--groups', type=int, metavar='N', help='split conv1\'s kernels, in order, into N towers '
                                                                '(overrides the graph and metadata)')
    parser.add_argument('--bgr', action='store_true', help='weights are in BGR order (Caffe): flip them for display')
    parser.add_argument('--sort', action='store_true', help='order each tower\'s kernels by chromatic fraction')
    parser.add_argument('--force', action='store_true', help='overwrite an existing report in --out')
    parser.add_argument('--permutations', type=int, default=PERMUTATIONS, metavar='N',
                        help=f'permutation test size (default {PERMUTATIONS})')
    parser.add_argument('--seed', type=int, default=SEED, metavar='N',
                        help=f'random seed of the permutation test (default {SEED})')
    parser.add_argument('--alpha', type=float, default=ALPHA, metavar='A',
                        help=f'significance level of the verdict (default {ALPHA})')
    parser.add_argument('--measure', choices=['auto', *sorted(MEASURES)], default=DEFAULT_MEASURE,
                        help='which chromatic fraction the verdict and figures use: plain (whole kernel), lowpass '
                             '(its low-pass part), band (its strongest Fourier components, as many as the low-pass '
                             'keeps), trained (W - W0; a run folder or --evolution with epoch 0); auto (default): '
                             'band where kernels are 7x7 or larger (at 0.25), else plain. All are reported.')
    parser.add_argument('--cutoff', type=float, default=LOW_PASS_CUTOFF, metavar='F',
                        help=f'low-pass cut-off in cycles per pixel (default {LOW_PASS_CUTOFF}; 0 < F <= 0.71)')
    parser.add_argument('--quiet', action='store_true', help='print nothing on success')
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``kernels`` command; bad input is one line on stderr and exit status 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
        if (args.file is None) == (args.evolution is None):
            raise KernelsError('give either FILE (.onnx or .safetensors) or --evolution RUN_DIR (see --help)')
        if args.permutations < 1:
            raise KernelsError('--permutations must be at least 1')
        if not 0 < args.alpha < 1:
            raise KernelsError('--alpha must be between 0 and 1')
        if not 0 < args.cutoff <= 0.71:
            raise KernelsError('--cutoff must be above 0 and at most 0.71 cycles per pixel (the corner of the spectrum)')
        if args.evolution is not None:
            if args.groups is not None:
                raise KernelsError('--groups applies to FILE; with --evolution the towers come from conv1/towers.json')
            evolution(args.evolution, args.out, args.bgr, args.sort, args.force, args.permutations, args.seed,
                      args.alpha, quiet=args.quiet, measure=args.measure, cutoff=args.cutoff)
        else:
            inspect_file(args.file, args.out, args.groups, args.bgr, args.sort, args.force, args.permutations,
                         args.seed, args.alpha, args.quiet, args.measure, args.cutoff)
    except KernelsError as e:
        print(f'{PROG}: error: {" ".join(str(e).split())}', file=sys.stderr)
        return 2
    except SystemExit as e:  # --help
        return e.code if isinstance(e.code, int) else 0
    return 0


if __name__ == '__main__':
    sys.exit(main())
