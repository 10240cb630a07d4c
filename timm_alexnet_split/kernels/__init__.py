"""The kernel tool: what conv1 of any CNN shows, read from an ONNX file, a .safetensors state_dict or a training
run folder.

Krizhevsky et al. (2012, section 6.1, Figure 3) say the conv1 kernels of one GPU come out largely
colour-agnostic and those of the other largely colour-specific; Distill's "Branch Specialization" (Voss et al.
2021) adds spatial frequency as a second axis and finds the division latent in unsplit networks. The modules:

- ``readers``: conv1 (and conv2) of a file or run folder as one ``FirstLayer`` (ONNX through ``graph`` and the
  package's one ONNX reader ``onnx_graph``; ``snapshots`` for a run's conv1/epoch_NNNN.npy);
- ``measures``: chromatic fraction (whole kernel, low-pass part, own band, W - W0), luminance frequency, tests;
- ``compare``: towers compared on colour and frequency, the verdict in words;
- ``latent``: conv1 -> conv2 connectivity, its SVD against chromatic fraction and frequency;
- ``control``: eta squared, the random-partition control, bootstrap intervals, conv1's distance from random;
- ``report`` (one file: report.json and its figures), ``evolution`` (a run over its epochs), ``figures``;
- ``files`` (the output folder, JSON-safe values, atomic writes through ``atomic.replace_when_done``), ``cli``
  (the command line).

Invariant: the kernel tool is torch-free. Its modules import the standard library, numpy, onnx, matplotlib and
safetensors' numpy API, and of the package only ``errors``, ``atomic``, ``contracts``, ``run_files`` and
``onnx_graph`` (themselves torch-free); never torch, never the package's ``__init__``. So ``timm-alexnet-split
kernels`` starts without torch, and the folder runs as a plain script: ``python timm_alexnet_split/kernels FILE
--out DIR``. Nothing outside the tool imports its private names; the names below are its public API.
"""
from __future__ import annotations

from ..errors import KernelsError
from ..onnx_graph import MAX_ELEMENTS, check_file, load_onnx
from .cli import build_parser, main
from .compare import (
    ALPHA,
    COLOUR_THRESHOLD,
    by_measure,
    compare_axes,
    compare_towers,
    frequency_stats,
    tower_stats,
    verdict,
)
from .evolution import EVOLUTION_FILES, evolution
from .figures import (
    display_order,
    kernel_tiles,
    mosaic,
    plot_chromatic_fraction,
    plot_colour_frequency,
    plot_kernels,
    plot_latent,
)
from .files import PROG, check_out, clean, make_out, write_json
from .graph import CONV_OPS, PASS_THROUGH, Conv2Part, ConvGraph, float_weights
from .measures import (
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
from .readers import (
    FirstLayer,
    read_first_layer,
    read_onnx_first_layer,
    read_run_first_layer,
    read_safetensors_first_layer,
    split_counts,
)
from .report import REPORT_FILES, inspect_file, latent_analysis
from .snapshots import read_snapshots

__all__ = [
    'ALPHA', 'COLOUR_THRESHOLD', 'CONV_OPS', 'DEFAULT_MEASURE', 'EVOLUTION_FILES', 'FFT_SIZE', 'LOW_PASS_CUTOFF',
    'MAX_ELEMENTS', 'MEASURES', 'PASS_THROUGH', 'PERMUTATIONS', 'PROG', 'REPORT_FILES', 'SEED', 'SHORT',
    'Conv2Part', 'ConvGraph', 'FirstLayer', 'KernelsError',
    'band_chromatic_fraction', 'build_parser', 'by_measure', 'check_file', 'check_out', 'chromatic_fraction',
    'chromatic_measures', 'clean', 'compare_axes', 'compare_towers', 'display_order', 'effect_size', 'evolution',
    'float_weights', 'format_p', 'frequency_stats', 'inspect_file', 'kernel_tiles', 'latent_analysis', 'load_onnx',
    'low_pass', 'luminance_orientation_frequency', 'main', 'make_out', 'measure_label', 'mosaic', 'permutation_test',
    'plot_chromatic_fraction', 'plot_colour_frequency', 'plot_kernels', 'plot_latent', 'read_first_layer',
    'read_onnx_first_layer', 'read_run_first_layer', 'read_safetensors_first_layer', 'read_snapshots',
    'resolve_measure', 'split_counts', 'tower_stats', 'verdict', 'write_json',
]
