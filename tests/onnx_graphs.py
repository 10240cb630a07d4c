"""Small ONNX graphs with known first-layer kernels, built with onnx.helper (no torch).

Two layouts of a split AlexNet's first layers:

- Caffe style (``caffe_style_graph``): one ungrouped conv1 over the image, Relu, LRN, MaxPool,
  then conv2 with ``group=N``, as in the ONNX Model Zoo's bvlcalexnet;
- tower style (``tower_style_graph``): one Conv per tower, all reading the image input, each
  followed by its own Relu, LRN, MaxPool and conv2; the towers meet at conv3 (our export).

Kernel makers return float32 arrays (n, 3, size, size): ``grey_kernels`` (chromatic fraction near
0), ``colour_kernels`` (near 1), ``random_kernels`` (about 2/3, like an untrained layer).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

IR_VERSION = 10  # onnxruntime 1.31 refuses onnx 1.23's default (14)
OPSET = 17
_ANY4 = ['batch', 'channels', 'height', 'width']


def grey_kernels(n: int, size: int = 11, seed: int = 0, colour: float = 0.0,
                 freq: Tuple[float, float] = (0.1, 0.35)) -> np.ndarray:
    """Gabor-like gratings (frequency uniform in ``freq`` cycles/px), the same in R, G and B; ``colour`` adds up to
    that much per-channel noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    out = np.empty((n, 3, size, size), np.float32)
    for i in range(n):
        theta, f, phase = rng.uniform(0, np.pi), rng.uniform(*freq), rng.uniform(0, 2 * np.pi)
        u = xx * np.cos(theta) + yy * np.sin(theta)
        g = np.cos(2 * np.pi * f * u + phase) * np.exp(-(xx ** 2 + yy ** 2) / (2 * (size / 4) ** 2))
        out[i] = g[None] + rng.uniform(0, colour) * rng.standard_normal((3, size, size)) * np.abs(g).max()
    return 0.01 * out / np.abs(out).max(axis=(1, 2, 3), keepdims=True)


