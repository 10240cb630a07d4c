"""The kernel tool as a plain script: ``python timm_alexnet_split/kernels FILE --out DIR`` (no torch needed).

Run so, this folder is not yet a package: the parent ``timm_alexnet_split`` is made importable without its
``__init__`` (which imports torch), as the console entry does, and the tool is imported from it.
"""
import importlib
import sys
import types
from pathlib import Path

if __package__:   # python -m timm_alexnet_split.kernels
    from . import main
else:
    _here = Path(__file__).resolve().parent
    if sys.path and Path(sys.path[0] or '.').resolve() == _here:
        del sys.path[0]   # the tool's modules are reached through the package, never as top-level names
    if 'timm_alexnet_split' not in sys.modules:
        _pkg = types.ModuleType('timm_alexnet_split', 'timm_alexnet_split, loaded without its __init__')
        _pkg.__path__ = [str(_here.parent)]
        sys.modules['timm_alexnet_split'] = _pkg
    try:
        main = importlib.import_module('timm_alexnet_split.kernels').main
    except ImportError as e:  # run with a Python that lacks numpy, onnx or matplotlib
        print(f'timm-alexnet-split kernels: error: cannot import {e.name or "a dependency"} ({e}); the kernel tool '
              'needs numpy, onnx, matplotlib and safetensors (pip install them, or use the project\'s .venv)',
              file=sys.stderr)
        sys.exit(2)

if __name__ == '__main__':
    sys.exit(main())
