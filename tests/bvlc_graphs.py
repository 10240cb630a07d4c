"""Full-size graphs shaped like the ONNX Model Zoo's bvlcalexnet, built with onnx.helper (random weights).

The Zoo's file cannot be downloaded in tests, so :func:`bvlc_model` rebuilds its topology as the
Caffe -> Caffe2 -> ONNX converter wrote it: input ``data_0`` [1, 3, 224, 224] (BGR, mean removed),
an ungrouped conv1 [96, 3, 11, 11] stride 4 without padding, Relu, LRN (size 5, alpha 1e-4,
beta 0.75, bias 1), MaxPool 3/2, conv2 group 2 pad 2, Relu, LRN, MaxPool, conv3, conv4 group 2,
conv5 group 2, MaxPool, then fc6..fc8 as Gemm (transB=1) after a Reshape (or Flatten), with Relu and
Dropout between them and a Softmax at the end. Caffe rounds pooling sizes up; the converter
wrote that as extra padding at the end of each MaxPool (``pads`` = out * stride - 1 + k - in).

Options give the variants the tests need: old opsets (3, 6: Reshape's ``shape`` attribute,
Gemm's ``broadcast``, Dropout's ``is_test``; IR 3 lists the initializers among the inputs),
initializer and tensor names that say nothing (or lie) about the layer, a layer left out, and
other widths or pads.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

CONVS = {  # name: (weight shape, group, stride, pad)
    'conv1': ((96, 3, 11, 11), 1, 4, 0),
    'conv2': ((256, 48, 5, 5), 2, 1, 2),
    'conv3': ((384, 256, 3, 3), 1, 1, 1),
    'conv4': ((384, 192, 3, 3), 2, 1, 1),
    'conv5': ((256, 192, 3, 3), 2, 1, 1),
}
FCS = {'fc6': (4096, 9216), 'fc7': (4096, 4096), 'fc8': (1000, 4096)}
LAYERS = tuple(CONVS) + tuple(FCS)
LRN = dict(size=5, alpha=1e-4, beta=0.75, bias=1.0)
IR_FOR_OPSET = {3: 3, 6: 3, 7: 3, 8: 3, 9: 4, 10: 5, 11: 6, 12: 7}  # what the converters of the time wrote
FC8_STD = 1e-3  # with He-scaled layers below, softmax of random images spreads over a few classes


def caffe_pool_pads(size: int, kernel: int = 3, stride: int = 2) -> Tuple[int, int]:
    """(output size with Caffe's rounding up, end pad the Caffe2 -> ONNX converter wrote for it)."""
    out = -(-(size - kernel) // stride) + 1
    return out, out * stride - 1 + kernel - size


def bvlc_weights(seed: int = 0, num_classes: int = 1000) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """Random (weight, bias) per layer in Caffe's layout (conv1 BGR, fc weights [out, in]); He-scaled."""
    rng = np.random.default_rng(seed)
    shapes = {**{k: v[0] for k, v in CONVS.items()}, **FCS, 'fc8': (num_classes, 4096)}
    out = {}
    for name, shape in shapes.items():
        fan_in = int(np.prod(shape[1:]))
        std = FC8_STD if name == 'fc8' else np.sqrt(2.0 / fan_in)
        w = rng.standard_normal(shape, dtype=np.float32) * np.float32(std)
        b = rng.standard_normal(shape[0], dtype=np.float32) * np.float32(0.1)
        out[name] = (w, b)
    return out


def _names(style: str) -> Dict[str, str]:
    """Initializer names per layer: the Zoo's, opaque ones, or the Zoo's names on the wrong layers."""
    zoo = {f'{layer}_{p}': f'{layer}_{p}_0' for layer in LAYERS for p in 'wb'}
    if style == 'zoo':
        return zoo
    if style == 'opaque':
        return {k: f'param_{i:02d}' for i, k in enumerate(zoo)}
    if style == 'misleading':  # conv1's weights called fc8_w_0, conv2's fc7_w_0, ...
        rev = list(reversed(LAYERS))
        return {f'{layer}_{p}': f'{rev[i]}_{p}_0' for i, layer in enumerate(LAYERS) for p in 'wb'}
    raise ValueError(f'unknown names style {style!r}')


def bvlc_model(
        opset: int = 12,
        seed: int = 0,
        names: str = 'zoo',
        flatten: str = 'reshape',
        input_size: int = 224,
        num_classes: int = 1000,
        omit: Sequence[str] = (),
        shapes: Optional[Dict[str, Tuple[int, ...]]] = None,
        pool_pads: Optional[Sequence[int]] = None,
        softmax: bool = True,
        weights: Optional[Dict[str, Tuple[np.ndarray, np.ndarray]]] = None,
) -> onnx.ModelProto:
    """A bvlcalexnet-like model.

    Args:
        opset: 3, 6 (old operator forms), 7..12.
        seed: random weights' seed (ignored when ``weights`` is given).
        names: 'zoo' (conv1_w_0 ... fc8_b_0, data_0, prob_1), 'opaque' (param_00 ..., t0 ...) or
            'misleading' (the Zoo's names on the wrong layers), all with unnamed nodes.
        flatten: what feeds fc6: 'reshape' (to [1, 9216], as the Zoo's), 'flatten' or 'none'
            (Gemm straight on the 4-D map: not valid ONNX, a broken graph for the tests).
        input_size: the square input the graph is built (and its pool pads computed) for.
        num_classes: fc8 outputs.
        omit: layers or nodes to leave out ('conv4', 'fc7', 'norm2', 'relu3', ...); the graph is then
            not AlexNet (and may not even run): for tests of the importer's refusal.
        shapes: override weight shapes per layer, e.g. {'conv1': (64, 3, 11, 11)}.
        pool_pads: end pads of pool1, pool2, pool5 instead of the converter's.
        softmax: end in Softmax (prob_1) rather than the logits.
        weights: (weight, bias) per layer instead of random ones.
    """
    weights = dict(weights or bvlc_weights(seed, num_classes))
    for layer, shape in (shapes or {}).items():
        rng = np.random.default_rng(seed + 1)
        weights[layer] = (rng.standard_normal(shape, dtype=np.float32) * np.float32(0.01),
                          np.zeros(shape[0], np.float32))
    pnames = _names(names)
    counter = iter(range(10 ** 6))
    tname = (lambda base: base) if names == 'zoo' else (lambda base: f't{next(counter)}')
    nodes = []
    # built in place: make_graph / make_model would copy the 244 MB of initializers twice more
    model = helper.make_model(helper.make_graph([], 'bvlc_alexnet' if names == 'zoo' else 'g', [], []),
                              opset_imports=[helper.make_opsetid('', opset)], producer_name='tests.bvlc_graphs')
    inits = model.graph.initializer

    def const(key: str, arr: np.ndarray) -> str:
        t = inits.add()
        t.name = pnames.get(key, key)
        t.data_type = helper.np_dtype_to_tensor_dtype(arr.dtype)
        t.dims.extend(arr.shape)
        t.raw_data = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder('<'), copy=False).tobytes()
        return t.name

    def node(op: str, inputs, out: str, **attrs) -> str:
        out = tname(out)
        nodes.append(helper.make_node(op, list(inputs), [out], **attrs))
        return out

    x = tname('data_0')
    data_name = x
    x = _convs(x, node, const, weights, omit, input_size, pool_pads)
    x = _flatten_and_fcs(x, node, const, weights, omit, flatten, opset)
    out_dim = weights['fc8'][0].shape[0]
    if softmax:
        x = node('Softmax', [x], 'prob_1')
    inputs = [helper.make_tensor_value_info(data_name, TensorProto.FLOAT, [1, 3, input_size, input_size])]
    ir = IR_FOR_OPSET.get(opset, 7)
    if ir < 4:  # IR 3: every initializer is also a graph input
        inputs += [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in inits]
    model.graph.node.extend(nodes)
    model.graph.input.extend(inputs)
    model.graph.output.append(helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, out_dim]))
    model.ir_version = ir
    return model


