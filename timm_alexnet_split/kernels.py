"""Colour specificity of a split network's first-layer (conv1) kernels, read from any ONNX file.

Krizhevsky et al. (2012, section 6.1, Figure 3) say the conv1 kernels of one GPU come out largely
colour-agnostic and those of the other largely colour-specific. This module measures that claim on
any ONNX file (or a .safetensors state_dict) and on a training run's per-epoch conv1 snapshots:

- it finds the first layer from the graph, not from names: one Conv per tower all reading the image
  (our export), or one Conv whose output channels are split by the ``group`` of the next Conv
  downstream (Caffe style); metadata written by our exporter is used when consistent; ``--groups``
  overrides both;
- per kernel: the chromatic fraction ``1 - ||P W||^2 / ||W||^2`` (P: projection of each pixel's RGB
  triple on (1,1,1)/sqrt(3)) and the orientation and spatial frequency of its luminance part;
- per tower: mean, median, fraction above 0.3; between towers: a permutation test and an effect size;
- report.json, a Figure-3-style kernel picture, a per-tower chromatic fraction plot and a verdict.

It imports onnx, numpy, matplotlib and the standard library only (never torch, never the rest of this
package), so it also runs as ``python timm_alexnet_split/kernels.py FILE.onnx --out DIR``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

PROG = 'timm-alexnet-split kernels'
COLOUR_THRESHOLD = 0.3   # a kernel (tower) above this chromatic fraction counts as colour-specific
ALPHA = 0.01             # significance level of the verdict
PERMUTATIONS = 20_000    # smallest reportable p: 1 / 20,001 < 1e-4
SEED = 0
MAX_ELEMENTS = 2 ** 31   # a declared tensor larger than this is refused, never allocated
MAX_GIF_FRAMES = 100
FFT_SIZE = 64            # zero-padded FFT of the luminance part: frequency resolution 1/64 cycles per pixel
REPORT_FILES = ('report.json', 'kernels.png', 'chromatic_fraction.png')
EVOLUTION_FILES = ('evolution.json', 'evolution.gif', 'evolution.png')

# ops between conv1 and conv2 through which conv1's channels pass one to one (Caffe: Relu, LRN, MaxPool)
PASS_THROUGH = frozenset({
    'Relu', 'LeakyRelu', 'PRelu', 'Elu', 'Selu', 'Celu', 'Gelu', 'Clip', 'Sigmoid', 'HardSigmoid', 'Tanh', 'Softplus',
    'HardSwish', 'Mish', 'LRN', 'MaxPool', 'AveragePool', 'LpPool', 'BatchNormalization', 'Dropout', 'Identity', 'Pad',
    'Cast', 'Add', 'Sub', 'Mul', 'Div',
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


class KernelsError(Exception):
    """Bad input (file, graph or option): the message says what is wrong and what to do."""


@dataclass
class FirstLayer:
    """conv1's kernels split into towers (groups), as found in a file."""

    groups: List[np.ndarray]   # per tower (k, 3, h, w) float64, in the file's channel order
    labels: List[str]          # where each tower's kernels came from
    layout: str                # 'towers' (one Conv per tower), 'grouped' (one Conv split by conv2's group), 'single'
    grouping: str              # how the split into towers was decided, in words
    channel_order: str = 'RGB'
    source: str = ''
    warnings: List[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------- measures

def chromatic_fraction(w: np.ndarray) -> np.ndarray:
    """``1 - ||P W||^2 / ||W||^2`` for kernels ``w`` of shape (..., 3, h, w); NaN for an all-zero kernel.

    P replaces each pixel's RGB triple by its projection on (1,1,1)/sqrt(3), i.e. by the channel mean
    repeated, so ``||P W||^2 = 3 * sum(mean_c(W)^2)``. 0: grey (colour-agnostic); 1: no luminance part.
    """
    w = np.asarray(w, np.float64)
    if w.ndim < 3 or w.shape[-3] != 3:
        raise ValueError(f'expected kernels of shape (..., 3, h, w), got {w.shape}')
    total = np.square(w).sum(axis=(-3, -2, -1))
    lum = 3.0 * np.square(w.mean(axis=-3)).sum(axis=(-2, -1))
    with np.errstate(invalid='ignore', divide='ignore'):
        return np.clip(1.0 - lum / total, 0.0, 1.0)


def luminance_orientation_frequency(w: np.ndarray, size: int = FFT_SIZE) -> Tuple[np.ndarray, np.ndarray]:
    """Dominant orientation (degrees) and spatial frequency (cycles/pixel) of each kernel's luminance part.

    The luminance part is the channel mean; its zero-padded power spectrum's peak gives the frequency.
    Orientation is that of the stripes as displayed, counter-clockwise from horizontal in [0, 180): 0 for
    horizontal stripes, 90 for vertical ones; NaN when the peak is at zero frequency (a blob).
    """
    lum = np.asarray(w, np.float64).mean(axis=-3)
    power = np.abs(np.fft.rfft2(lum, s=(size, size))) ** 2
    flat = power.reshape(*power.shape[:-2], -1).argmax(axis=-1)
    iy, ix = np.unravel_index(flat, power.shape[-2:])
    fy, fx = np.fft.fftfreq(size)[iy], np.fft.rfftfreq(size)[ix]
    freq = np.hypot(fx, fy)
    wave = np.degrees(np.arctan2(-fy, fx))  # image rows go down; angles as displayed
    orient = np.where(freq > 0, np.mod(wave + 90.0, 180.0), np.nan)
    return orient, freq


def _group_stat(perm: np.ndarray, starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Test statistic of each row of ``perm``: |difference of means| for 2 groups, else between-group variance."""
    means = np.add.reduceat(perm, starts, axis=-1) / sizes
    if len(sizes) == 2:
        return np.abs(means[..., 1] - means[..., 0])
    grand = perm.mean(axis=-1, keepdims=True)
    return (sizes * np.square(means - grand)).sum(axis=-1) / sizes.sum()


def permutation_test(values: Sequence[np.ndarray], permutations: int = PERMUTATIONS, seed: int = SEED,
                     chunk: int = 2000) -> Tuple[float, float]:
    """Two-sided permutation test that the groups of ``values`` come from one distribution: (statistic, p).

    Statistic: |mean_1 - mean_0| for two groups; for more, the between-group variance of the means
    ``sum_g n_g (mean_g - grand mean)^2 / N`` (equivalent to one-way ANOVA's F under permutation).
    p = (1 + #{permuted statistic >= observed}) / (1 + permutations), with a fixed seed: reproducible.
    """
    values = [np.asarray(v, np.float64).ravel() for v in values]
    sizes = np.array([len(v) for v in values], np.float64)
    if len(values) < 2 or sizes.min() < 1:
        raise ValueError('need at least two non-empty groups')
    pooled = np.concatenate(values)
    starts = np.concatenate([[0], np.cumsum(sizes[:-1])]).astype(np.intp)
    observed = float(_group_stat(pooled, starts, sizes))
    rng = np.random.default_rng(seed)
    hits = 0
    for begin in range(0, permutations, chunk):
        rows = min(chunk, permutations - begin)
        perm = rng.permuted(np.broadcast_to(pooled, (rows, len(pooled))), axis=1)
        hits += int(np.count_nonzero(_group_stat(perm, starts, sizes) >= observed - 1e-12))
    return observed, (hits + 1) / (permutations + 1)


def effect_size(values: Sequence[np.ndarray]) -> Tuple[Optional[float], str]:
    """Cohen's d (group 1 minus group 0, pooled SD) for two groups; eta squared (SS_between / SS_total) for more.

    None when undefined (no spread within the groups).
    """
    values = [np.asarray(v, np.float64).ravel() for v in values]
    if len(values) == 2:
        a, b = values
        dof = len(a) + len(b) - 2
        pooled = math.sqrt(((len(a) - 1) * a.var(ddof=1 if len(a) > 1 else 0) +
                            (len(b) - 1) * b.var(ddof=1 if len(b) > 1 else 0)) / dof) if dof > 0 else 0.0
        d = (b.mean() - a.mean()) / pooled if pooled > 0 else None
        return d, "Cohen's d (tower 1 minus tower 0, pooled SD)"
    pooled = np.concatenate(values)
    total = float(np.square(pooled - pooled.mean()).sum())
    between = float(sum(len(v) * (v.mean() - pooled.mean()) ** 2 for v in values))
    return (between / total if total > 0 else None), 'eta squared (between-tower / total sum of squares)'


def format_p(p: Optional[float]) -> str:
    """'p < 1e-4' or 'p = 0.62'."""
    if p is None:
        return 'p = n/a'
    return 'p < 1e-4' if p < 1e-4 else f'p = {p:.2g}'


def _towers(indices: Sequence[int]) -> str:
    if len(indices) == 1:
        return f'tower {indices[0]}'
    return 'towers ' + ', '.join(map(str, indices[:-1])) + f' and {indices[-1]}'


def verdict(means: Sequence[float], p: Optional[float], alpha: float = ALPHA) -> str:
    """One line: which towers are colour-specific / colour-agnostic, or 'no split detected (p = ...)'."""
    if len(means) < 2 or p is None:
        m = f'{means[0]:.2f}' if len(means) and np.isfinite(means[0]) else 'n/a'
        return f'one tower only: no split to test (mean chromatic fraction {m}); pass --groups N to split conv1'
    if p >= alpha:
        return f'no split detected ({format_p(p)})'
    order = sorted(range(len(means)), key=lambda i: -means[i])
    specific = [i for i in range(len(means)) if means[i] >= COLOUR_THRESHOLD]
    agnostic = [i for i in range(len(means)) if means[i] < COLOUR_THRESHOLD]
    if specific and agnostic:
        hi = ', '.join(f'{means[i]:.2f}' for i in specific)
        lo = ', '.join(f'{means[i]:.2f}' for i in agnostic)
        return (f'{_towers(specific)} colour-specific (mean {hi}), {_towers(agnostic)} colour-agnostic ({lo}), '
                f'{format_p(p)}')
    top, bottom = order[0], order[-1]
    kind = 'colour-specific' if specific else 'colour-agnostic'
    return (f'towers differ but all are {kind}: tower {top} most chromatic (mean {means[top]:.2f}), '
            f'tower {bottom} least ({means[bottom]:.2f}), {format_p(p)}')


def tower_stats(cf: np.ndarray) -> Dict[str, Any]:
    """Mean, median, standard deviation and fraction above 0.3 of one tower's chromatic fractions (NaN left out)."""
    ok = cf[np.isfinite(cf)]
    if not len(ok):
        return {'mean': None, 'median': None, 'std': None, 'fraction_above_0_3': None}
    return {'mean': float(ok.mean()), 'median': float(np.median(ok)), 'std': float(ok.std()),
            'fraction_above_0_3': float(np.mean(ok > COLOUR_THRESHOLD))}


def compare_towers(cfs: Sequence[np.ndarray], permutations: int = PERMUTATIONS, seed: int = SEED,
                   alpha: float = ALPHA) -> Dict[str, Any]:
    """Between-tower test of chromatic fractions: statistic, p-value, effect size, verdict."""
    vals = [c[np.isfinite(c)] for c in cfs]
    means = [float(v.mean()) if len(v) else float('nan') for v in vals]
    out: Dict[str, Any] = {'test': None, 'statistic': None, 'difference_of_means': None, 'p_value': None,
                           'p_value_text': None, 'effect_size': None, 'effect_size_measure': None}
    if len(vals) >= 2 and all(len(v) for v in vals):
        stat, p = permutation_test(vals, permutations, seed)
        d, measure = effect_size(vals)
        two = len(vals) == 2
        out.update(
            test=('two-sided permutation test, statistic |mean(tower 1) - mean(tower 0)|' if two else
                  'permutation test, statistic sum_g n_g (mean_g - mean)^2 / N (between-tower variance of means)')
            + f', {permutations} permutations, seed {seed}',
            statistic=stat, p_value=p, p_value_text=format_p(p), effect_size=d, effect_size_measure=measure,
            difference_of_means=(means[1] - means[0]) if two else max(means) - min(means))
    out['verdict'] = verdict(means, out['p_value'], alpha)
    return out


# ----------------------------------------------------------------------------------------------- reading ONNX

def _one_line(e: BaseException) -> str:
    text = ' '.join(str(e).split()) or type(e).__name__
    return text if len(text) <= 160 else text[:157] + '...'


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

    def downstream_group(self, conv: onnx.NodeProto, k: int) -> Tuple[int, str, List[str]]:
        """conv1's channel split from the ``group`` of the next Conv(s) downstream: (groups, how, warnings)."""
        frontier, seen, found = [conv.output[0]], set(), []
        while frontier:
            value = frontier.pop()
            for n in self.consumers.get(value, []):
                if n.input[0] != value:
                    continue
                if n.op_type in CONV_OPS:
                    found.append(n)
                elif n.op_type in PASS_THROUGH and all(self.constant(x) is not None for x in n.input[1:] if x):
                    for o in n.output[:1]:
                        if o not in seen:
                            seen.add(o)
                            frontier.append(o)
        if not found:
            return 1, 'one ungrouped first Conv and no Conv reached through activation/LRN/pooling', []
        groups = {int(_attr(n, 'group', 1)) for n in found}
        names = ', '.join(self.label(n) for n in found[:3])
        if len(groups) > 1:
            return 1, f'one first Conv; the Convs after it disagree on group ({names})', [
                f'the Convs after conv1 have different group attributes ({sorted(groups)}); not splitting (use --groups)']
        g = groups.pop()
        if g == 1:
            return 1, f'one first Conv; the next Conv {names} is not grouped', []
        w2 = self.constant(found[0].input[1]) if len(found[0].input) > 1 else None
        if w2 is not None and len(w2.dims) == 4 and w2.dims[1] * g != k:
            return 1, f'one first Conv; the next Conv {names} has group={g} but does not see all {k} channels', [
                f'{names} has group={g} over {w2.dims[1] * g} channels, conv1 gives {k}; not splitting (use --groups)']
        if k % g:
            return 1, f'one first Conv of {k} kernels; group={g} of {names} does not divide it', [
                f'conv1 has {k} kernels, not divisible by group={g} of {names}; not splitting (use --groups)']
        return g, f'one first Conv, split by group={g} of the next Conv {names}', []


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


def _split(w: np.ndarray, counts: Sequence[int]) -> List[np.ndarray]:
    return list(np.split(w, np.cumsum(counts)[:-1]))


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
    return FirstLayer(arrays, labels, layout, grouping, order or 'RGB', str(path), warnings)


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
    except KernelsError:
        raise
    except Exception as e:  # safetensors raises SafetensorError, OSError, TypeError for unsupported dtypes
        raise KernelsError(f'{path} is not a readable .safetensors file ({_one_line(e)})') from None
    num, _, order = _metadata(dict(props), warnings)
    if len(arrays) > 1:
        return FirstLayer(arrays, chosen, 'towers', f'state_dict keys towers.{{i}}.conv1.weight ({len(arrays)} towers)',
                          order or 'RGB', str(path), warnings)
    w = arrays[0]
    g = num if num is not None and 1 <= num <= len(w) else 1
    layer = FirstLayer([w], [chosen[0]], 'single', f'one tensor {chosen[0]!r}; no tower information (use --groups)',
                       order or 'RGB', str(path), warnings)
    if g > 1:
        layer = _regroup(layer, g, f'one tensor {chosen[0]!r}, split by metadata num_towers={g}')
        layer.layout = 'grouped'
    return layer


def read_first_layer(path: Path, groups: Optional[int] = None) -> FirstLayer:
    """conv1's kernels per tower from an .onnx or .safetensors file; ``groups`` re-splits them into that many."""
    path = Path(path)
    if path.suffix.lower() == '.safetensors':
        layer = read_safetensors_first_layer(path)
    else:
        layer = read_onnx_first_layer(path)
    if groups is not None:
        layer = _regroup(layer, groups, f'--groups {groups}: conv1\'s {sum(len(g) for g in layer.groups)} kernels '
                                        f'split in order into {groups} blocks (was: {layer.grouping})')
    return layer


# ----------------------------------------------------------------------------------------------- figures

def kernel_tiles(w: np.ndarray, bgr: bool = False) -> np.ndarray:
    """Kernels (n, 3, h, w) as RGB images (n, h, w, 3) in [0, 1], each contrast-normalised on its own.

    Min-max over all three channels of a kernel, so a grey kernel stays grey; ``bgr`` flips Caffe-order weights.
    """
    w = np.asarray(w, np.float64)
    if bgr:
        w = w[:, ::-1]
    lo = w.min(axis=(1, 2, 3), keepdims=True)
    span = w.max(axis=(1, 2, 3), keepdims=True) - lo
    tiles = np.where(span > 0, (w - lo) / np.where(span > 0, span, 1), 0.5)
    return tiles.transpose(0, 2, 3, 1)


def mosaic(tiles: np.ndarray, cols: int, pad: int = 1, fill: float = 1.0) -> np.ndarray:
    """Tiles (n, h, w, 3) in a grid of ``cols`` columns with ``pad`` pixels of ``fill`` between them."""
    n, h, w, _ = tiles.shape
    rows = max(1, math.ceil(n / cols))
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), fill, np.float64)
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        out[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = t
    return out


def _columns(counts: Sequence[int]) -> int:
    return max(1, min(max(counts), max(16, math.ceil(math.sqrt(max(counts))))))


def display_order(cfs: Sequence[np.ndarray], sort: bool) -> List[np.ndarray]:
    """Per tower the display order: by chromatic fraction (greyest first, NaN last) when ``sort``, else as stored."""
    return [np.argsort(np.nan_to_num(c, nan=2.0), kind='stable') if sort else np.arange(len(c)) for c in cfs]


def _kernel_figure(groups: Sequence[np.ndarray], titles: Sequence[str], header: str, bgr: bool, scale: int = 5):
    """Figure with one labelled kernel block per tower, ``scale`` pixels per kernel pixel.

    Returns (figure, images, columns) so that animation frames can update the images.
    """
    from matplotlib.figure import Figure
    cols = _columns([len(g) for g in groups])
    blocks = [mosaic(kernel_tiles(g, bgr), cols) for g in groups]
    dpi = 100
    width_px = max(b.shape[1] for b in blocks) * scale
    label_px, header_px, margin_px = 26, 22 * (header.count('\n') + 1) + 16, 12
    heights = [b.shape[0] * scale for b in blocks]
    total_px = header_px + sum(h + label_px for h in heights) + margin_px
    fig_w = width_px + 2 * margin_px
    fig = Figure(figsize=(fig_w / dpi, total_px / dpi), dpi=dpi)
    fig.text(margin_px / fig_w, 1 - 8 / total_px, header, va='top', ha='left', fontsize=10)
    images, y = [], total_px - header_px
    for block, h, title in zip(blocks, heights, titles):
        y -= label_px
        ax = fig.add_axes((margin_px / fig_w, (y - h) / total_px, block.shape[1] * scale / fig_w, h / total_px))
        images.append(ax.imshow(block, interpolation='nearest', aspect='auto'))
        ax.set_axis_off()
        ax.set_title(title, loc='left', fontsize=9, pad=4)
        y -= h
    return fig, images, cols


def plot_kernels(layer: FirstLayer, cfs: Sequence[np.ndarray], stats: Sequence[Dict[str, Any]], header: str,
                 path: Path, bgr: bool, sort: bool) -> None:
    """Figure-3-style picture: kernels in a grid, one block per tower, labelled, optionally sorted."""
    orders = display_order(cfs, sort)
    titles = []
    for i, (g, s) in enumerate(zip(layer.groups, stats)):
        m = 'n/a' if s['mean'] is None else f"{s['mean']:.2f}"
        above = '' if s['fraction_above_0_3'] is None else f", {s['fraction_above_0_3']:.0%} above {COLOUR_THRESHOLD}"
        titles.append(f'tower {i}: {len(g)} kernels {g.shape[2]}x{g.shape[3]}, chromatic fraction mean {m}{above}'
                      + (' (sorted, greyest first)' if sort else ''))
    fig, _, _ = _kernel_figure([g[o] for g, o in zip(layer.groups, orders)], titles, header, bgr)
    _save(fig, path)


def plot_chromatic_fraction(cfs: Sequence[np.ndarray], stats: Sequence[Dict[str, Any]], title: str, path: Path,
                            seed: int = SEED) -> None:
    """Strip plot of each kernel's chromatic fraction per tower, with box, mean and the 0.3 threshold."""
    from matplotlib.figure import Figure
    n = len(cfs)
    fig = Figure(figsize=(max(4.5, 1.3 * n + 2.5), 4.6), dpi=100)
    ax = fig.add_subplot()
    rng = np.random.default_rng(seed)
    colours = ['#4c72b0', '#dd8452', '#55a868', '#c44e52', '#8172b3', '#937860']
    data = [c[np.isfinite(c)] for c in cfs]
    ax.boxplot([d if len(d) else [np.nan] for d in data], positions=range(n), widths=0.5, showfliers=False,
               medianprops={'color': 'black'}, boxprops={'color': '0.5'}, whiskerprops={'color': '0.5'},
               capprops={'color': '0.5'})
    for i, d in enumerate(data):
        ax.scatter(i + rng.uniform(-0.18, 0.18, len(d)), d, s=14, alpha=0.75, color=colours[i % len(colours)],
                   edgecolors='none', zorder=3)
        if stats[i]['mean'] is not None:
            ax.scatter([i], [stats[i]['mean']], marker='D', s=40, color='black', zorder=4,
                       label='tower mean' if i == 0 else None)
    ax.axhline(COLOUR_THRESHOLD, ls='--', lw=1, color='0.4', label=f'{COLOUR_THRESHOLD} threshold')
    ax.set_xticks(range(n), [f'tower {i}\n(n={len(c)})' for i, c in enumerate(cfs)])
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlim(-0.6, n - 0.4)
    ax.set_ylabel('chromatic fraction  (0 grey, 1 no luminance)')
    ax.set_title(_wrap(title, 70), fontsize=9)
    ax.legend(loc='upper left', fontsize=8, framealpha=0.8)
    ax.grid(axis='y', alpha=0.3)
    fig.tight_layout()
    _save(fig, path)


def _wrap(text: str, width: int) -> str:
    """Each line of ``text`` wrapped to ``width``, never breaking 'p < 1e-4' or 'p = 0.62'."""
    keep = re.sub(r'\bp ([<=]) ', 'p\u00a0\\1\u00a0', text)
    return '\n'.join(textwrap.fill(line, width) for line in keep.split('\n')).replace('\u00a0', ' ')


def _partial(path: Path) -> Path:
    return path.with_name(f'.{path.stem}.partial{path.suffix}')


def _save(fig, path: Path) -> None:
    tmp = _partial(path)
    fig.savefig(tmp, format=path.suffix.lstrip('.'))
    os.replace(tmp, path)


def _write_json(obj: Dict[str, Any], path: Path) -> None:
    tmp = _partial(path)
    tmp.write_text(json.dumps(obj, indent=1, allow_nan=False) + '\n')
    os.replace(tmp, path)


def _clean(x: Any) -> Any:
    """JSON-safe copy: NaN/inf become None, numpy scalars and arrays become Python numbers and lists."""
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, np.ndarray):
        return _clean(x.tolist())
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


# ----------------------------------------------------------------------------------------------- commands

def _progress(i: int, n: int, what: str) -> None:
    if sys.stderr.isatty():
        end = '\n' if i == n else ''
        print(f'\r{what}: {i}/{n}', end=end, file=sys.stderr, flush=True)


def _check_out(out: Path, names: Sequence[str], force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise KernelsError(f'--out {out} is a file, not a folder; choose another --out')
    existing = [n for n in names if (out / n).exists()]
    if existing and not force:
        raise KernelsError(f'{out} already holds a report ({", ".join(existing)}); pass --force to overwrite it '
                           'or choose another --out')


def _make_out(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise KernelsError(f'cannot create --out {out} ({e.strerror or _one_line(e)})') from None


def inspect_file(path: Path, out: Optional[Path] = None, groups: Optional[int] = None, bgr: bool = False,
                 sort: bool = False, force: bool = False, permutations: int = PERMUTATIONS, seed: int = SEED,
                 alpha: float = ALPHA, quiet: bool = False) -> Dict[str, Any]:
    """Measure conv1 of ``path``, write report.json and the two figures into ``out``; return the report."""
    path = Path(path)
    out = Path(out) if out is not None else path.parent / f'{path.stem}_kernels'
    _check_out(out, REPORT_FILES, force)
    layer = read_first_layer(path, groups)
    order = 'BGR' if bgr else layer.channel_order
    cfs = [chromatic_fraction(g) for g in layer.groups]
    stats = [tower_stats(c) for c in cfs]
    if any(np.isnan(c).any() for c in cfs):
        layer.warnings.append(f'{sum(int(np.isnan(c).sum()) for c in cfs)} all-zero kernel(s) have no chromatic '
                              'fraction; left out of the statistics')
    test = compare_towers(cfs, permutations, seed, alpha)
    groups_out = []
    start = 0
    for i, (g, c, s, label) in enumerate(zip(layer.groups, cfs, stats, layer.labels)):
        orient, freq = luminance_orientation_frequency(g)
        groups_out.append({'index': i, 'kernels': len(g), 'first_kernel': start, 'source': label,
                           'kernel_shape': list(g.shape[1:]), **s, 'chromatic_fraction': c,
                           'luminance_orientation_deg': orient, 'luminance_frequency': freq})
        start += len(g)
    report = {
        'tool': PROG, 'file': str(path), 'layout': layer.layout, 'grouping': layer.grouping,
        'channel_order': order, 'colour_threshold': COLOUR_THRESHOLD, 'alpha': alpha,
        'num_kernels': start, 'num_groups': len(layer.groups), 'groups': groups_out, **test,
        'figures': {'kernels': 'kernels.png', 'chromatic_fraction': 'chromatic_fraction.png'},
        'warnings': layer.warnings,
    }
    report = _clean(report)
    how = {'towers': 'one Conv per tower', 'grouped': 'one Conv split into groups', 'single': 'one Conv, no split'}
    n = len(layer.groups)
    header = (f'{path.name}: conv1, {start} kernels in {n} tower{"s" if n > 1 else ""} ({how[layer.layout]}), '
              f'shown as {"BGR weights flipped to RGB" if order == "BGR" else "RGB"}\n{test["verdict"]}')
    _make_out(out)
    try:
        plot_kernels(layer, cfs, stats, _wrap(header, 120), out / 'kernels.png',
                     bgr=order == 'BGR', sort=sort)
        plot_chromatic_fraction(cfs, stats, f'{path.name}\n{test["verdict"]}', out / 'chromatic_fraction.png', seed)
        _write_json(report, out / 'report.json')
    except OSError as e:
        raise KernelsError(f'cannot write into {out} ({e.strerror or _one_line(e)})') from None
    for w in report['warnings']:
        print(f'{PROG}: warning: {w}', file=sys.stderr)
    if not quiet:
        _print_summary(report, out)
    return report


def _print_summary(report: Dict[str, Any], out: Path) -> None:
    n = report['num_groups']
    print(f'{report["file"]}: conv1 = {report["num_kernels"]} kernels in {n} tower{"s" if n > 1 else ""}: '
          f'{report["grouping"]}')
    print(f'  {"tower":<8}{"kernels":>8}{"mean":>8}{"median":>8}{"> 0.3":>8}')
    fmt = lambda v, spec: 'n/a' if v is None else format(v, spec)
    for g in report['groups']:
        print(f'  {g["index"]:<8}{g["kernels"]:>8}{fmt(g["mean"], ".3f"):>8}{fmt(g["median"], ".3f"):>8}'
              f'{fmt(g["fraction_above_0_3"], ".0%"):>8}')
    if report['p_value'] is not None:
        d = 'n/a (no spread within towers)' if report['effect_size'] is None else f'{report["effect_size"]:.2f}'
        print(f'  difference of means {report["difference_of_means"]:+.3f}, {report["effect_size_measure"]}: {d}, '
              f'{report["p_value_text"]}')
    print(f'verdict: {report["verdict"]}')
    print(f'wrote {out / "report.json"}, kernels.png, chromatic_fraction.png')


def _read_npy(path: Path, shape: Optional[Tuple[int, ...]]) -> np.ndarray:
    """A float .npy array, its header checked (shape, size, dtype) before anything is allocated."""
    try:
        with open(path, 'rb') as f:
            version = np.lib.format.read_magic(f)
            reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            arr_shape, _, dtype = reader(f)
            header_end = f.tell()
    except Exception as e:
        raise KernelsError(f'{path} is not a .npy array ({_one_line(e)})') from None
    if dtype.kind != 'f':
        raise KernelsError(f'{path} holds {dtype}, not floating-point kernels')
    if len(arr_shape) != 4 or arr_shape[1] != 3 or (shape is not None and tuple(arr_shape) != shape):
        want = 'kernels (K, 3, h, w)' if shape is None else f'{shape} like the other epochs'
        raise KernelsError(f'{path} has shape {arr_shape}; expected {want}')
    if math.prod(arr_shape) > MAX_ELEMENTS:
        raise KernelsError(f'{path} declares shape {arr_shape}: refused as an absurd size')
    if path.stat().st_size < header_end + math.prod(arr_shape) * dtype.itemsize:
        raise KernelsError(f'{path} is truncated; the training run did not finish writing it')
    try:
        return np.load(path, allow_pickle=False).astype(np.float64)
    except Exception as e:
        raise KernelsError(f'cannot read {path} ({_one_line(e)})') from None


def read_run(run_dir: Path) -> Tuple[List[int], List[np.ndarray], Dict[str, Any]]:
    """(epochs, conv1 per epoch as (K, 3, h, w), towers.json) from a run folder's conv1/ snapshots."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise KernelsError(f'{run_dir}: no such folder; give a training run folder holding conv1/epoch_*.npy')
    folder = run_dir / 'conv1' if (run_dir / 'conv1').is_dir() else run_dir
    meta_path = folder / 'towers.json'
    if not meta_path.is_file():
        raise KernelsError(f'{folder} has no towers.json: not a training run with conv1 snapshots')
    try:
        meta = json.loads(meta_path.read_text())
        counts = [int(c) for c in meta['kernels_per_tower']]
        num = int(meta.get('num_towers', len(counts)))
        order = str(meta.get('channel_order', 'RGB')).upper()
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as e:
        raise KernelsError(f'{meta_path} is not valid ({_one_line(e)}); expected '
                           '{"num_towers": N, "kernels_per_tower": [...], "channel_order": "RGB"}') from None
    if num != len(counts) or num < 1 or min(counts) < 1:
        raise KernelsError(f'{meta_path}: num_towers={num} does not match kernels_per_tower={counts}')
    if order not in ('RGB', 'BGR'):
        raise KernelsError(f'{meta_path}: channel_order {order!r} is neither RGB nor BGR')
    files = sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := re.fullmatch(r'epoch_(\d+)\.npy', p.name)))
    if not files:
        raise KernelsError(f'{folder} has no epoch_NNNN.npy snapshots')
    shape: Optional[Tuple[int, ...]] = None
    arrays = []
    for i, (_, p) in enumerate(files, 1):
        arrays.append(_read_npy(p, shape))
        shape = arrays[-1].shape
        if shape[0] != sum(counts):
            raise KernelsError(f'{p} holds {shape[0]} kernels but towers.json says {counts} (sum {sum(counts)})')
        _progress(i, len(files), 'reading snapshots')
    return [e for e, _ in files], arrays, {'num_towers': num, 'kernels_per_tower': counts, 'channel_order': order}


def evolution(run_dir: Path, out: Optional[Path] = None, bgr: bool = False, sort: bool = False, force: bool = False,
              permutations: int = PERMUTATIONS, seed: int = SEED, alpha: float = ALPHA, fps: float = 4.0,
              quiet: bool = False) -> Dict[str, Any]:
    """Animated GIF of conv1 across epochs, a plot of each tower's mean chromatic fraction, evolution.json."""
    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir / 'kernel_evolution'
    _check_out(out, EVOLUTION_FILES, force)
    epochs, arrays, meta = read_run(run_dir)
    counts = meta['kernels_per_tower']
    order = 'BGR' if bgr else meta['channel_order']
    per_epoch = []
    for i, w in enumerate(arrays, 1):
        cfs = [chromatic_fraction(g) for g in _split(w, counts)]
        per_epoch.append((cfs, [tower_stats(c) for c in cfs], compare_towers(cfs, permutations, seed, alpha)))
        _progress(i, len(arrays), 'measuring epochs')
    towers = [{'index': t, 'kernels': counts[t],
               **{k: [s[1][t][k] for s in per_epoch] for k in ('mean', 'median', 'fraction_above_0_3')},
               'q25': [float(np.nanpercentile(s[0][t], 25)) for s in per_epoch],
               'q75': [float(np.nanpercentile(s[0][t], 75)) for s in per_epoch],
               'chromatic_fraction_final': per_epoch[-1][0][t]} for t in range(len(counts))]
    last = per_epoch[-1][2]
    report = _clean({
        'tool': PROG, 'run_dir': str(run_dir), 'epochs': epochs, **meta, 'channel_order': order,
        'colour_threshold': COLOUR_THRESHOLD, 'alpha': alpha, 'towers': towers,
        'difference_of_means': [s[2]['difference_of_means'] for s in per_epoch],
        'p_value': [s[2]['p_value'] for s in per_epoch], 'effect_size': [s[2]['effect_size'] for s in per_epoch],
        'effect_size_measure': last['effect_size_measure'], 'test': last['test'], 'permutations': permutations,
        'verdict': [s[2]['verdict'] for s in per_epoch], 'final_verdict': last['verdict'],
        'figures': {'animation': 'evolution.gif', 'plot': 'evolution.png'},
    })
    _make_out(out)
    try:
        _evolution_gif(epochs, arrays, counts, per_epoch, out / 'evolution.gif', order == 'BGR', sort, fps, run_dir.name)
        _evolution_plot(report, out / 'evolution.png', run_dir.name)
        _write_json(report, out / 'evolution.json')
    except OSError as e:
        raise KernelsError(f'cannot write into {out} ({e.strerror or _one_line(e)})') from None
    if not quiet:
        print(f'{run_dir}: {len(epochs)} snapshots (epochs {epochs[0]}-{epochs[-1]}), towers of {counts} kernels')
        for t in towers:
            print(f'  tower {t["index"]}: mean chromatic fraction {t["mean"][0]:.3f} (epoch {epochs[0]}) -> '
                  f'{t["mean"][-1]:.3f} (epoch {epochs[-1]})')
        print(f'verdict at epoch {epochs[-1]}: {last["verdict"]}')
        print(f'wrote {out / "evolution.gif"}, evolution.png, evolution.json')
    return report


def _evolution_gif(epochs: Sequence[int], arrays: Sequence[np.ndarray], counts: Sequence[int], per_epoch: Sequence,
                   path: Path, bgr: bool, sort: bool, fps: float, name: str) -> None:
    from matplotlib.animation import PillowWriter
    orders = display_order(per_epoch[-1][0], sort)
    frames = list(range(len(epochs)))
    if len(frames) > MAX_GIF_FRAMES:
        frames = sorted(set(np.linspace(0, len(epochs) - 1, MAX_GIF_FRAMES).round().astype(int).tolist()))

    def content(i: int):
        groups = [g[o] for g, o in zip(_split(arrays[i], counts), orders)]
        means = ', '.join(f'tower {t} {s["mean"]:.2f}' for t, s in enumerate(per_epoch[i][1]) if s['mean'] is not None)
        titles = [f'tower {t}: {len(g)} kernels' + (' (sorted by final chromatic fraction)' if sort else '')
                  for t, g in enumerate(groups)]
        return groups, titles, f'{name}: conv1 at epoch {epochs[i]}\nmean chromatic fraction: {means}'

    groups, titles, header = content(frames[0])
    fig, images, cols = _kernel_figure(groups, titles, header, bgr, scale=4)
    header_text = fig.texts[0]
    writer = PillowWriter(fps=fps)
    tmp = _partial(path)
    writer.setup(fig, str(tmp), dpi=fig.dpi)
    for n, i in enumerate(frames, 1):
        groups, _, header = content(i)
        for im, g in zip(images, groups):
            im.set_data(mosaic(kernel_tiles(g, bgr), cols))
        header_text.set_text(header)
        for _ in range(1 if i != frames[-1] else max(1, int(fps * 2))):  # hold the last frame ~2 s
            writer.grab_frame()
        _progress(n, len(frames), 'drawing frames')
    writer.finish()
    os.replace(tmp, path)


def _evolution_plot(report: Dict[str, Any], path: Path, name: str) -> None:
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator
    epochs = report['epochs']
    has_p = any(p is not None for p in report['p_value'])
    fig = Figure(figsize=(7.5, 6.2 if has_p else 4.4), dpi=100)
    axes = fig.subplots(2, 1, sharex=True, gridspec_kw={'height_ratios': [3, 1.3]}) if has_p else [fig.add_subplot()]
    ax = axes[0]
    for t in report['towers']:
        mean = np.array([np.nan if v is None else v for v in t['mean']], float)
        line, = ax.plot(epochs, mean, marker='o' if len(epochs) <= 30 else None, ms=3, label=f'tower {t["index"]} mean')
        ax.fill_between(epochs, t['q25'], t['q75'], color=line.get_color(), alpha=0.15, lw=0)
    ax.axhline(COLOUR_THRESHOLD, ls='--', lw=1, color='0.4', label=f'{COLOUR_THRESHOLD} threshold')
    ax.axhline(2 / 3, ls=':', lw=1, color='0.6', label='random kernels (2/3)')
    ax.set_ylim(-0.03, 1.03)
    ax.set_ylabel('chromatic fraction (band: quartiles)')
    ax.set_title(_wrap(f'{name}, epoch {epochs[-1]}\n{report["final_verdict"]}', 90), fontsize=9)
    ax.legend(fontsize=8, loc='best', framealpha=0.8)
    ax.grid(alpha=0.3)
    if has_p:
        ax2 = axes[1]
        ax2.semilogy(epochs, [np.nan if p is None else p for p in report['p_value']], color='black', lw=1,
                     marker='o' if len(epochs) <= 30 else None, ms=3)
        ax2.axhline(report['alpha'], ls='--', lw=1, color='tab:red', label=f'alpha {report["alpha"]}')
        ax2.axhline(1 / (report['permutations'] + 1), ls=':', lw=1, color='0.5', label='smallest p this test can give')
        ax2.set_ylim(1e-5, 1.5)
        ax2.set_ylabel('permutation p')
        ax2.legend(fontsize=8, loc='lower left')
        ax2.grid(alpha=0.3)
    axes[-1].set_xlabel('epoch')
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    _save(fig, path)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line on stderr via main(), not argparse's usage + error
        raise KernelsError(f'{message} (see --help)')


def build_parser() -> argparse.ArgumentParser:
    """The ``kernels`` subcommand's argument parser."""
    parser = _Parser(
        prog=PROG,
        description=textwrap.fill(
            'Measure how colour-specific the first-layer (conv1) kernels of each tower are, from an ONNX file (any '
            'exporter: one Conv per tower, or one Conv split by the group of the next Conv as in Caffe) or a '
            '.safetensors state_dict. Per kernel: chromatic fraction 1 - ||PW||^2/||W||^2 (0 grey, 1 no luminance); '
            'per tower: mean, median, fraction above 0.3; between towers: permutation test and effect size, and a '
            'one-line verdict. Writes report.json, kernels.png (Figure-3 style) and chromatic_fraction.png into '
            '--out. With --evolution RUN_DIR it reads a training run\'s conv1/epoch_NNNN.npy snapshots instead and '
            'writes evolution.gif, evolution.png, evolution.json. Bad input: one line on stderr, exit status 2.', 100),
        epilog='examples:\n'
               '  timm-alexnet-split kernels exports/alexnet_split_2.onnx --sort\n'
               '  timm-alexnet-split kernels bvlcalexnet-12.onnx --bgr --out bvlc_kernels\n'
               '  timm-alexnet-split kernels --evolution runs/demo --out runs/demo/kernel_evolution',
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('file', nargs='?', type=Path, help='model: .onnx, or .safetensors holding conv1 weights')
    parser.add_argument('--evolution', type=Path, metavar='RUN_DIR',
                        help='training run folder with conv1/epoch_NNNN.npy and conv1/towers.json (instead of FILE)')
    parser.add_argument('--out', type=Path, metavar='DIR', help='output folder (default: <stem>_kernels/ next to FILE, '
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
        if args.evolution is not None:
            if args.groups is not None:
                raise KernelsError('--groups applies to FILE; with --evolution the towers come from conv1/towers.json')
            evolution(args.evolution, args.out, args.bgr, args.sort, args.force, args.permutations, args.seed,
                      args.alpha, quiet=args.quiet)
        else:
            inspect_file(args.file, args.out, args.groups, args.bgr, args.sort, args.force, args.permutations,
                         args.seed, args.alpha, args.quiet)
    except KernelsError as e:
        print(f'{PROG}: error: {" ".join(str(e).split())}', file=sys.stderr)
        return 2
    except SystemExit as e:  # --help
        return e.code if isinstance(e.code, int) else 0
    return 0


if __name__ == '__main__':
    sys.exit(main())
