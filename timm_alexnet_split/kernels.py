"""What conv1 of any CNN shows, read from an ONNX file, a .safetensors state_dict or a training run folder.

Krizhevsky et al. (2012, section 6.1, Figure 3) say the conv1 kernels of one GPU come out largely
colour-agnostic and those of the other largely colour-specific; Distill's "Branch Specialization" (Voss et al.
2021) adds spatial frequency as a second axis and finds the division latent in unsplit networks. This module
reads the file and orchestrates; the parts are torch-free sibling modules:

- reading: onnx_graph (the package's one ONNX reader: hostile-file checks, graph index) and kernel_graph
  (conv1 from the graph, not from names: one Conv per tower all reading the image (our export), or one Conv
  whose output channels are split by the ``group`` of the next Conv downstream (Caffe style; at least two conv1
  channels per group, so a depthwise successor is not towers); conv2, the next Conv, for the latent analysis);
  here: metadata written by our exporter (contracts.ONNX_*) is used when consistent, ``--groups`` overrides
  both; .safetensors files and run folders;
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
import os
import re
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

if not __package__:  # run as a script: import the sibling torch-free modules without the package's __init__ (torch)
    import types
    _pkg = types.ModuleType('timm_alexnet_split')
    _pkg.__path__ = [str(Path(__file__).resolve().parent)]
    sys.modules.setdefault('timm_alexnet_split', _pkg)
    __package__ = 'timm_alexnet_split'

from . import latent  # noqa: E402
from .contracts import ONNX_CHANNEL_ORDER, ONNX_CONV1_NODES, ONNX_NUM_TOWERS  # noqa: E402
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
from .kernel_evolution import EVOLUTION_FILES, evolution, read_snapshots  # noqa: E402,F401
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
from .kernel_graph import CONV_OPS, PASS_THROUGH, Conv2Part, ConvGraph, float_weights  # noqa: E402,F401
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
from .onnx_graph import MAX_ELEMENTS, check_file, load_onnx  # noqa: E402,F401

REPORT_FILES = ('report.json', 'kernels.png', 'chromatic_fraction.png', 'colour_frequency.png', 'latent.png')


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
    epochs, arrays, meta = read_snapshots(run_dir, only=[0, -1])
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
        if os.environ.get('TIMM_ALEXNET_SPLIT_DEBUG', '').strip() not in ('', '0'):  # --debug: for a bug report
            import traceback
            traceback.print_exc()
        print(f'{PROG}: error: {" ".join(str(e).split())}', file=sys.stderr)
        return 2
    except SystemExit as e:  # --help
        return e.code if isinstance(e.code, int) else 0
    return 0


if __name__ == '__main__':
    sys.exit(main())
