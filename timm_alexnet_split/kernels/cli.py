"""The ``kernels`` command line: its parser and ``main``, which turns every UserError (KernelsError, an unwritable
output) into one line on stderr and exit status 2 (the traceback too with TIMM_ALEXNET_SPLIT_DEBUG=1). Torch-free.
"""
from __future__ import annotations

import argparse
import os
import sys
import textwrap
from pathlib import Path
from typing import Optional, Sequence

from ..errors import CommandParser, KernelsError, UserError, one_line
from .compare import ALPHA
from .evolution import evolution
from .files import PROG
from .measures import DEFAULT_MEASURE, LOW_PASS_CUTOFF, MEASURES, PERMUTATIONS, SEED
from .report import inspect_file


class _Parser(CommandParser):
    error_class = KernelsError  # one line on stderr via main(), not argparse's usage + error


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
    except UserError as e:
        if os.environ.get('TIMM_ALEXNET_SPLIT_DEBUG', '').strip() not in ('', '0'):  # --debug: for a bug report
            import traceback
            traceback.print_exc()
        print(f'{PROG}: error: {one_line(e, limit=None)}', file=sys.stderr)
        return 2
    except SystemExit as e:  # --help
        return e.code if isinstance(e.code, int) else 0
    return 0
