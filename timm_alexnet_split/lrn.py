"""Tower-local local response normalisation (Krizhevsky et al. 2012, section 3.3).

    b_i = a_i / (k + alpha' * S_i) ** beta,   S_i = sum of a_j ** 2 for j in [i - n//2, i + n//2]

with the window clipped to the channels of the tensor it is given. In the split network every
tower owns its tensor, so the sum never crosses a tower boundary.

alpha' is alpha / n (``alpha_over_n=True``: cuda-convnet2, Caffe, PyTorch and ONNX) or alpha
itself (the formula as printed in the paper).

Forward and backward are one autograd function whose backward reuses the normaliser of the
forward (the normaliser d is saved), each compiled into one fused loop, instead of
autograd's chain through pad / avg_pool3d / pow / div. Under ``torch.onnx.export`` it becomes one
ONNX ``LRN`` node, with the TorchScript exporter
(``dynamo=False``, what ``timm.utils.onnx.onnx_export`` uses) and with the dynamo exporter.

On CUDA, where triton imports, :func:`lrn` runs the hand-written Triton kernels of
:mod:`.lrn_triton` instead (a ``torch.library`` custom op, opaque to ``torch.compile``; channels_last
read in place; only x saved for backward). Every path keeps the input's layout: a channels_last
tensor gives a channels_last result and gradient.
"""
from __future__ import annotations

import importlib
import logging
import os
import warnings
from typing import Callable, Dict, Optional, Tuple

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

__all__ = ['TowerLRN', 'lrn', 'lrn_mode', 'lrn_ops', 'lrn_reference', 'set_lrn_mode', 'ONNX_FORMS']

# how an ONNX export writes the LRN: one ONNX LRN node, or the same maths in elementary operators
ONNX_FORMS = ('node', 'ops')


def _window_sum(t: torch.Tensor, size: int) -> torch.Tensor:
    """Sum of ``t`` over a centred window of ``size`` channels (dim 1), clipped at the edges."""
    c, h = t.shape[1], size // 2
    p = F.pad(t, (0, 0, 0, 0, h, h))
    acc = p[:, 0:c]
    for i in range(1, size):
        acc = acc + p[:, i:i + c]
    return acc


def _pow_neg(d: torch.Tensor, beta: float) -> torch.Tensor:
    """d ** -beta; the paper's beta = 0.75 as rsqrt(d) * sqrt(rsqrt(d)), much cheaper than pow."""
    if beta == 0.75:
        r = torch.rsqrt(d)
        return r * torch.sqrt(r)
    return d.pow(-beta)


def _fwd(x: torch.Tensor, size: int, alpha: float, beta: float, k: float):
    """y, and the normaliser d = k + alpha / n * S that the backward needs (scale and its derivative
    are recomputed from d there: cheaper than storing them)."""
    xf = x.to(torch.promote_types(x.dtype, torch.float32))
    d = _window_sum(xf * xf, size) * (alpha / size) + k
    return (xf * _pow_neg(d, beta)).to(x.dtype), d.to(x.dtype)


def _bwd(g: torch.Tensor, x: torch.Tensor, d: torch.Tensor, size: int, alpha: float, beta: float) -> torch.Tensor:
    # dL/dx_j = g_j d_j^-beta - 2 beta alpha / n * x_j * sum_{i: j in window(i)} g_i x_i d_i^(-beta-1)
    ct = torch.promote_types(x.dtype, torch.float32)
    gf, xf, d = g.to(ct), x.to(ct), d.to(ct)
    scale = _pow_neg(d, beta)
    q = scale / d * (-2.0 * beta * alpha / size)
    return (gf * scale + xf * _window_sum(gf * xf * q, size)).to(g.dtype)


# Fused kernels: torch.compile (inductor) turns _fwd and _bwd into one loop each (C++ with OpenMP
# on CPU, Triton on GPU), so the window sum never lands in memory. Eager is exact and the fallback.
# TIMM_ALEXNET_SPLIT_LRN=eager|compiled|triton|auto (or set_lrn_mode); auto runs the hand-written
# Triton kernels on CUDA (lrn_triton.py) and, elsewhere, compiles for tensors of at least
# _AUTO_MIN_NUMEL elements (a training batch), where the one-off compile (~10 s) pays back.
# 'triton' forces the Triton kernels on any device (on the CPU only under TRITON_INTERPRET=1).
_MODES = ('auto', 'eager', 'compiled', 'triton')
_mode = os.environ.get('TIMM_ALEXNET_SPLIT_LRN', 'auto')
if _mode not in _MODES:
    raise ValueError(f'TIMM_ALEXNET_SPLIT_LRN must be one of {_MODES}, got {_mode!r}')