def colour_kernels(n: int, size: int = 11, seed: int = 1, luminance: float = 0.0) -> np.ndarray:
    """Colour-opponent blobs (zero channel mean); ``luminance`` adds a grey blob of up to that relative size."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    out = np.empty((n, 3, size, size), np.float32)
    for i in range(n):
        cy, cx = rng.uniform(-size / 6, size / 6, 2)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * rng.uniform(1.5, size / 3) ** 2))
        c = rng.standard_normal(3)
        c -= c.mean()
        c /= np.linalg.norm(c)
        out[i] = c[:, None, None] * blob + rng.uniform(0, luminance) * rng.choice([-1, 1]) * blob / np.sqrt(3)
    return 0.01 * out / np.abs(out).max(axis=(1, 2, 3), keepdims=True)


def random_kernels(n: int, size: int = 11, seed: int = 2, std: float = 0.01) -> np.ndarray:
    """N(0, std^2) kernels, as the paper initialises conv1."""
    return (std * np.random.default_rng(seed).standard_normal((n, 3, size, size))).astype(np.float32)


def _model(nodes, inputs, outputs, inits, metadata: Optional[Dict[str, str]], name: str) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', OPSET)], producer_name='tests.onnx_graphs')
    model.ir_version = IR_VERSION
    if metadata:
        helper.set_model_props(model, dict(metadata))
    onnx.checker.check_model(model)
    return model


def _image_input(name: str, channels: int = 3, size: int = 227) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ['batch', channels, size, size])


def _stem(x: str, w: np.ndarray, out_name: str, inits: list, names: Dict[str, str], group: int = 1, seed: int = 0,
          conv2_w: Optional[np.ndarray] = None) -> list:
    """conv1 (given weights), Relu, LRN, MaxPool, conv2 (``conv2_w`` or random weights, ``group``), Relu -> out_name.

    ``names`` maps conv1_w, conv1_b, conv2_w to initializer names and ``node`` to a node-name prefix ('' leaves
    the nodes unnamed, as in the Model Zoo's bvlcalexnet).
    """
    k = w.shape[0]
    if conv2_w is None:
        conv2_w = 0.01 * np.random.default_rng(seed).standard_normal((8 * group, k // group, 5, 5))
    conv2_w = np.asarray(conv2_w, np.float32)
    inits += [numpy_helper.from_array(np.asarray(w, np.float32), names['conv1_w']),
              numpy_helper.from_array(np.zeros(k, np.float32), names['conv1_b']),
              numpy_helper.from_array(conv2_w, names['conv2_w'])]
    p = names['node']
    v = p or out_name + '_'
    node = (lambda layer: f'{p}{layer}') if p else (lambda layer: '')
    return [
        helper.make_node('Conv', [x, names['conv1_w'], names['conv1_b']], [f'{v}conv1'], name=node('conv1/Conv'),
                         kernel_shape=list(w.shape[2:]), strides=[4, 4]),
        helper.make_node('Relu', [f'{v}conv1'], [f'{v}act1'], name=node('act1/Relu')),
        helper.make_node('LRN', [f'{v}act1'], [f'{v}norm1'], name=node('norm1/LRN'), size=5, alpha=1e-4, beta=0.75, bias=2.0),
        helper.make_node('MaxPool', [f'{v}norm1'], [f'{v}pool1'], name=node('pool1/MaxPool'),
                         kernel_shape=[3, 3], strides=[2, 2]),
        helper.make_node('Conv', [f'{v}pool1', names['conv2_w']], [f'{v}conv2'], name=node('conv2/Conv'),
                         kernel_shape=list(conv2_w.shape[2:]), pads=[2, 2, 2, 2], group=group),
        helper.make_node('Relu', [f'{v}conv2'], [out_name], name=node('act2/Relu')),
    ]


def caffe_style_graph(conv1_w: np.ndarray, groups: int, metadata: Optional[Dict[str, str]] = None,
                      input_name: str = 'data_0', conv2_w: Optional[np.ndarray] = None) -> onnx.ModelProto:
    """One ungrouped conv1 whose output channels are split by conv2's ``group=groups`` (bvlcalexnet-like);
    ``conv2_w`` (units, channels per group, 5, 5) sets conv2's weights (default: random)."""
    inits: list = []
    names = {'conv1_w': 'conv1_w_0', 'conv1_b': 'conv1_b_0', 'conv2_w': 'conv2_w_0', 'node': ''}
    nodes = _stem(input_name, conv1_w, 'conv2_out', inits, names, group=groups, conv2_w=conv2_w)
    return _model(nodes, [_image_input(input_name)],
                  [helper.make_tensor_value_info('conv2_out', TensorProto.FLOAT, _ANY4)], inits, metadata, 'caffe_style')


def tower_style_graph(conv1_ws: Sequence[np.ndarray], metadata: Optional[Dict[str, str]] = None,
                      input_name: str = 'input', conv2_ws: Optional[Sequence[np.ndarray]] = None) -> onnx.ModelProto:
    """One Conv per tower (initializers ``towers.{i}.conv1.weight``), all reading the image; towers meet at conv3."""
    inits: list = []
    nodes: list = []
    for i, w in enumerate(conv1_ws):
        names = {'conv1_w': f'towers.{i}.conv1.weight', 'conv1_b': f'towers.{i}.conv1.bias',
                 'conv2_w': f'towers.{i}.conv2.weight', 'node': f'/towers.{i}/'}
        nodes += _stem(input_name, w, f'tower{i}_conv2', inits, names, seed=i,
                       conv2_w=None if conv2_ws is None else conv2_ws[i])
    n = len(conv1_ws)
    width = sum(t.dims[0] for t in inits if t.name.endswith('conv2.weight'))
    inits.append(numpy_helper.from_array(np.zeros((8, width, 3, 3), np.float32), 'conv3.weight'))
    nodes += [helper.make_node('Concat', [f'tower{i}_conv2' for i in range(n)], ['cat'], name='/Concat', axis=1),
              helper.make_node('Conv', ['cat', 'conv3.weight'], ['conv3'], name='/conv3/Conv', kernel_shape=[3, 3], pads=[1] * 4)]
    return _model(nodes, [_image_input(input_name)], [helper.make_tensor_value_info('conv3', TensorProto.FLOAT, _ANY4)],
                  inits, metadata, 'tower_style')


def tower_metadata(model: onnx.ModelProto, channel_order: str = 'RGB') -> Dict[str, str]:
    """The metadata our exporter writes for a tower-style graph: ``num_towers``, ``conv1_nodes``, ``channel_order``."""
    convs = [n.name for n in model.graph.node if n.op_type == 'Conv' and n.name.endswith('/conv1/Conv')]
    return {'num_towers': str(len(convs)), 'conv1_nodes': json.dumps(convs), 'channel_order': channel_order}


def no_conv_graph() -> onnx.ModelProto:
    """A valid model with no Conv at all."""
    nodes = [helper.make_node('Relu', ['x'], ['y'], name='relu')]
    return _model(nodes, [_image_input('x')], [helper.make_tensor_value_info('y', TensorProto.FLOAT, _ANY4)], [], None, 'no_conv')


def grey_input_graph(n: int = 8) -> onnx.ModelProto:
    """A first Conv that sees one input channel (a greyscale network)."""
    w = np.ones((n, 1, 11, 11), np.float32)
    inits = [numpy_helper.from_array(w, 'conv1.weight')]
    nodes = [helper.make_node('Conv', ['x', 'conv1.weight'], ['y'], name='conv1', kernel_shape=[11, 11], strides=[4, 4])]
    return _model(nodes, [_image_input('x', channels=1)], [helper.make_tensor_value_info('y', TensorProto.FLOAT, _ANY4)],
                  inits, None, 'grey_input')


def save(model: onnx.ModelProto, path: Path) -> Path:
    """Write ``model`` to ``path`` (all tensors inside the file) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path


def move_to_external(model: onnx.ModelProto, tensor_name: str, location: str, data_path: Optional[Path] = None,
                     length: Optional[int] = None) -> onnx.ModelProto:
    """Mark initializer ``tensor_name`` as stored in external file ``location`` (written to ``data_path`` if given)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    t = next(t for t in model.graph.initializer if t.name == tensor_name)
    raw = numpy_helper.to_array(t).tobytes()
    if data_path is not None:
        Path(data_path).write_bytes(raw)
    t.ClearField('raw_data')
    t.ClearField('float_data')
    t.data_location = TensorProto.EXTERNAL
    entries = {'location': location, 'offset': '0', 'length': str(len(raw) if length is None else length)}
    for key, value in entries.items():
        t.external_data.add(key=key, value=value)
    return model


def with_initializer(model: onnx.ModelProto, name: str, edit) -> onnx.ModelProto:
    """A copy of ``model`` whose initializer ``name`` was changed in place by ``edit(tensor)``."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    edit(next(t for t in model.graph.initializer if t.name == name))
    return model


def _absurd_shape(t: TensorProto) -> None:
    t.ClearField('dims')
    t.dims.extend([2 ** 20, 3, 2 ** 10, 2 ** 10])


def _short_raw_data(t: TensorProto) -> None:
    t.raw_data = t.raw_data[:-4]


def hostile_files(model: onnx.ModelProto, tensor_name: str, tmp: Path) -> Dict[str, Path]:
    """Hostile or broken copies of ``model`` under ``tmp`` (initializer ``tensor_name`` tampered with), by name.

    External data outside the model's folder ('traversal': ``../``, 'absolute', 'symlink': a link leading out),
    missing or too short ('missing_data', 'short_data', 'length': a declared length that does not fit the shape),
    a declared shape of 2**41 elements ('absurd'), raw data shorter than the shape ('raw_size'). The models lie in
    ``tmp / 'model'``; ``tmp / 'secret.bin'`` holds the tensor's bytes (outside that folder).
    """
    sub = tmp / 'model'
    sub.mkdir(parents=True, exist_ok=True)
    t = next(t for t in model.graph.initializer if t.name == tensor_name)
    (tmp / 'secret.bin').write_bytes(numpy_helper.to_array(t).tobytes())
    os.symlink(tmp / 'secret.bin', sub / 'link.bin')
    (sub / 'short.bin').write_bytes(b'\0' * 100)
    external = {'traversal': ('../secret.bin', None), 'absolute': (str(tmp / 'secret.bin'), None),
                'symlink': ('link.bin', None), 'missing_data': ('nowhere.bin', None), 'short_data': ('short.bin', None),
                'length': ('short.bin', 100)}
    out = {name: save(move_to_external(model, tensor_name, loc, length=length), sub / f'{name}.onnx')
           for name, (loc, length) in external.items()}
    out['absurd'] = save(with_initializer(model, tensor_name, _absurd_shape), sub / 'absurd.onnx')
    out['raw_size'] = save(with_initializer(model, tensor_name, _short_raw_data), sub / 'raw_size.onnx')
    return out
