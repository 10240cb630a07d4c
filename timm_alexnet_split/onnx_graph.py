"""Reading ONNX files that may be hostile, and walking their graphs: the one ONNX reader of the package.

Used by the kernel tool (kernels/), the importer (zoo.py) and the exporter's graph tidying (export.py).

- :func:`load_onnx` parses a file without its external data, then checks every tensor (initializers, sparse
  ones, Constant and subgraph attributes): no declared size above :data:`MAX_ELEMENTS` elements, stored bytes
  that match the declared shape, external data only from files inside the model's folder (no absolute paths,
  no ``..``, no links leading out) and long enough. Nothing is allocated before its size is checked.
  ``external=True`` then reads the external data into the model (the importer needs all weights).
- :func:`tensor_array` reads one checked tensor (its external data from inside the folder only).
- :class:`Graph` indexes a graph: nodes in order, producers, consumers, constants (initializers and Constant
  nodes, through Identity), inputs and outputs; :func:`attr` / :func:`attrs` read node attributes.

Bad input raises :class:`OnnxFileError` (a KernelsError, so the kernel tool reports it as its own; the importer
turns it into a UserError): one line that says what is wrong and what to do.

Torch-free: it imports onnx, numpy, the standard library and errors only, so the kernel tool runs as a plain
script without torch.
"""
from __future__ import annotations

import math
import re
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from .errors import KernelsError, one_line

__all__ = ['MAX_ELEMENTS', 'Graph', 'OnnxFileError', 'attr', 'attrs', 'check_tensor', 'default_opset', 'external_target',
           'graph_tensors', 'load_onnx', 'tensor_array']

MAX_ELEMENTS = 2 ** 31   # a declared tensor larger than this is refused, never allocated

