"""conv1 (and conv2) read from an ONNX file, a .safetensors state_dict or a training run folder: one
:class:`FirstLayer` whatever the source.

ONNX: conv1 from the graph, not from names (``graph``): one Conv per tower all reading the image (our export),
or one Conv whose output channels are split by the ``group`` of the next Conv downstream (Caffe style; at least
two conv1 channels per group, so a depthwise successor is not towers); conv2, the next Conv, for the latent
analysis. Metadata written by our exporter (contracts.ONNX_*) is used when consistent with the graph; ``groups``
(``--groups``) overrides both. Every bad input is one KernelsError line. Torch-free (onnx, numpy, safetensors'
numpy API, the standard library).
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .. import run_files as RF
from ..contracts import ONNX_CHANNEL_ORDER, ONNX_CONV1_NODES, ONNX_NUM_TOWERS
from ..errors import KernelsError, one_line
from ..onnx_graph import MAX_ELEMENTS, check_file, load_onnx
from .graph import CONV_OPS, Conv2Part, ConvGraph, float_weights
from .snapshots import read_snapshots
from .snapshots import split as _split


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


def _metadata(props: Dict[str, str], warnings: List[str]) -> Tuple[Optional[int], Optional[List[str]], Optional[str]]:
    """(num_towers, conv1_nodes, channel_order) from our exporter's metadata, each None when absent or invalid."""
    return (_meta_num_towers(props, warnings), _meta_conv1_nodes(props, warnings),
            _meta_channel_order(props, warnings))


def _meta_num_towers(props: Dict[str, str], warnings: List[str]) -> Optional[int]:
    if ONNX_NUM_TOWERS not in props:
        return None
    value = props[ONNX_NUM_TOWERS]
    try:
        num = int(value)
    except ValueError:
        num = 0
    if num >= 1:
        return num
    warnings.append(f'metadata {ONNX_NUM_TOWERS}={value!r} is not a positive integer; ignored')
    return None


def _meta_conv1_nodes(props: Dict[str, str], warnings: List[str]) -> Optional[List[str]]:
    if ONNX_CONV1_NODES not in props:
        return None
    try:
        nodes = json.loads(props[ONNX_CONV1_NODES])
    except ValueError:
        nodes = None
    if isinstance(nodes, list) and nodes and all(isinstance(x, str) for x in nodes):
        return nodes
    warnings.append(f'metadata {ONNX_CONV1_NODES} is not a JSON list of node names; ignored')
    return None


def _meta_channel_order(props: Dict[str, str], warnings: List[str]) -> Optional[str]:
    if ONNX_CHANNEL_ORDER not in props:
        return None
    order = props[ONNX_CHANNEL_ORDER].strip().upper()
    if order in ('RGB', 'BGR'):
        return order
    warnings.append(f'metadata {ONNX_CHANNEL_ORDER}={props[ONNX_CHANNEL_ORDER]!r} is neither RGB nor BGR; ignored')
    return None


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
    graph = ConvGraph(model, path.parent)
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
        arrays = [float_weights(w, path.parent) for w in weights]
        labels = [graph.label(f) for f in firsts]
        starts = np.concatenate([[0], np.cumsum([len(a) for a in arrays])])
        found = [graph.conv2_parts(f, int(a), len(w)) for f, a, w in zip(firsts, starts, arrays)]
        parts = [p for ps, _ in found for p in ps]
        reasons = sorted({f'tower {t}: {r}' for t, (_, r) in enumerate(found) if r})
        reason = '; '.join(reasons) if reasons else None
    else:
        w = float_weights(weights[0], path.parent)
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
    check_file(path, 'a .safetensors file')
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
        raise KernelsError(f'{path} is not a readable .safetensors file ({one_line(e)})') from None
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
    epochs, arrays, meta = read_snapshots(run_dir, only=[0, -1])
    counts = meta['kernels_per_tower']
    layer = FirstLayer(_split(arrays[-1], counts), [f'{RF.CONV1}/{RF.snapshot(epochs[-1])} {r}' for r in _ranges(counts)],
                       'towers' if len(counts) > 1 else 'single', f'run folder: {RF.CONV1}/{RF.TOWERS} {counts}',
                       meta['channel_order'], str(run_dir))
    if epochs[0] == 0 and epochs[-1] > 0:
        layer.initial = arrays[0]
    weights = run_dir / RF.LAST_WEIGHTS
    if not weights.is_file():
        layer.conv2_reason = f'{run_dir} has no {RF.LAST_WEIGHTS}: conv2 weights unknown'
        return layer
    try:
        from safetensors import safe_open
        with safe_open(str(weights), framework='np') as f:
            shapes = {k: list(f.get_slice(k).get_shape()) for k in f.keys()}
            keys = [f'towers.{i}.conv1.weight' for i in range(len(counts))]
            layer.conv2, layer.conv2_reason = _safetensors_conv2(f, shapes, keys, counts)
    except Exception as e:  # a partly written or foreign last.safetensors: conv1 is still readable
        layer.conv2_reason = f'cannot read conv2 from {weights} ({one_line(e)})'
    return layer


PYTORCH_SUFFIXES = ('.pth', '.pt', '.pth.tar', '.ckpt', '.bin')


def read_first_layer(path: Path, groups: Optional[int] = None) -> FirstLayer:
    """conv1's kernels per tower from an .onnx or .safetensors file or a run folder; ``groups`` re-splits them."""
    path = Path(path)
    if path.is_dir():
        layer = read_run_first_layer(path)
    elif path.suffix.lower() == '.safetensors':
        layer = read_safetensors_first_layer(path)
    elif path.name.lower().endswith(PYTORCH_SUFFIXES) and path.is_file():
        raise KernelsError(f'{path} is a PyTorch checkpoint, which the kernel tool (torch-free) does not read: give its '
                           'run folder, a .safetensors file, or an export (timm-alexnet-split export --checkpoint '
                           f'{path})')
    else:
        layer = read_onnx_first_layer(path)
    if groups is not None:
        layer = _regroup(layer, groups, f'--groups {groups}: conv1\'s {sum(len(g) for g in layer.groups)} kernels '
                                        f'split in order into {groups} blocks (was: {layer.grouping})')
    return layer