_AUTO_MIN_NUMEL = 1 << 20
_compiled: Dict[str, Optional[Tuple[Callable, Callable]]] = {}
_triton_op: list = []  # [the lrn_triton custom op, or None where triton does not import], resolved once
_log = logging.getLogger(__name__)


def set_lrn_mode(mode: str) -> None:
    """'auto' (default), 'eager', 'compiled' or 'triton' (these two raise where their kernels cannot be built)."""
    global _mode
    if mode not in _MODES:
        raise ValueError(f'LRN mode must be one of {_MODES}, got {mode!r}')
    _mode = mode


def _compile_kernels(device_type: str) -> Optional[Tuple[Callable, Callable]]:
    if device_type not in _compiled:
        quiet = logging.getLogger('torch.utils.cpp_extension')
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # "No CUDA runtime is found" on CPU-only machines
        try:
            fwd = torch.compile(_fwd, dynamic=True)
            bwd = torch.compile(_bwd, dynamic=True)
            x = torch.rand(2, 7, 3, 3, device=device_type)
            _, d = fwd(x, 5, 1e-4, 0.75, 2.0)
            bwd(x, x, d, 5, 1e-4, 0.75)
            _compiled[device_type] = (fwd, bwd)
        except Exception as e:  # no C++ compiler / Triton: eager is exact, only slower
            if _mode == 'compiled':
                raise
            warnings.warn(f'LRN: fused kernels unavailable on {device_type} ({type(e).__name__}: {e}); '
                          'using eager ops', stacklevel=3)
            _compiled[device_type] = None
        finally:
            quiet.setLevel(level)
    return _compiled[device_type]


def _kernels(x: torch.Tensor) -> Tuple[Callable, Callable]:
    """(fwd, bwd) for this tensor: compiled once per process and device type, or eager."""
    if _mode == 'eager' or torch.jit.is_tracing() or torch.compiler.is_compiling():
        return _fwd, _bwd
    if _mode == 'auto' and x.numel() < _AUTO_MIN_NUMEL:
        return _fwd, _bwd
    return _compile_kernels(x.device.type) or (_fwd, _bwd)


@torch.compiler.assume_constant_result  # torch.compile runs it as Python, once, not through dynamo (the import)
def _triton_available() -> bool:
    """Whether the Triton custom op is registered (imports it the first time)."""
    return _triton_lrn() is not None


def _triton_lrn() -> Optional[Callable]:
    """The Triton custom op (``torch.ops.timm_alexnet_split.lrn_triton``), or None where triton does not import
    (said once, as a warning: the inductor-compiled or eager kernels run instead, with the same results)."""
    if not _triton_op:
        try:
            importlib.import_module(f'{__package__}.lrn_triton')  # registers the op
            _triton_op.append(torch.ops.timm_alexnet_split.lrn_triton)
        except Exception as e:  # no triton, or a triton this torch cannot use
            if _mode == 'triton':
                raise
            _triton_op.append(None)
            if torch.cuda.is_available():
                _log.warning('LRN: Triton kernels unavailable (%s: %s); using the inductor-compiled or eager kernels',
                             type(e).__name__, e)
    return _triton_op[0]


def _wants_triton(device_type: str) -> bool:
    """Whether :func:`lrn` runs the Triton kernels for a tensor on this device type (before asking triton)."""
    return _mode == 'triton' or (_mode == 'auto' and device_type == 'cuda')


