"""onnxruntime in one place: sessions (providers, thread limits, quiet logs), what it loads, errors against a reference.

Used by the exporter (verification and the onnxruntime benchmark) and the importer (running the source graph).
Torch-free: whether to try CUDA is the caller's decision (``cuda=``). onnxruntime is imported when first used.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .errors import UserError, one_line

__all__ = ['CPU', 'CUDA', 'loads', 'max_abs_error', 'max_rel_error', 'providers', 'run', 'session', 'session_options']

CPU = 'CPUExecutionProvider'
CUDA = 'CUDAExecutionProvider'
QUIET = 3   # onnxruntime log severity: errors only
SILENT = 4  # fatal only (for probing what loads)

Source = Union[str, Path, bytes]


def session_options(threads: Optional[int] = None, spinning: bool = True, log_level: int = QUIET):
    """SessionOptions: ``threads`` intra-op threads (None: onnxruntime's default), idle spinning on or off, log level."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.log_severity_level = log_level
    if threads is not None:
        opts.intra_op_num_threads = threads
    if not spinning:  # idle spinning would slow whatever runs between two calls (torch's turn in a benchmark)
        opts.add_session_config_entry('session.intra_op.allow_spinning', '0')
    return opts


def providers(cuda: bool = False) -> List[Any]:
    """CPU, with CUDA first (TF32 off, so fp32 compares with fp32) when ``cuda`` and onnxruntime has it."""
    import onnxruntime as ort
    out: List[Any] = [CPU]
    if cuda and CUDA in ort.get_available_providers():
        out.insert(0, (CUDA, {'use_tf32': 0}))
    return out


def session(src: Source, what: str, cuda: bool = False, threads: Optional[int] = None, spinning: bool = True,
            log_level: int = QUIET):
    """An InferenceSession of ``src`` (a path, or a serialized model); UserError 'onnxruntime cannot load {what}'."""
    import onnxruntime as ort
    opts = session_options(threads, spinning, log_level)
    try:
        return ort.InferenceSession(src if isinstance(src, bytes) else str(src), opts, providers=providers(cuda))
    except Exception as e:  # onnxruntime raises its own Fail / InvalidGraph / ... types
        raise UserError(f'onnxruntime cannot load {what} ({one_line(e, 200, first_line=True)})') from None


def loads(model_bytes: bytes) -> bool:
    """True when onnxruntime's CPU provider loads the serialized model (probing IR and opset limits)."""
    import onnxruntime as ort
    try:
        ort.InferenceSession(model_bytes, session_options(log_level=SILENT), providers=[CPU])
        return True
    except Exception:  # onnxruntime raises its own Fail / InvalidGraph / ...
        return False


def run(sess, feed: Dict[str, np.ndarray], what: str, outputs: Optional[Sequence[str]] = None) -> List[np.ndarray]:
    """``sess.run``; UserError 'onnxruntime failed on {what}' instead of onnxruntime's own exception."""
    try:
        return sess.run(None if outputs is None else list(outputs), feed)
    except Exception as e:
        raise UserError(f'onnxruntime failed on {what}: {one_line(e, 200, first_line=True)}') from None


def max_abs_error(out: np.ndarray, ref: np.ndarray) -> float:
    """max |out - ref| in float64."""
    return float(np.abs(np.asarray(out, np.float64) - np.asarray(ref, np.float64)).max())


def max_rel_error(out: np.ndarray, ref: np.ndarray) -> float:
    """max |out - ref| / max |ref| in float64 (the denominator at least float32's smallest normal number)."""
    scale = max(float(np.abs(np.asarray(ref, np.float64)).max()), float(np.finfo(np.float32).tiny))
    return max_abs_error(out, ref) / scale


def compare(out: np.ndarray, ref: np.ndarray) -> Tuple[float, float]:
    """(max relative error, max absolute error) of ``out`` against the reference ``ref``."""
    return max_rel_error(out, ref), max_abs_error(out, ref)
