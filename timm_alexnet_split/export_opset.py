"""Which ONNX opset and IR version an export is written at: what the installed onnxruntime loads (found by trying
tiny models), the lowest IR version an opset needs, and another opset through onnx's version converter.

Torch-free (onnx, onnxruntime through ``ort``). Invariant: an export is never written at an opset or IR version the
installed onnxruntime refuses; an unsupported ``--opset`` is refused before any work, in one UserError line.
"""
from __future__ import annotations

import functools
from typing import Optional, Tuple

from . import ort
from .errors import UserError

__all__ = ['MIN_OPSET', 'check_opset', 'convert_opset', 'ir_version_for', 'opset_of', 'ort_limits']


MIN_OPSET = 14  # onnx's version converter cannot take the exporter's graph lower (no Relu / Reshape adapter 14 -> 13)


def _ort_loads(ir_version: int, opset: int) -> bool:
    """True when the installed onnxruntime loads a one-Relu model of this IR version and ai.onnx opset."""
    from onnx import TensorProto, helper
    vi = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1]) for n in ('x', 'y')]
    graph = helper.make_graph([helper.make_node('Relu', ['x'], ['y'])], 'probe', vi[:1], vi[1:])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', opset)])
    model.ir_version = ir_version
    return ort.loads(model.SerializeToString())


@functools.lru_cache(maxsize=None)
def ort_limits() -> Tuple[int, int]:
    """(highest IR version, highest ai.onnx opset) the installed onnxruntime loads, found by trying tiny models."""
    import onnx
    from onnx.helper import find_min_ir_version_for, make_opsetid
    opset = next((v for v in range(onnx.defs.onnx_opset_version(), 6, -1)
                  if _ort_loads(find_min_ir_version_for([make_opsetid('', v)]), v)), 7)
    ir = next((v for v in range(onnx.IR_VERSION, 2, -1) if _ort_loads(v, 7)), 3)
    return ir, opset


def ir_version_for(model) -> int:
    """The lowest IR version the model's opsets need (onnx.helper.VERSION_TABLE); UserError if onnxruntime refuses it."""
    from onnx.helper import find_min_ir_version_for
    need = find_min_ir_version_for(list(model.opset_import), ignore_unknown=True)
    max_ir, max_opset = ort_limits()
    if need > max_ir:
        raise UserError(f'opset {opset_of(model)} needs ONNX IR version {need}; the installed onnxruntime loads up to '
                        f'IR {max_ir} (opset {max_opset}): choose a lower --opset')
    return need


def check_opset(opset: Optional[int]) -> None:
    """UserError, before any work, for an opset the export cannot write or the installed onnxruntime cannot load."""
    if opset is None:
        return
    _, max_opset = ort_limits()
    if opset < MIN_OPSET:
        raise UserError(f'opset {opset} is not supported: onnx\'s version converter cannot rewrite the graph below opset '
                        f'{MIN_OPSET}; choose {MIN_OPSET}..{max_opset}')
    if opset > max_opset:
        raise UserError(f'opset {opset} is newer than the installed onnxruntime loads; choose {MIN_OPSET}..{max_opset}')


def opset_of(model) -> int:
    return next(o.version for o in model.opset_import if o.domain in ('', 'ai.onnx'))


def _drop_default_reduce_flags(proto) -> None:
    """Remove ``noop_with_empty_axes=0`` (the default) from Reduce* nodes: opset 18 added it, and onnx's converter keeps
    it when it moves the axes back into an attribute for opsets 13-17, whose Reduce* do not know it (the checker then
    fails; the adaptive average pool of inputs other than 224 and ``global_pool='avg'`` export a ReduceMean)."""
    from onnx import helper
    for n in proto.graph.node:
        if n.op_type.startswith('Reduce'):
            keep = [a for a in n.attribute if not (a.name == 'noop_with_empty_axes' and helper.get_attribute_value(a) == 0)]
            if len(keep) != len(n.attribute):
                del n.attribute[:]
                n.attribute.extend(keep)


# ai.onnx operators of these graphs whose later versions (up to today's) only added types or optional inputs and
# attributes: a node that is already valid at a lower opset, as written, means the same there. onnx's converter has
# no adapter for some of them (Pow 15 -> 14, Split 18 -> 17), so such nodes are kept out of it and keep their form.
_SAME_MEANING_OPS = frozenset({'Add', 'Concat', 'Conv', 'Flatten', 'GatherND', 'Gemm', 'LRN', 'MaxPool', 'Mul', 'Pow',
                               'ReduceMean', 'Relu', 'Reshape', 'Split', 'Transpose'})


_HELD_DOMAIN = 'timm_alexnet_split.held'


def _valid_at(node, opset: int) -> bool:
    """True when ``node`` (inputs, attributes) passes the ai.onnx schema of its operator at ``opset``."""
    from onnx import checker
    ctx = checker.C.CheckerContext()
    ctx.ir_version = 7
    ctx.opset_imports = {'': opset}
    try:
        checker.check_node(node, ctx)
        return True
    except checker.ValidationError:
        return False


def convert_opset(proto, opset: int):
    """The tidied graph at another opset (onnx's version converter keeps node names and metadata), checked."""
    import onnx
    from onnx import helper, version_converter
    if opset == opset_of(proto):
        return proto
    if opset < 18:
        _drop_default_reduce_flags(proto)
    held = [n for n in proto.graph.node
            if n.domain in ('', 'ai.onnx') and n.op_type in _SAME_MEANING_OPS and _valid_at(n, opset)]
    for n in held:
        n.domain = _HELD_DOMAIN
    proto.opset_import.append(helper.make_opsetid(_HELD_DOMAIN, 1))
    try:
        converted = version_converter.convert_version(proto, opset)
        for n in converted.graph.node:
            if n.domain == _HELD_DOMAIN:
                n.domain = ''
        imports = [o for o in converted.opset_import if o.domain != _HELD_DOMAIN]
        del converted.opset_import[:]
        converted.opset_import.extend(imports)
        onnx.checker.check_model(converted, full_check=True)
    except Exception as e:  # onnx raises RuntimeError / ValidationError with a C++ assertion text
        lines = [line for line in str(e).splitlines() if line.strip()]
        raise UserError(f'cannot convert the graph to opset {opset} ({(lines or ["?"])[-1][:160]}); '
                        'try a newer opset or the default') from e
    return converted