def _keep_layout(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``t`` dense in the layout of ``like``: channels_last stays channels_last (no copy for a dense tensor)."""
    cl = like.dim() == 4 and like.shape[1] > 1 and like.stride(1) == 1
    return t.contiguous(memory_format=torch.channels_last if cl else torch.contiguous_format)


def lrn_mode(device_type: str = 'cpu') -> str:
    """What :func:`lrn` runs for a training-sized tensor on this device type: 'triton', 'compiled' or 'eager'."""
    if _mode == 'eager':
        return 'eager'
    if _wants_triton(device_type) and _triton_lrn() is not None:
        return 'triton'
    return 'compiled' if _compile_kernels(device_type) else 'eager'


class _LRNFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, size: int, alpha: float, beta: float, k: float):
        fwd, bwd = _kernels(x)
        y, d = fwd(x, size, alpha, beta, k)
        ctx.save_for_backward(x, d)
        ctx.hp, ctx.bwd = (size, alpha, beta), bwd
        return y

    @staticmethod
    def backward(ctx, grad):
        x, d = ctx.saved_tensors
        return ctx.bwd(_keep_layout(grad, x), x, d, *ctx.hp), None, None, None, None

    @staticmethod
    def symbolic(g, x, size: int, alpha: float, beta: float, k: float):
        return g.op('LRN', x, size_i=size, alpha_f=alpha, beta_f=beta, bias_f=k)


def lrn(x: torch.Tensor, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0) -> torch.Tensor:
    """LRN across dim 1 of ``x`` in PyTorch / ONNX convention: x / (k + alpha / size * S) ** beta."""
    if torch.onnx.is_in_onnx_export() and not torch.jit.is_tracing():
        return torch.onnx.ops.symbolic(
            'LRN', (x,), dict(size=size, alpha=alpha, beta=beta, bias=k),
            dtype=x.dtype, shape=x.shape, version=1)
    if _wants_triton(x.device.type) and not torch.jit.is_tracing() and _triton_available():
        return torch.ops.timm_alexnet_split.lrn_triton(x, size, alpha, beta, k, False)
    return _LRNFunction.apply(_keep_layout(x, x), size, alpha, beta, k)


# torch.fx records lrn as one call (an autograd.Function cannot be traced through): symbolic_trace of a model works
torch.fx.wrap('lrn')


def lrn_ops(x: torch.Tensor, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0) -> torch.Tensor:
    """:func:`lrn` in elementary operators: ``x * (k + B(x * x)) ** -beta``, where B is a 1x1 convolution whose banded
    kernel holds alpha / size within size // 2 channels of the diagonal (the window sum, clipped at the tower's edges).

    In ONNX that is Mul, Conv, Add, Pow, Mul: what ``export --lrn ops`` writes, for runtimes whose own LRN kernel is
    slow (onnxruntime's CPU provider runs it ~2.5x faster than its LRN at batch 32).
    """
    c, h = x.shape[1], size // 2
    # built from Python numbers, so an export stores it as a constant rather than the ops that would compute it
    band = torch.tensor([[[[alpha / size if abs(i - j) <= h else 0.0]] for j in range(c)] for i in range(c)],
                        dtype=x.dtype, device=x.device)
    return x * (F.conv2d(x * x, band) + k).pow(-beta)


def lrn_reference(x: torch.Tensor, size: int, alpha: float, beta: float, k: float) -> torch.Tensor:
    """The formula, one channel at a time (slow; for tests). Same convention as :func:`lrn`."""
    c = x.shape[1]
    out = torch.empty_like(x)
    for i in range(c):
        lo, hi = max(0, i - size // 2), min(c, i + size // 2 + 1)
        s = (x[:, lo:hi] ** 2).sum(1)
        out[:, i] = x[:, i] / (k + alpha / size * s) ** beta
    return out


class TowerLRN(nn.Module):
    """Local response normalisation across the channels of one tower.

    Args:
        size: window n, odd (the ONNX LRN operator requires it). Paper: 5.
        alpha: paper 1e-4.
        beta: paper 0.75.
        k: paper 2 (Caffe's bvlc_alexnet: 1).
        alpha_over_n: True divides alpha by n (cuda-convnet2, Caffe, PyTorch, ONNX); False uses
            the paper's printed formula, k + alpha * S.
    """

    def __init__(self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0,
                 alpha_over_n: bool = True) -> None:
        super().__init__()
        if size < 1 or size % 2 == 0:
            raise ValueError(f'LRN size must be a positive odd integer, got {size}')
        if alpha < 0 or beta < 0 or k <= 0:
            raise ValueError(f'LRN needs alpha >= 0, beta >= 0, k > 0; got alpha={alpha}, beta={beta}, k={k}')
        self.size, self.alpha, self.beta, self.k = size, float(alpha), float(beta), float(k)
        self.alpha_over_n = alpha_over_n
        self.onnx_form = 'node'  # what an ONNX export writes (ONNX_FORMS); set by export_onnx(lrn_form=...)

    @property
    def onnx_alpha(self) -> float:
        """alpha in the convention of PyTorch / ONNX (divided by size inside the operator)."""
        return self.alpha if self.alpha_over_n else self.alpha * self.size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.onnx_form == 'ops' and torch.onnx.is_in_onnx_export():
            return lrn_ops(x, self.size, self.onnx_alpha, self.beta, self.k)
        return lrn(x, self.size, self.onnx_alpha, self.beta, self.k)

    def extra_repr(self) -> str:
        conv = 'alpha/n' if self.alpha_over_n else 'alpha (paper formula)'
        return f'size={self.size}, alpha={self.alpha:g} [{conv}], beta={self.beta:g}, k={self.k:g}, tower-local'
