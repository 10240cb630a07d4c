"""SHIM, to drop at merge: the old path of ``kernels.compare``, still imported by sweep.py."""
import sys

from .kernels import compare as _moved

sys.modules[__name__] = _moved
