"""The ``timm-alexnet-split`` command (also ``python -m timm_alexnet_split``).

Each subcommand lives in its own module as ``main(argv) -> int``; this file only dispatches. The console
script enters through ``timm_alexnet_split_cli`` (outside the package), which runs the torch-free commands
(``kernels``, ``--version``, ``--help``) without importing the package's ``__init__``: this module and the
modules those commands use import nothing that imports torch. The kernel tool also runs as a plain script:
``python timm_alexnet_split/kernels FILE.onnx``.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import sys
import traceback
from typing import Iterator, List, Optional, Tuple

PROG = 'timm-alexnet-split'
DEBUG_FLAG = '--debug'
DEBUG_ENV = 'TIMM_ALEXNET_SPLIT_DEBUG'

# name -> (module, function, one-line summary)
COMMANDS = {
    'models': ('timm_alexnet_split.cli', 'models_main', 'list the variants: towers, parameters, multiply-adds'),
    'bench': ('timm_alexnet_split.bench', 'main', 'measure LRN cost and throughput, as ratios to a same-run baseline'),
    'train': ('timm_alexnet_split.train', 'main', 'train a model with timm (YAML recipes in train.py argument names)'),
    'validate': ('timm_alexnet_split.train', 'validate_main', 'evaluate a checkpoint: top-1, top-5, loss (centre or ten-crop)'),
    'demo-data': ('timm_alexnet_split.data', 'demo_data_main', 'generate the embedded demo dataset (ImageFolder)'),
    'prepare-catsdogs': ('timm_alexnet_split.data', 'prepare_catsdogs_main', 'make the 24,000/1,000 Cats vs Dogs split'),
    'prepare-shards': ('timm_alexnet_split.data.shards', 'main',
                       "an ImageFolder as 256-px WebDataset shards for timm's wds reader"),
    'pca-stats': ('timm_alexnet_split.data.augment', 'pca_stats_main', "estimate a dataset's RGB eigenvalues/vectors"),
    'export': ('timm_alexnet_split.export', 'main', 'export to ONNX and verify with onnxruntime'),
    'kernels': ('timm_alexnet_split.kernels', 'main', 'conv1 of any CNN: colour, frequency, latent branches, verdict'),
    'import-onnx': ('timm_alexnet_split.zoo', 'main', "import Caffe's bvlc_alexnet (ONNX) as safetensors"),
    'demo': ('timm_alexnet_split.demo', 'main', 'the main job on the demo data: train, export, inspect'),
    'sweep': ('timm_alexnet_split.sweep', 'main', 'towers x seeds: train, measure conv1 per run, compare with a control'),
}


def _usage() -> str:
    lines = [f'usage: {PROG} [--debug] COMMAND [options]   ({PROG} COMMAND --help for each; {PROG} --version)', '',
             'commands:']
    lines += [f'  {name:<18}{summary}' for name, (_, _, summary) in COMMANDS.items()]
    lines += ['', f'--debug (or {DEBUG_ENV}=1): an error in the input also prints its full traceback, for a bug report']
    return '\n'.join(lines)


def split_debug(argv: List[str]) -> Tuple[bool, List[str]]:
    """Whether full tracebacks were asked for (leading ``--debug`` flags, or the environment variable), and the rest."""
    debug = os.environ.get(DEBUG_ENV, '').strip() not in ('', '0')
    while argv and argv[0] == DEBUG_FLAG:
        debug, argv = True, argv[1:]
    return debug, argv


@contextlib.contextmanager
def _debug_environment(debug: bool) -> Iterator[None]:
    """While a command runs under --debug, the environment says so too: a command that reports its own errors (the
    kernel tool, also a plain script) reads it there."""
    before = os.environ.get(DEBUG_ENV)
    if debug:
        os.environ[DEBUG_ENV] = '1'
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(DEBUG_ENV, None)
        else:
            os.environ[DEBUG_ENV] = before


def main(argv: Optional[List[str]] = None) -> int:
    debug, argv = split_debug(list(sys.argv[1:] if argv is None else argv))
    if not argv or argv[0] in ('-h', '--help'):
        print(_usage())
        return 0 if argv else 2
    if argv[0] in ('-V', '--version'):
        from .version import __version__
        print(f'{PROG} {__version__}')
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f'{PROG}: error: unknown command {name!r}; choose from {", ".join(COMMANDS)}', file=sys.stderr)
        return 2
    module, func, _ = COMMANDS[name]
    if name in ('train', 'validate', 'bench', 'demo', 'sweep'):  # long-running: keep freed memory in-process
        from .perf import tune_malloc
        tune_malloc()
    try:
        fn = getattr(importlib.import_module(module), func)
    except (ImportError, AttributeError) as e:
        missing = getattr(e, 'name', None)
        if missing not in (module, func, None):  # a dependency: torch, timm, onnx ... not installed or broken
            print(f'{PROG} {name}: error: cannot import {missing} ({e}); reinstall the dependencies '
                  f'(make setup, or pip install timm-alexnet-split)', file=sys.stderr)
            return 2
        print(f'{PROG}: error: {name!r} is not available in this version', file=sys.stderr)
        return 2
    from .errors import UserError, worker_message
    try:
        with _debug_environment(debug):
            return int(fn(rest) or 0)
    except UserError as e:
        if debug:  # the traceback for a bug report, then the same one line
            traceback.print_exc()
        print(f'{PROG} {name}: error: {worker_message(str(e))}', file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into head & co.
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(f'{PROG} {name}: interrupted', file=sys.stderr)
        return 130
    except RuntimeError as e:  # failures of the machine, not of the input or the code: one line that says what to do
        line = machine_failure(e, name)
        if line is None or debug:
            raise
        print(f'{PROG} {name}: error: {line}', file=sys.stderr)
        return 1


RESUME_HINTS = {
    'train': '; epochs completed before it are saved: the same command with --resume RUN/last.pth.tar goes on',
    'sweep': '; epochs completed before it are saved: the same sweep command resumes the run',
    'demo': '; epochs completed before it are saved: the same command resumes the run',
}


def machine_failure(e: BaseException, command: str) -> Optional[str]:
    """What to tell the user of ``command`` for a failure of the machine under it (a loader worker killed for
    memory, shared memory too small, the GPU out of memory), or None for anything else: a worker that crashed
    (a segfault) or any other error is a bug, and its traceback is the report."""
    first = (str(e).strip().splitlines() or [''])[0].rstrip('. ')
    hint = RESUME_HINTS.get(command, '')
    if 'DataLoader worker' in first:
        if 'Bus error' in first:
            return (f'a data-loader worker died ({first}): shared memory (/dev/shm) is too small for the batches; '
                    f'enlarge it (docker run --shm-size=8g) or use fewer --workers{hint}')
        if 'exited unexpectedly' in first or 'signal: Killed' in first:
            return (f'a data-loader worker died ({first}); the usual cause is memory (the kernel\'s out-of-memory '
                    f'killer): use fewer --workers or a smaller --batch-size{hint}')
        return None
    if type(e).__name__ == 'OutOfMemoryError' or first.startswith('CUDA out of memory'):
        return f'the GPU ran out of memory ({first[:160]}); use a smaller --batch-size{hint}'
    return None


def models_main(argv: List[str]) -> int:
    """Print each variant: towers, per-tower widths, parameters, multiply-adds per image."""
    from .errors import CommandParser
    parser = CommandParser(
        prog=f'{PROG} models',
        description='List the registered split AlexNet variants with their towers, per-tower widths, '
                    'parameter count and multiply-adds per image (forward).',
        epilog=f'example: {PROG} models --num-classes 2 --img-size 224')
    parser.add_argument('--num-classes', type=int, default=1000, help='classifier outputs (default 1000)')
    parser.add_argument('--img-size', type=int, default=224, help='square input size (default 224)')
    args = parser.parse_args(argv)
    import timm

    from .errors import UserError
    from .flops import count_macs
    from .model import MIN_INPUT_SIZE, PAPER_WIDTHS, tower_widths
    if args.img_size < MIN_INPUT_SIZE:
        raise UserError(f'--img-size must be at least {MIN_INPUT_SIZE}')
    if args.num_classes < 0:
        raise UserError('--num-classes must be >= 0')
    # per layer: one number when every tower has the same width, else each tower's (README: 86,85,85)
    print(f'{"model":<18}{"towers":>7}  {"conv1..conv5 per tower":<34}{"params":>13}{"GMACs":>8}')
    for name in timm.list_models('alexnet_split*'):
        model = timm.create_model(name, num_classes=args.num_classes)
        n = model.num_towers
        per_layer = [tower_widths(w, n) for w in PAPER_WIDTHS]
        widths = '/'.join(str(ws[0]) if len(set(ws)) == 1 else ','.join(map(str, ws)) for ws in per_layer)
        params = sum(p.numel() for p in model.parameters())
        macs = count_macs(model, args.img_size)
        print(f'{name:<18}{n:>7}  {widths:<34}{params:>13,}{macs / 1e9:>8.3f}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