def _convs(x: str, node: Callable, const: Callable, weights: Dict[str, Tuple[np.ndarray, np.ndarray]],
           omit: Sequence[str], input_size: int, pool_pads: Optional[Sequence[int]]) -> str:
    """conv1..conv5 with their ReLU, LRN and max-pool nodes (as the Caffe converter wrote them); the last output."""
    size = input_size
    pads = list(pool_pads) if pool_pads is not None else None
    pool_i = 0
    for layer, (_, group, stride, pad) in CONVS.items():
        i = layer[-1]
        if layer in omit:
            continue
        w, b = weights[layer]
        x = node('Conv', [x, const(f'{layer}_w', w), const(f'{layer}_b', b)], f'{layer}_1',
                 kernel_shape=list(w.shape[2:]), strides=[stride, stride], pads=[pad] * 4,
                 dilations=[1, 1], group=group)
        size = (size + 2 * pad - w.shape[2]) // stride + 1
        if f'relu{i}' not in omit:
            x = node('Relu', [x], f'{layer}_2')
        if i in '12' and f'norm{i}' not in omit:
            x = node('LRN', [x], f'norm{i}_1', **LRN)
        if i in '125' and f'pool{i}' not in omit:
            out, end = caffe_pool_pads(size)
            if pads is not None:
                end = pads[pool_i]
                out = (size + end - 3) // 2 + 1
            pool_i += 1
            x = node('MaxPool', [x], f'pool{i}_1', kernel_shape=[3, 3], strides=[2, 2], pads=[0, 0, end, end])
            size = out
    return x


