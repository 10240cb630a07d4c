"""The ``timm-alexnet-split`` console command's entry point.

It lives outside the ``timm_alexnet_split`` package on purpose: importing the package registers the models
with timm, which imports torch (seconds). The torch-free commands (the kernel tool, ``--version``, the
command list) are run with the package's modules imported *without* its ``__init__``, so they start at once
and work where torch is not installed. Every other command imports the package as usual.
"""
from __future__ import annotations

import importlib.util
import sys
import types
from typing import List, Optional

PACKAGE = 'timm_alexnet_split'
TORCH_FREE_COMMANDS = ('kernels',)
TORCH_FREE_FLAGS = ('-h', '--help', '-V', '--version')


def _torch_free(argv: List[str]) -> bool:
    rest = argv[1:] if argv[:1] == ['--debug'] else argv  # --debug goes before the command
    return not rest or rest[0] in TORCH_FREE_COMMANDS + TORCH_FREE_FLAGS


def _package_without_init() -> None:
    """Make ``timm_alexnet_split.X`` importable without running the package's ``__init__`` (which imports torch)."""
    if PACKAGE in sys.modules:
        return
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f'{PACKAGE} is not installed')
    pkg = types.ModuleType(PACKAGE, 'timm_alexnet_split, loaded without its __init__ (torch-free commands)')
    pkg.__path__ = list(spec.submodule_search_locations)
    pkg.__spec__ = spec
    sys.modules[PACKAGE] = pkg


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if _torch_free(argv):
        _package_without_init()
    else:
        try:
            importlib.import_module(PACKAGE)  # registers the models with timm: imports torch
        except ImportError as e:
            print(f'timm-alexnet-split {argv[0]}: error: cannot import {e.name or "a dependency"} ({e}); reinstall the '
                  'dependencies (make setup, or pip install timm-alexnet-split)', file=sys.stderr)
            return 2
    from timm_alexnet_split.cli import main as cli_main
    return cli_main(argv)


if __name__ == '__main__':
    sys.exit(main())
