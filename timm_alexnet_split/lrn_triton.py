"""Tower-local LRN as hand-written Triton kernels, in whatever layout the tensor has.

    y_i = a_i * d_i ** -beta,   d_i = k + alpha / n * sum of a_j ** 2 over |j - i| <= n // 2, j in [0, C)
    a = x, or relu(x) with ``relu=True`` (the ReLU before the LRN fused into it)

The kernels address a (N, C, H, W) tensor through its strides, as N x C x (H*W) with the two spatial
dimensions merged: channels_last tensors (the channel window runs along the contiguous axis), NCHW
tensors and channel slices of either are read in place; anything else is made contiguous first (a copy,
same result). They read bf16 / fp16 / fp32 / fp64, accumulate in fp32 (fp64 for fp64) and write the
input's dtype, in channels_last when the input's channel stride is 1, else NCHW.

Saved for backward: the input x only. The backward recomputes the normaliser from x (it is a window sum
over data the backward reads anyway), so the forward writes one tensor (y) and the backward one (dx):

    dx_j = m_j * (g_j * d_j ** -beta - 2 * beta * alpha / n * a_j * sum_{|i - j| <= n//2} g_i * a_i * d_i ** (-beta-1))

with m_j = [x_j > 0] when the ReLU is fused, else 1.

``lrn_triton`` is a ``torch.library.custom_op`` (with a fake implementation and autograd), so
``torch.compile`` keeps it as one opaque call in its graph instead of tracing through it. Importing this
module needs triton; on the CPU the kernels run only under ``TRITON_INTERPRET=1`` (tests).
"""
from __future__ import annotations

import os
from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

__all__ = ['lrn_triton', 'lrn_triton_backward', 'flat_strides', 'out_format']

_NUM_WARPS = 4
_TILE = 2048  # elements per program: positions x channels


@triton.jit
def _load_a(ptr, pos_off, c, C, pmask, sc, ACC: tl.constexpr, RELU: tl.constexpr):
    """a at channels ``c`` (a row vector) of the positions ``pos_off`` (a column vector); 0 outside [0, C)."""
    m = pmask & (c >= 0) & (c < C)
    v = tl.load(ptr + pos_off + c.to(tl.int64) * sc, mask=m, other=0.0).to(ACC)
    if RELU:
        v = tl.maximum(v, 0.0)
    return v


@triton.jit
def _window(ptr, pos_off, c, C, pmask, sc, HALO: tl.constexpr, ACC: tl.constexpr, RELU: tl.constexpr):
    """(a at channel c + j - HALO for j in 0..2 HALO, their squares): each shifted tile loaded once."""
    a = ()
    q = ()
    for j in tl.static_range(2 * HALO + 1):
        v = _load_a(ptr, pos_off, c + (j - HALO), C, pmask, sc, ACC, RELU)
        a = a + (v,)
        q = q + (v * v,)
    return a, q


@triton.jit
def _denominator(q, first: tl.constexpr, alpha_n, k, SIZE: tl.constexpr):
    """d = k + alpha / n * (q[first] + ... + q[first + SIZE - 1]): the window sum of squares, clipped (q is 0 there)."""
    s = q[first]
    for u in tl.static_range(1, SIZE):
        s += q[first + u]
    return s * alpha_n + k


@triton.jit
def _pow_neg(d, beta, BETA_075: tl.constexpr):
    """d ** -beta; beta = 0.75 (the paper's) as rsqrt(d) * sqrt(rsqrt(d))."""
    if BETA_075:
        r = 1.0 / tl.sqrt(d)
        out = r * tl.sqrt(r)
    else:
        out = tl.exp2(-beta * tl.log2(d))
    return out


