"""SHIM, to drop at merge: the old path of ``kernels.control``, still imported by sweep.py."""
import sys

from .kernels import control as _moved

sys.modules[__name__] = _moved
