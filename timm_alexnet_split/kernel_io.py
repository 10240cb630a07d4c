"""SHIM, to drop at merge: the old path of ``kernels.files``, still imported by sweep.py."""
import sys

from .kernels import files as _moved

sys.modules[__name__] = _moved