@triton.jit
def _positions(pid_s, HW, n_pos, sn, ss, BLOCK_S: tl.constexpr):
    """(offsets, mask) of this program's BLOCK_S positions p = n * HW + s, as a column vector (int64)."""
    p = pid_s.to(tl.int64) * BLOCK_S + tl.arange(0, BLOCK_S).to(tl.int64)
    pmask = p < n_pos
    off = (p // HW) * sn + (p % HW) * ss
    return off[:, None], pmask[:, None]


@triton.jit
def _lrn_fwd_kernel(x_ptr, y_ptr, C, HW, n_pos, xsn, xsc, xss, ysn, ysc, yss, alpha_n, beta, k,
                    SIZE: tl.constexpr, BETA_075: tl.constexpr, RELU: tl.constexpr, ACC: tl.constexpr,
                    BLOCK_S: tl.constexpr, BLOCK_C: tl.constexpr):
    """y for a tile of BLOCK_S positions x BLOCK_C channels, from SIZE shifted loads of x."""
    pid_s, pid_c = tl.program_id(0), tl.program_id(1)
    xo, pmask = _positions(pid_s, HW, n_pos, xsn, xss, BLOCK_S)
    yo, _ = _positions(pid_s, HW, n_pos, ysn, yss, BLOCK_S)
    c = (pid_c * BLOCK_C + tl.arange(0, BLOCK_C))[None, :]
    a, q = _window(x_ptr, xo, c, C, pmask, xsc, SIZE // 2, ACC, RELU)
    d = _denominator(q, 0, alpha_n, k, SIZE)
    y = a[SIZE // 2] * _pow_neg(d, beta, BETA_075)
    tl.store(y_ptr + yo + c.to(tl.int64) * ysc, y.to(y_ptr.dtype.element_ty), mask=pmask & (c < C))


@triton.jit
def _lrn_bwd_kernel(g_ptr, x_ptr, dx_ptr, C, HW, n_pos, gsn, gsc, gss, xsn, xsc, xss, dsn, dsc, dss,
                    alpha_n, beta, k, SIZE: tl.constexpr, BETA_075: tl.constexpr, RELU: tl.constexpr,
                    ACC: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_C: tl.constexpr):
    """dx for a tile, from 2 SIZE - 1 shifted loads of x (the normalisers of the SIZE channels whose window holds
    each channel) and SIZE of g, each loaded once."""
    H: tl.constexpr = SIZE // 2
    pid_s, pid_c = tl.program_id(0), tl.program_id(1)
    xo, pmask = _positions(pid_s, HW, n_pos, xsn, xss, BLOCK_S)
    go, _ = _positions(pid_s, HW, n_pos, gsn, gss, BLOCK_S)
    do, _ = _positions(pid_s, HW, n_pos, dsn, dss, BLOCK_S)
    c = (pid_c * BLOCK_C + tl.arange(0, BLOCK_C))[None, :]
    a, q = _window(x_ptr, xo, c, C, pmask, xsc, 2 * H, ACC, RELU)  # a[j]: channel c + j - 2H
    # t = sum over the channels i = c + s - H whose window holds c of g_i * a_i * d_i ** (-beta - 1)
    t = tl.full((BLOCK_S, BLOCK_C), 0.0, ACC)  # tl.full: a builtin (tl.zeros is a jit function, not interpretable
    # when triton was imported before TRITON_INTERPRET was set)
    g = t
    for s in tl.static_range(SIZE):
        ci = c + (s - H)
        gi = tl.load(g_ptr + go + ci.to(tl.int64) * gsc, mask=pmask & (ci >= 0) & (ci < C), other=0.0).to(ACC)
        di = _denominator(q, s, alpha_n, k, SIZE)  # channel i's window: a[s .. s + SIZE - 1]
        t += gi * a[s + H] * _pow_neg(di, beta, BETA_075) / di
        if s == H:
            g = gi
    d = _denominator(q, H, alpha_n, k, SIZE)
    ac = a[2 * H]
    dx = g * _pow_neg(d, beta, BETA_075) - (2.0 * beta * alpha_n) * ac * t
    if RELU:
        dx = tl.where(ac > 0.0, dx, 0.0)  # relu(x) > 0 exactly where x > 0
    tl.store(dx_ptr + do + c.to(tl.int64) * dsc, dx.to(dx_ptr.dtype.element_ty), mask=pmask & (c < C))


def flat_strides(t: torch.Tensor) -> Optional[Tuple[int, int, int]]:
    """(stride of N, stride of C, stride of the merged H*W axis) of a 4-d tensor, or None where H and W do not merge
    into one strided axis (then the kernels need a copy)."""
    n, c, h, w = t.shape
    sn, sc, sh, sw = t.stride()
    if h == 1:
        return sn, sc, sw
    if w == 1 or sh == w * sw:
        return sn, sc, sw if w > 1 else sh
    return None


def out_format(t: torch.Tensor) -> torch.memory_format:
    """The layout the kernels write: channels_last where the channel axis of ``t`` is the contiguous one, else NCHW."""
    return torch.channels_last if t.shape[1] > 1 and t.stride(1) == 1 else torch.contiguous_format


def _readable(t: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int, int]]:
    """``t`` (or a copy in its own layout) and its flat strides: what the kernels can address."""
    st = flat_strides(t)
    if st is None:
        t = t.contiguous(memory_format=out_format(t))
        st = flat_strides(t)
    return t, st


def _launch_shape(c: int, n_pos: int, channels_last: bool) -> Tuple[int, int, Tuple[int, int]]:
    """(BLOCK_S, BLOCK_C, grid): channels_last tiles take many channels (the contiguous axis), NCHW tiles few."""
    block_c = min(triton.next_power_of_2(c), 64 if channels_last else 8)
    block_s = max(16, _TILE // block_c)
    return block_s, block_c, (triton.cdiv(n_pos, block_s), triton.cdiv(c, block_c))


def _acc_dtype(dtype: torch.dtype):
    if dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        raise TypeError(f'LRN kernels take floating-point tensors, got {dtype}')
    return tl.float64 if dtype == torch.float64 else tl.float32


def _check(x: torch.Tensor, size: int) -> None:
    """The kernels' preconditions: a 4-d tensor on CUDA (or anywhere under TRITON_INTERPRET=1), an odd window."""
    if x.device.type != 'cuda' and os.environ.get('TRITON_INTERPRET') != '1':
        raise ValueError(f'the Triton LRN kernels run on CUDA tensors (on {x.device.type} only with '
                         'TRITON_INTERPRET=1, the interpreter)')
    if x.dim() != 4:
        raise ValueError(f'LRN kernels take (N, C, H, W) tensors, got shape {tuple(x.shape)}')
    if size < 1 or size % 2 == 0:
        raise ValueError(f'LRN size must be a positive odd integer, got {size}')


def _forward(x: torch.Tensor, size: int, alpha: float, beta: float, k: float, relu: bool) -> torch.Tensor:
    _check(x, size)
    y = torch.empty_like(x, memory_format=out_format(x))
    if x.numel() == 0:
        return y
    x, xs = _readable(x)
    n, c, h, w = x.shape
    block_s, block_c, grid = _launch_shape(c, n * h * w, xs[1] == 1)
    _lrn_fwd_kernel[grid](x, y, c, h * w, n * h * w, *xs, *flat_strides(y), alpha / size, beta, k,
                          SIZE=size, BETA_075=beta == 0.75, RELU=relu, ACC=_acc_dtype(x.dtype),
                          BLOCK_S=block_s, BLOCK_C=block_c, num_warps=_NUM_WARPS)
    return y


def _backward(g: torch.Tensor, x: torch.Tensor, size: int, alpha: float, beta: float, k: float,
              relu: bool) -> torch.Tensor:
    _check(x, size)
    dx = torch.empty_like(x, memory_format=out_format(x))
    if x.numel() == 0:
        return dx
    x, xs = _readable(x)
    g, gs = _readable(g)
    n, c, h, w = x.shape
    block_s, block_c, grid = _launch_shape(c, n * h * w, xs[1] == 1)
    _lrn_bwd_kernel[grid](g, x, dx, c, h * w, n * h * w, *gs, *xs, *flat_strides(dx), alpha / size, beta, k,
                          SIZE=size, BETA_075=beta == 0.75, RELU=relu, ACC=_acc_dtype(x.dtype),
                          BLOCK_S=block_s, BLOCK_C=block_c, num_warps=_NUM_WARPS)
    return dx


@torch.library.custom_op('timm_alexnet_split::lrn_triton', mutates_args=())
def lrn_triton(x: torch.Tensor, size: int, alpha: float, beta: float, k: float, relu: bool = False) -> torch.Tensor:
    """LRN (PyTorch / ONNX convention: alpha divided by size) of ``x`` across dim 1, of relu(x) with ``relu``."""
    return _forward(x, size, alpha, beta, k, relu)


@lrn_triton.register_fake
def _(x, size, alpha, beta, k, relu=False):
    return torch.empty_like(x, memory_format=out_format(x))


@torch.library.custom_op('timm_alexnet_split::lrn_triton_backward', mutates_args=())
def lrn_triton_backward(grad: torch.Tensor, x: torch.Tensor, size: int, alpha: float, beta: float, k: float,
                        relu: bool = False) -> torch.Tensor:
    """The gradient of :func:`lrn_triton` with respect to ``x``, from ``x`` alone (nothing else saved)."""
    return _backward(grad, x, size, alpha, beta, k, relu)


@lrn_triton_backward.register_fake
def _(grad, x, size, alpha, beta, k, relu=False):
    return torch.empty_like(x, memory_format=out_format(x))


def _setup_context(ctx, inputs, output):
    x, size, alpha, beta, k, *rest = inputs
    ctx.save_for_backward(x)
    ctx.hp = (size, alpha, beta, k, bool(rest[0]) if rest else False)


def _grad(ctx, grad):
    (x,) = ctx.saved_tensors
    return lrn_triton_backward(grad, x, *ctx.hp), None, None, None, None, None


lrn_triton.register_autograd(_grad, setup_context=_setup_context)