BITS = {getattr(TensorProto, name): bits for name, bits in {
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


class OnnxFileError(KernelsError):
    """An ONNX file that cannot be read safely (corrupt, truncated, hostile); the message says what to do."""


# ---- checking a file ---------------------------------------------------------------------------------------
def check_file(path: Path, what: str) -> None:
    """OnnxFileError unless ``path`` is an existing file (``what``: 'an ONNX model', ...)."""
    if not path.exists():
        raise OnnxFileError(f'{path}: no such file; give the path of {what}')
    if not path.is_file():
        raise OnnxFileError(f'{path} is not a file; give the path of {what}')


def graph_tensors(graph: onnx.GraphProto) -> Iterator[TensorProto]:
    """Every tensor stored in ``graph``: initializers, sparse initializers, attribute tensors, subgraphs'."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for a in node.attribute:
            if a.HasField('t'):
                yield a.t
            yield from a.tensors
            if a.HasField('g'):
                yield from graph_tensors(a.g)
            for sub in a.graphs:
                yield from graph_tensors(sub)


def _unsafe_location(loc: str) -> bool:
    parts = re.split(r'[\\/]', loc)
    return ('\0' in loc or PurePosixPath(loc).is_absolute() or bool(PureWindowsPath(loc).drive)
            or loc.startswith(('/', '\\')) or '..' in parts)


def _offset_length(info: Dict[str, str], name: str) -> Tuple[int, Optional[int]]:
    try:
        offset = int(info.get('offset', '0'))
        length = int(info['length']) if 'length' in info else None
    except ValueError:
        raise OnnxFileError(f'tensor {name!r} has a non-numeric external data offset/length; the model is corrupt') from None
    if offset < 0 or (length is not None and length < 0):
        raise OnnxFileError(f'tensor {name!r} has a negative external data offset/length; the model is corrupt')
    return offset, length


def external_target(t: TensorProto, base: Path) -> Tuple[Path, int, Optional[int]]:
    """Validated (file, offset, length) of an external tensor; refuses locations outside ``base``."""
    info = {e.key: e.value for e in t.external_data}
    loc = info.get('location', '')
    name = t.name or '(unnamed)'
    if not loc:
        raise OnnxFileError(f'tensor {name!r} is marked as external data but names no file; the model is corrupt')
    if _unsafe_location(loc):
        raise OnnxFileError(f'tensor {name!r} points at external data {loc!r} outside the model\'s folder {base}: '
                            'refused (path traversal); keep external data files next to the model')
    target = (base / loc).resolve()
    if not target.is_relative_to(base.resolve()):
        raise OnnxFileError(f'external data {loc!r} of tensor {name!r} leads outside the model\'s folder {base} '
                            '(a link): refused (path traversal); copy the data next to the model')
    if not target.is_file():
        raise OnnxFileError(f'external data file {loc!r} of tensor {name!r} is missing from {base}; copy it next to the model')
    offset, length = _offset_length(info, name)
    return target, offset, length


def _declared_elements(t: TensorProto, name: str) -> int:
    dims = list(t.dims)
    if any(d < 0 for d in dims):
        raise OnnxFileError(f'tensor {name!r} declares a negative dimension {dims}; the model is corrupt')
    n = math.prod(dims)
    if n > MAX_ELEMENTS:
        raise OnnxFileError(f'tensor {name!r} declares shape {dims} = {n:,} elements (limit 2**31): refused as an '
                            'absurd size; the model is corrupt or hostile')
    return n


def _check_external(t: TensorProto, base: Path, name: str, nbytes: Optional[int]) -> None:
    target, offset, length = external_target(t, base)
    if nbytes is not None and length is not None and length != nbytes:
        raise OnnxFileError(f'tensor {name!r} declares {length:,} bytes of external data but its shape {list(t.dims)} '
                            f'needs {nbytes:,}; the model is corrupt')
    if nbytes is not None and offset + nbytes > target.stat().st_size:
        raise OnnxFileError(f'external data file {target.name!r} is too short for tensor {name!r} '
                            '(truncated?); copy it again')


def check_tensor(t: TensorProto, base: Path) -> None:
    """Refuse absurd declared sizes, data that does not match the shape, and external data outside ``base``."""
    name = t.name or '(unnamed)'
    n = _declared_elements(t, name)
    dims = list(t.dims)
    bits = BITS.get(t.data_type)
    nbytes = None if bits is None else (n * bits + 7) // 8
    if t.data_location == TensorProto.EXTERNAL:
        _check_external(t, base, name, nbytes)
    elif t.HasField('raw_data'):
        if nbytes is not None and len(t.raw_data) != nbytes:
            raise OnnxFileError(f'tensor {name!r} holds {len(t.raw_data):,} bytes but its shape {dims} needs {nbytes:,}; '
                                'the model is corrupt or truncated')
    elif t.data_type in _TYPED_FIELD:
        count = len(getattr(t, _TYPED_FIELD[t.data_type]))
        if count != n:
            raise OnnxFileError(f'tensor {name!r} holds {count:,} values but its shape {dims} needs {n:,}; '
                                'the model is corrupt or truncated')


# ---- loading ------------------------------------------------------------------------------------------------
def load_onnx(path: Path, external: bool = False) -> onnx.ModelProto:
    """Parse an ONNX file without its external data, then validate every tensor (sizes, external locations).

    ``external``: then read the (checked) external data into the model, so that it is complete in memory.
    """
    path = Path(path)
    check_file(path, 'an ONNX model')
    if path.stat().st_size == 0:
        raise OnnxFileError(f'{path} is empty: not an ONNX model; export or download it again')
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf raises DecodeError and friends
        raise OnnxFileError(f'{path} is not an ONNX model or is truncated ({one_line(e)}); '
                            'export or download it again') from None
    if model.ir_version <= 0 or not model.HasField('graph') or not model.opset_import:
        raise OnnxFileError(f'{path} is not an ONNX model or is truncated (no graph or opset); export or download it again')
    for t in graph_tensors(model.graph):
        check_tensor(t, path.parent)
    if external:
        for t in graph_tensors(model.graph):
            if t.data_location == TensorProto.EXTERNAL:
                _read_into(t, path.parent)
    return model


def _external_bytes(t: TensorProto, base: Path) -> bytes:
    target, offset, length = external_target(t, base)
    bits = BITS.get(t.data_type)
    nbytes = (math.prod(t.dims) * bits + 7) // 8 if bits is not None else length
    with open(target, 'rb') as f:
        f.seek(offset)
        return f.read(-1 if nbytes is None else nbytes)


def _read_into(t: TensorProto, base: Path) -> None:
    """Replace ``t``'s external reference by its bytes (checked before by :func:`check_tensor`)."""
    raw = _external_bytes(t, base)
    t.ClearField('external_data')
    t.data_location = TensorProto.DEFAULT
    t.raw_data = raw


def tensor_array(t: TensorProto, base: Path) -> np.ndarray:
    """A checked tensor as a numpy array of its own dtype (its external data read here, from inside ``base`` only)."""
    name = t.name or '(unnamed)'
    if t.data_location == TensorProto.EXTERNAL:
        copy = TensorProto()
        copy.CopyFrom(t)
        _read_into(copy, base)
        t = copy
    try:
        return np.asarray(numpy_helper.to_array(t))
    except Exception as e:
        raise OnnxFileError(f'cannot read tensor {name!r} ({one_line(e)}); the model is corrupt') from None


def default_opset(model: onnx.ModelProto) -> Optional[int]:
    """The model's ai.onnx opset, None when it declares none."""
    return next((int(o.version) for o in model.opset_import if o.domain in ('', 'ai.onnx')), None)


# ---- attributes -------------------------------------------------------------------------------------------------
def attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    """The value of attribute ``name`` of ``node`` (strings as bytes, as onnx returns them), else ``default``."""
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def attrs(node: onnx.NodeProto) -> Dict[str, Any]:
    """All attributes of ``node`` by name; strings decoded."""
    out = {}
    for a in node.attribute:
        v = onnx.helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


# ---- the graph index ----------------------------------------------------------------------------------------------
class Graph:
    """Nodes in order, producers, consumers, constants, inputs and outputs of an ONNX graph.

    ``base``: the model's folder, where external data is read from (only there).
    """

    def __init__(self, model: onnx.ModelProto, base: Path = Path('.')):
        g = model.graph
        self.base = Path(base)
        self.nodes: List[onnx.NodeProto] = list(g.node)
        self.index = {id(n): i for i, n in enumerate(self.nodes)}
        self.inits: Dict[str, TensorProto] = {t.name: t for t in g.initializer}
        self.producer: Dict[str, onnx.NodeProto] = {}
        self.consumers: Dict[str, List[onnx.NodeProto]] = {}
        for n in self.nodes:
            for o in n.output:
                if o:
                    self.producer[o] = n
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.input_infos = [vi for vi in g.input if vi.name not in self.inits]
        self.inputs = [vi.name for vi in self.input_infos]
        self.outputs = [o.name for o in g.output]

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
            if node.op_type != 'Identity' or not node.input:
                return None
            name = node.input[0]
        return None

    def is_constant(self, name: str) -> bool:
        return self.constant(name) is not None

    def array(self, name: str) -> Optional[np.ndarray]:
        """The constant ``name`` as a numpy array (its own dtype), None when it is not a constant."""
        t = self.constant(name)
        return None if t is None else tensor_array(t, self.base)

    def label(self, node: onnx.NodeProto) -> str:
        """The node's name, or its op, position and first output when it has none."""
        return node.name or f'{node.op_type} #{self.index[id(node)]} (output {node.output[0]!r})'

    def data_input(self, node: onnx.NodeProto) -> Optional[str]:
        """The first input of ``node`` that is not a constant (the activations it transforms)."""
        return next((i for i in node.input if i and not self.is_constant(i)), None)

    def trace(self, tensor: str, stop: str, limit: int = 40) -> Optional[List[onnx.NodeProto]]:
        """Nodes from ``stop`` (exclusive) to ``tensor``, following data inputs; None if ``stop`` is not reached."""
        chain: List[onnx.NodeProto] = []
        while tensor != stop:
            node = self.producer.get(tensor)
            if node is None or len(chain) >= limit:
                return None
            chain.append(node)
            tensor = self.data_input(node)
            if tensor is None:
                return None
        return chain[::-1]
