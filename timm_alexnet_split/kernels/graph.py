"""conv1 and conv2 of any CNN found in an ONNX graph by structure (the kernel tool's graph reading).

conv1: the Conv nodes with no Conv upstream that read a graph input. conv2: the Convs reached from conv1 through
ops that keep channels one to one (activation, normalisation, pooling; SiLU-like products of reached values;
not a residual Add through another Conv). A Caffe-style single conv1 is split into towers by the ``group`` of
conv2. Torch-free (onnx, numpy, the standard library), like every module of the kernel tool.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import onnx
from onnx import TensorProto

from ..errors import KernelsError
from ..onnx_graph import Graph, attr, tensor_array

# ops between conv1 and conv2 through which conv1's channels pass one to one (Caffe: Relu, LRN, MaxPool)
PASS_THROUGH = frozenset({
    'Relu', 'LeakyRelu', 'PRelu', 'Elu', 'Selu', 'Celu', 'Gelu', 'Clip', 'Sigmoid', 'HardSigmoid', 'Tanh', 'Softplus',
    'HardSwish', 'Mish', 'LRN', 'MaxPool', 'AveragePool', 'LpPool', 'BatchNormalization', 'Dropout', 'Identity', 'Pad',
    'Cast', 'Add', 'Sub', 'Mul', 'Div', 'Pow', 'Sqrt', 'Reciprocal',
})
CONV_OPS = frozenset({'Conv', 'ConvTranspose', 'ConvInteger', 'QLinearConv'})
FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16}


@dataclass
class Conv2Part:
    """conv2 weights over a consecutive block of conv1's kernels (all of them, or one tower's)."""

    label: str                 # conv2's name(s)
    start: int                 # first conv1 kernel it reads (in the concatenated tower order)
    stop: int                  # one past the last
    weight: np.ndarray         # (units, stop - start, kh, kw) float64


def float_weights(t: TensorProto, base: Path) -> np.ndarray:
    """A checked weight tensor as float64; KernelsError for integer (quantised) weights."""
    if t.data_type not in FLOAT_TYPES:
        kind = TensorProto.DataType.Name(t.data_type) if t.data_type in TensorProto.DataType.values() else t.data_type
        raise KernelsError(f'conv1 weights {t.name or "(unnamed)"!r} are {kind}, not floating point (a quantised model?); '
                           'inspect the float model')
    return tensor_array(t, base).astype(np.float64)


class ConvGraph(Graph):
    """The graph index with conv1 and conv2 finding."""

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
        group = int(attr(conv, 'group', 1))
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
        groups = {int(attr(n, 'group', 1)) for n in found}
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
        return float_weights(t, self.base)

    def conv2_parts(self, conv: onnx.NodeProto, start: int, k: int) -> Tuple[List[Conv2Part], Optional[str]]:
        """conv2 over conv1's ``k`` channels (from ``start``): whole when ungrouped, per group when grouped with at
        least two channels per group; else ([], the reason in one line)."""
        found = self.next_convs(conv)
        if not found:
            return [], 'no Conv reached from conv1 through activation/normalisation/pooling ops: no conv2 to analyse'
        groups = {int(attr(n, 'group', 1)) for n in found}
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
