"""The report of one file: conv1 measured per tower on both axes, the towers compared, the latent analysis,
report.json and the figures written into the output folder, the summary printed.

Torch-free. Everything the report says is computed before anything is written; report.json is written last, so
a folder with a report.json holds the figures of that report.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ..errors import KernelsError, one_line
from . import latent
from .compare import ALPHA, COLOUR_THRESHOLD, by_measure, compare_axes, frequency_stats, tower_stats
from .figures import plot_chromatic_fraction, plot_colour_frequency, plot_kernels, plot_latent
from .files import PROG, check_out, clean, make_out, write_json
from .measures import (
    DEFAULT_MEASURE,
    LOW_PASS_CUTOFF,
    PERMUTATIONS,
    SEED,
    SHORT,
    chromatic_measures,
    format_p,
    luminance_orientation_frequency,
    measure_label,
    resolve_measure,
)
from .readers import FirstLayer, read_first_layer
from .snapshots import split as _split

REPORT_FILES = ('report.json', 'kernels.png', 'chromatic_fraction.png', 'colour_frequency.png', 'latent.png')


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
        raise KernelsError(f'cannot write into {out} ({e.strerror or one_line(e)})') from None


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