def _flatten_and_fcs(x: str, node: Callable, const: Callable, weights: Dict[str, Tuple[np.ndarray, np.ndarray]],
                     omit: Sequence[str], flatten: str, opset: int) -> str:
    """What feeds fc6 (``flatten``), then fc6..fc8 with their ReLU and Dropout nodes; the last output."""
    if flatten == 'reshape':
        if opset < 5:
            x = node('Reshape', [x], 'OC2_DUMMY_0', shape=[1, 9216])
        else:
            x = node('Reshape', [x, const('OC2_DUMMY_1', np.array([1, 9216], np.int64))], 'OC2_DUMMY_0')
    elif flatten == 'flatten':
        x = node('Flatten', [x], 'OC2_DUMMY_0', axis=1)
    elif flatten != 'none':
        raise ValueError(f'unknown flatten {flatten!r}')
    gemm_old = dict(broadcast=1) if opset < 7 else {}
    drop_old = dict(is_test=1, ratio=0.5) if opset < 7 else {}
    for layer in FCS:
        if layer in omit:
            continue
        w, b = weights[layer]
        x = node('Gemm', [x, const(f'{layer}_w', w), const(f'{layer}_b', b)], f'{layer}_1', transB=1, **gemm_old)
        if layer != 'fc8':
            x = node('Relu', [x], f'{layer}_2')
            x = node('Dropout', [x], f'{layer}_3', **drop_old)
    return x


def no_conv_model(opset: int = 12) -> onnx.ModelProto:
    """A valid ONNX model with no Conv: Flatten, Gemm, Softmax."""
    w = numpy_helper.from_array(np.ones((10, 12), np.float32), 'w')
    nodes = [helper.make_node('Flatten', ['x'], ['f']), helper.make_node('Gemm', ['f', 'w'], ['g'], transB=1),
             helper.make_node('Softmax', ['g'], ['y'])]
    graph = helper.make_graph(nodes, 'mlp', [helper.make_tensor_value_info('x', TensorProto.FLOAT, [1, 3, 2, 2])],
                              [helper.make_tensor_value_info('y', TensorProto.FLOAT, [1, 10])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', opset)])
    model.ir_version = IR_FOR_OPSET[opset]
    return model
