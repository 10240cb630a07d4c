"""The padding and pooling arithmetic of an imported graph: Caffe's and ONNX's ways of writing a convolution's
padding and a pooling's rounding, turned into what alexnet_split_2 computes, or refused.

Pure arithmetic on integers (no onnx, no torch). Invariant: every spatial size is computed as the graph computes
it, so the imported model's feature maps have the graph's sizes or the import stops.
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

from .errors import UserError

POOL_KERNEL, POOL_STRIDE = 3, 2


def conv_pads(attrs: Dict[str, Any], what: str, kernel: Sequence[int], stride: int, size: Sequence[int]) -> List[int]:
    """[top, left, bottom, right] padding of a Conv or MaxPool, auto_pad resolved."""
    auto = attrs.get('auto_pad', 'NOTSET')
    if auto in ('NOTSET', ''):
        pads = list(attrs.get('pads', [0, 0, 0, 0]))
    elif auto == 'VALID':
        pads = [0, 0, 0, 0]
    elif auto in ('SAME_UPPER', 'SAME_LOWER'):
        total = [max((-(-s // stride) - 1) * stride + k - s, 0) for s, k in zip(size, kernel)]
        small = [t // 2 for t in total]
        big = [t - t // 2 for t in total]
        pads = small + big if auto == 'SAME_UPPER' else big + small
    else:
        raise UserError(f'{what}: unknown auto_pad {auto!r}')
    if len(pads) != 4:
        raise UserError(f'{what}: pads {pads} is not 2-D padding; bvlc_alexnet is a 2-D network')
    return [int(p) for p in pads]


def pool_out(size: int, end_pad: int, ceil: bool) -> int:
    """Output length of a 3/2 max pool with padding only at the end (PyTorch's and ONNX's rule for ceil)."""
    span = size + end_pad - POOL_KERNEL
    out = (-(-span // POOL_STRIDE) if ceil else span // POOL_STRIDE) + 1
    if ceil and (out - 1) * POOL_STRIDE >= size:  # no window may start in the padding
        out -= 1
    return out


def check_pool(node, a: Dict[str, Any], what: str, size: Tuple[int, int], ceil_ok: set,
                sizes: List[str], pool_pads: List[List[int]]) -> Tuple[int, int]:
    """Check a 3/2 MaxPool; narrow ``ceil_ok`` to the rounding modes of the model that give the graph's sizes."""
    kernel = list(a.get('kernel_shape', []))
    strides = list(a.get('strides', [1, 1]))
    if kernel != [POOL_KERNEL] * 2 or strides != [POOL_STRIDE] * 2:
        raise UserError(f'{what}: MaxPool {kernel} stride {strides}; bvlc_alexnet pools 3x3 with stride 2')
    if any(d != 1 for d in a.get('dilations', [1, 1])):
        raise UserError(f'{what}: MaxPool dilations {list(a["dilations"])}; bvlc_alexnet has none')
    pads = conv_pads(a, what, kernel, POOL_STRIDE, size)
    if pads[0] or pads[1]:
        raise UserError(f'{what}: MaxPool pads {pads} at the top/left; the model pools without leading padding')
    graph_ceil = bool(a.get('ceil_mode', 0))
    out = []
    for dim, n in enumerate(size):
        end = pads[2 + dim]
        got = pool_out(n, end, graph_ceil)
        ours = {c: pool_out(n, 0, c) for c in (False, True)}
        ok = {c for c, v in ours.items() if v == got}
        head = f"{what}: the graph's MaxPool (pads {pads}, ceil_mode {int(graph_ceil)}) turns {n} into {got}"
        if not ok:
            raise UserError(f"{head}; the model gives {ours[False]} (rounding down) or {ours[True]} (Caffe's rounding up)")
        if not ok & ceil_ok:
            raise UserError(f'{head}, which needs ceil_mode={ok.pop()}; the pools before it need the other rounding')
        ceil_ok &= ok
        out.append(got)
    sizes.append(f'{what} {hw(out)}')
    pool_pads.append(pads)
    return out[0], out[1]


def hw(size: Sequence[int]) -> str:
    return str(size[0]) if size[0] == size[1] else f'{size[0]}x{size[1]}'
