"""The exported graph tidied for readers (Netron) and the kernel tool: nodes named by module, TorchScript style
(``/towers.0/conv1/Conv``, ``/conv3_input/Concat``), tensors ``<node>_output_0``, every Conv / Gemm reading
initializers named by its parameters (``towers.0.conv1.weight``), unused initializers and exporter metadata gone.

Invariant: tidying renames and rebinds only; the graph computes what it computed (a rebinding is made only to an
initializer holding the same values, or a bias the exporter dropped as zero).
"""
from __future__ import annotations

import ast
from collections import Counter
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import torch.nn as nn

from .export_opset import opset_of
from .onnx_graph import Graph

__all__ = ['tidy_graph']


def _module_path(node) -> str:
    """The module that produced ``node`` (from the dynamo exporter's name scopes), '' for top-level ops."""
    for p in node.metadata_props:
        if p.key == 'pkg.torch.onnx.name_scopes':
            try:
                scopes = ast.literal_eval(p.value)
            except (ValueError, SyntaxError):
                return ''
            return scopes[-2] if isinstance(scopes, list) and len(scopes) >= 3 else ''
    return ''


def _scope_name(path: str) -> str:
    """'towers.0.conv1' -> '/towers.0/conv1' (list indices stay with their list, as TorchScript names them)."""
    parts: List[str] = []
    for part in path.split('.'):
        if part.isdigit() and parts:
            parts[-1] += f'.{part}'
        else:
            parts.append(part)
    return '/' + '/'.join(parts)


def _downstream_module(graph: Graph, paths: Sequence[str], j: int, seen: Tuple[int, ...] = ()) -> str:
    """The first module that a top-level op (cat, view) at node ``j`` feeds, '' when none."""
    for out in graph.nodes[j].output:
        for c in graph.consumers.get(out, []):
            k = graph.index[id(c)]
            if paths[k]:
                return paths[k]
            if k not in seen and (found := _downstream_module(graph, paths, k, seen + (k,))):
                return found
    return ''


def _name_nodes(graph: Graph, paths: Sequence[str]) -> None:
    """'/towers.0/conv1/Conv' by module; top-level ops by the module they feed ('/conv3_input/Concat'); _1, _2 for repeats."""
    used: Counter = Counter()
    for j, n in enumerate(graph.nodes):
        if paths[j]:
            base = f'{_scope_name(paths[j])}/{n.op_type}'
        else:
            feeds = _downstream_module(graph, paths, j)
            base = f'/{feeds.split(".")[-1]}_input/{n.op_type}' if feeds else f'/{n.op_type}'
        n.name = base if not used[base] else f'{base}_{used[base]}'
        used[base] += 1


def _name_values(graph) -> None:
    """Intermediate values named after the node that computes them: '<node>_output_<i>'."""
    keep = {v.name for v in graph.input} | {v.name for v in graph.output} | {t.name for t in graph.initializer}
    rename = {out: f'{n.name}_output_{i}' for n in graph.node for i, out in enumerate(n.output) if out and out not in keep}
    for n in graph.node:
        n.input[:] = [rename.get(i, i) for i in n.input]
        n.output[:] = [rename.get(o, o) for o in n.output]
    for vi in graph.value_info:
        vi.name = rename.get(vi.name, vi.name)


def _bind_slot(graph, inits: Dict[str, Any], n, slot: int, key: str, want: np.ndarray) -> None:
    """Let input ``slot`` of ``n`` read the initializer ``key`` when it holds the same values (or a dropped zero bias)."""
    from onnx import numpy_helper
    cur = n.input[slot] if slot < len(n.input) else ''
    if cur == key:
        return
    same = cur in inits and np.array_equal(numpy_helper.to_array(inits[cur]), want)
    dropped = not cur and slot == len(n.input) and not np.any(want)  # the optimizer removed a zero bias
    if not (same or dropped):
        return
    if key not in inits:
        inits[key] = numpy_helper.from_array(np.ascontiguousarray(want), key)
        graph.initializer.append(inits[key])
    if dropped:
        n.input.append(key)
    else:
        n.input[slot] = key


def _bind_parameters(graph, nodes: Sequence[Any], paths: Sequence[str], params: Dict[str, np.ndarray]) -> Dict[str, Any]:
    """Conv/Gemm weight and bias inputs read initializers named by parameter ('towers.0.conv1.weight')."""
    inits = {t.name: t for t in graph.initializer}
    for n, path in zip(nodes, paths):
        if n.op_type not in ('Conv', 'Gemm') or not path:
            continue
        for slot, suffix in ((1, 'weight'), (2, 'bias')):
            want = params.get(f'{path}.{suffix}')
            if want is not None:
                _bind_slot(graph, inits, n, slot, f'{path}.{suffix}', want)
    return inits


def _name_constants(graph, inits: Dict[str, Any], params: Dict[str, np.ndarray], opset: int) -> None:
    """Other constants (a Reshape's shape), used once: '<node>/<input name in the operator schema>'."""
    from onnx import defs
    for n in graph.node:
        for slot, i in enumerate(n.input):
            if i in inits and i not in params and sum(i in c.input for c in graph.node) == 1:
                try:
                    arg = defs.get_schema(n.op_type, opset, n.domain).inputs[slot].name
                except Exception:  # no schema / variadic input
                    arg = str(slot)
                new = f'{n.name}/{arg}'
                inits[i].name = new
                inits[new] = inits.pop(i)
                n.input[slot] = new


def _drop_unused(graph, params: Dict[str, np.ndarray]) -> None:
    """Initializers nobody reads go; the rest in parameter order. value_info of vanished values goes too."""
    live = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    order = {k: j for j, k in enumerate(params)}
    kept = sorted((t for t in graph.initializer if t.name in live), key=lambda t: order.get(t.name, len(order)))
    del graph.initializer[:]
    graph.initializer.extend(kept)
    infos = [vi for vi in graph.value_info if vi.name in live or vi.name in {o for n in graph.node for o in n.output}]
    del graph.value_info[:]
    graph.value_info.extend(infos)


def tidy_graph(proto, model: nn.Module) -> None:
    """Name nodes and tensors by module, bind Conv/Gemm inputs to initializers named by parameter, drop exporter metadata."""
    index = Graph(proto)
    paths = [_module_path(n) for n in index.nodes]
    _name_nodes(index, paths)
    _name_values(proto.graph)
    params = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    inits = _bind_parameters(proto.graph, index.nodes, paths, params)
    _name_constants(proto.graph, inits, params, opset_of(proto))
    _drop_unused(proto.graph, params)
    g = proto.graph
    for item in list(g.node) + list(g.input) + list(g.output) + list(g.value_info):
        del item.metadata_props[:]
