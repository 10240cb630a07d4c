"""The hand-written Triton LRN kernels (lrn_triton.py): the formula forward and backward in every dtype and layout,
the layout they write, the custom op under torch.compile, and the dispatch from lrn().

Without CUDA the kernels run in Triton's interpreter on CPU tensors: TRITON_INTERPRET=1 is set before the module that
defines them is imported (that decides interpreted or compiled) and while these tests run, and removed otherwise. With
CUDA they run compiled, on the GPU.
"""
import importlib
import logging
import os
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

triton = pytest.importorskip('triton', reason='needs triton')

CUDA = torch.cuda.is_available()
DEV = 'cuda' if CUDA else 'cpu'
if not CUDA:
    if 'timm_alexnet_split.lrn_triton' in sys.modules and os.environ.get('TRITON_INTERPRET') != '1':
        pytest.skip('lrn_triton was imported compiled, without CUDA: cannot run it here', allow_module_level=True)
    _had = os.environ.get('TRITON_INTERPRET')
    os.environ['TRITON_INTERPRET'] = '1'
    try:
        from timm_alexnet_split import lrn_triton as LT
    finally:
        if _had is None:
            del os.environ['TRITON_INTERPRET']
else:
    from timm_alexnet_split import lrn_triton as LT

from timm_alexnet_split.lrn import TowerLRN, lrn, lrn_mode, lrn_reference, set_lrn_mode  # noqa: E402

L = importlib.import_module('timm_alexnet_split.lrn')  # the module (the package exports a function of that name)

OP = torch.ops.timm_alexnet_split.lrn_triton
CL = torch.channels_last
# what one rounding to each dtype allows, relative; the kernels accumulate in fp32 (fp64 for fp64). Triton's
# interpreter (3.8) truncates fp32 -> bf16 where compiled kernels round to nearest: one bf16 ulp on the CPU.
RTOL = {torch.float64: 1e-12, torch.float32: 2e-6, torch.bfloat16: 2 ** -8 if CUDA else 2 ** -7,
        torch.float16: 2 ** -11}


@pytest.fixture(autouse=True, scope='module')
def interpreter():
    """TRITON_INTERPRET=1 while this module's tests run on a machine without CUDA (Triton reads it at launch)."""
    if CUDA:
        yield
        return
    had = os.environ.get('TRITON_INTERPRET')
    os.environ['TRITON_INTERPRET'] = '1'
    yield
    if had is None:
        del os.environ['TRITON_INTERPRET']


@pytest.fixture
def triton_mode():
    set_lrn_mode('triton')
    yield
    set_lrn_mode('auto')


def layouts(x: torch.Tensor):
    """The same values as NCHW, channels_last, a channel slice of a wider NHWC and of a wider NCHW tensor (neither
    contiguous; the kernels read both in place) and a transposed tensor whose H and W do not merge (copied first)."""
    n, c, h, w = x.shape
    wide = torch.cat([x, torch.zeros(n, 3, h, w, dtype=x.dtype, device=x.device)], 1)
    yield 'nchw', x.contiguous()
    yield 'channels_last', x.contiguous(memory_format=CL)
    yield 'nhwc slice', wide.contiguous(memory_format=CL)[:, :c]
    yield 'nchw slice', wide[:, :c]
    yield 'hw transposed', x.transpose(2, 3).contiguous().transpose(2, 3)


def reference_grad(x: torch.Tensor, g: torch.Tensor, size, alpha, beta, k, relu=False) -> torch.Tensor:
    """Autograd of lrn_reference (of relu first with ``relu``), in fp64."""
    xr = x.detach().double().requires_grad_(True)
    y = lrn_reference(torch.relu(xr) if relu else xr, size, alpha, beta, k)
    (gr,) = torch.autograd.grad(y, xr, g.double())
    return gr


def test_fallback_from_the_interpreter_is_not_silent_on_a_cpu_without_it():
    """On the CPU the kernels run only in the interpreter; a CPU tensor without it is refused, never computed wrong."""
    if CUDA:
        pytest.skip('the CPU refusal is for machines without CUDA')
    del os.environ['TRITON_INTERPRET']
    try:
        with pytest.raises(ValueError, match='TRITON_INTERPRET=1'):
            LT.lrn_triton(torch.ones(1, 3, 2, 2), 5, 1e-4, 0.75, 2.0)
    finally:
        os.environ['TRITON_INTERPRET'] = '1'


@pytest.mark.parametrize('dtype', [torch.float64, torch.float32, torch.bfloat16, torch.float16])
def test_forward_is_the_formula_in_every_dtype_and_layout(dtype):
    torch.manual_seed(0)
    x = (torch.randn(2, 11, 5, 6, dtype=torch.float64) * 40).to(dtype).to(DEV)
    want = lrn_reference(x.double(), 5, 1e-2, 0.75, 2.0)
    for name, xi in layouts(x):
        y = LT.lrn_triton(xi, 5, 1e-2, 0.75, 2.0)
        assert y.dtype == dtype, name
        torch.testing.assert_close(y.double(), want, rtol=RTOL[dtype], atol=1e-12, msg=name)


@pytest.mark.parametrize('name,want_cl', [('nchw', False), ('channels_last', True), ('nhwc slice', True),
                                          ('nchw slice', False), ('hw transposed', False)])
def test_result_and_gradient_keep_the_inputs_layout(name, want_cl):
    x = dict(layouts(torch.rand(2, 6, 4, 5, device=DEV) * 30))[name].requires_grad_(True)
    y = LT.lrn_triton(x, 5, 1e-2, 0.75, 2.0)
    (gx,) = torch.autograd.grad(y, x, torch.ones_like(y))
    fmt = CL if want_cl else torch.contiguous_format
    assert y.is_contiguous(memory_format=fmt) and gx.is_contiguous(memory_format=fmt)


@pytest.mark.parametrize('size,beta,k,relu', [(5, 0.75, 2.0, False), (3, 0.6, 1.0, False), (1, 0.75, 2.0, False),
                                              (5, 0.75, 2.0, True), (7, 0.5, 1.5, True)])
def test_gradcheck_fp64(size, beta, k, relu):
    torch.manual_seed(1)
    x = (torch.randn(1, 6, 2, 2, dtype=torch.float64, device=DEV) * 20).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: LT.lrn_triton(t, size, 5e-2, beta, k, relu), (x,))


def test_gradcheck_fp64_channels_last():
    x = (torch.randn(1, 5, 2, 3, dtype=torch.float64, device=DEV) * 20).contiguous(memory_format=CL)
    assert torch.autograd.gradcheck(lambda t: LT.lrn_triton(t, 5, 5e-2, 0.75, 2.0), (x.requires_grad_(True),))


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16, torch.float16])
def test_backward_matches_autograd_of_the_reference(dtype):
    """In every dtype and layout the gradient is autograd's of the formula on the same (rounded) input, to one
    rounding of the result, with relu fused and without."""
    torch.manual_seed(2)
    x = (torch.randn(2, 9, 4, 3, dtype=torch.float64) * 50).to(dtype).to(DEV)
    g = torch.randn(2, 9, 4, 3, dtype=torch.float64).to(dtype).to(DEV)
    for relu in (False, True):
        want = reference_grad(x, g, 5, 1e-3, 0.75, 2.0, relu)
        for name, xi in layouts(x):
            xi = xi.detach().requires_grad_(True)
            (gx,) = torch.autograd.grad(LT.lrn_triton(xi, 5, 1e-3, 0.75, 2.0, relu), xi, g)
            assert gx.dtype == dtype
            torch.testing.assert_close(gx.double(), want, rtol=4 * RTOL[dtype], atol=4 * RTOL[dtype] * want.abs().max(),
                                       msg=f'{name}, relu={relu}')


def test_relu_fused_is_lrn_of_relu():
    x = torch.randn(2, 7, 3, 3, dtype=torch.float64, device=DEV) * 30
    torch.testing.assert_close(LT.lrn_triton(x, 5, 1e-2, 0.75, 2.0, True),
                               lrn_reference(torch.relu(x), 5, 1e-2, 0.75, 2.0), rtol=1e-12, atol=1e-12)


def test_every_tower_width_from_1_to_96():
    """Odd and even channel counts, tiles of several channel blocks, forward and backward, fp32, channels_last."""
    torch.manual_seed(3)
    for c in range(1, 97):
        x = (torch.rand(1, c, 2, 1, device=DEV) * 80).contiguous(memory_format=CL).requires_grad_(True)
        g = torch.randn(1, c, 2, 1, device=DEV)
        y = LT.lrn_triton(x, 5, 1e-2, 0.75, 2.0)
        (gx,) = torch.autograd.grad(y, x, g)
        torch.testing.assert_close(y.double(), lrn_reference(x.detach().double(), 5, 1e-2, 0.75, 2.0),
                                   rtol=2e-6, atol=1e-6, msg=f'{c} channels')
        torch.testing.assert_close(gx.double(), reference_grad(x, g, 5, 1e-2, 0.75, 2.0), rtol=1e-5, atol=1e-5,
                                   msg=f'{c} channels, gradient')


def test_empty_batch_gives_an_empty_result():
    y = LT.lrn_triton(torch.empty(0, 4, 3, 3, device=DEV), 5, 1e-4, 0.75, 2.0)
    assert y.shape == (0, 4, 3, 3)


def test_registrations_pass_torch_library_opcheck():
    """The fake (meta) implementation and the autograd registration agree with the kernels (torch.library.opcheck)."""
    x = (torch.rand(2, 5, 3, 3, device=DEV) * 20).contiguous(memory_format=CL).requires_grad_(True)
    torch.library.opcheck(OP, (x, 5, 1e-2, 0.75, 2.0, True))
    torch.library.opcheck(OP, (x.detach().contiguous().requires_grad_(True), 3, 1e-2, 0.6, 1.0, False))


def test_lrn_dispatches_to_the_kernels_in_triton_mode(triton_mode):
    assert lrn_mode(DEV) == 'triton'
    x = (torch.rand(2, 8, 3, 3, dtype=torch.float64, device=DEV) * 30).requires_grad_(True)
    y = TowerLRN(5, 1e-2)(x)
    assert 'lrn_triton' in type(y.grad_fn).__name__  # the custom op's autograd node, not _LRNFunction's
    (gx,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(y, lrn_reference(x.detach(), 5, 1e-2, 0.75, 2.0))
    torch.testing.assert_close(gx, reference_grad(x, torch.ones_like(x), 5, 1e-2, 0.75, 2.0))


@pytest.mark.skipif(CUDA, reason='on CUDA auto mode runs the kernels (test below)')
def test_auto_mode_on_the_cpu_does_not_run_triton():
    assert L._mode == 'auto' and not L._wants_triton('cpu') and lrn_mode('cpu') in ('compiled', 'eager')


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason='needs CUDA')
def test_auto_mode_runs_the_kernels_on_cuda():
    assert lrn_mode('cuda') == 'triton'


def test_torch_compile_calls_the_custom_op_instead_of_tracing_through(triton_mode, monkeypatch):
    """One graph (fullgraph), the op a node of it, from a process that had not yet looked for triton; same values and
    gradients as eager."""
    from torch._dynamo.testing import CompileCounterWithBackend
    monkeypatch.setattr(L, '_triton_op', [])
    torch._dynamo.reset()
    torch.manual_seed(4)
    m = nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), TowerLRN(5, 1e-2)).to(DEV)
    x = torch.randn(2, 3, 7, 7, device=DEV).contiguous(memory_format=CL)
    counter = CompileCounterWithBackend('aot_eager')
    y = torch.compile(m, backend=counter, fullgraph=True)(x)
    y.sum().backward()
    calls = [n.target for n in counter.graphs[0].graph.nodes if n.op == 'call_function']
    assert counter.frame_count == 1 and OP in calls
    g = m[0].weight.grad.clone()
    m.zero_grad()
    y_eager = m(x)
    y_eager.sum().backward()
    torch.testing.assert_close(y, y_eager)
    torch.testing.assert_close(g, m[0].weight.grad)
    assert y.is_contiguous(memory_format=CL)


def test_missing_triton_is_said_once_and_falls_back_exactly(monkeypatch, caplog):
    """auto mode on a CUDA machine without a usable triton: one warning, then the other kernels (exact); 'triton'
    mode raises instead."""
    monkeypatch.setattr(L, '_triton_op', [])
    monkeypatch.setitem(sys.modules, 'timm_alexnet_split.lrn_triton', None)  # import fails as without triton
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    with caplog.at_level(logging.WARNING, logger='timm_alexnet_split.lrn'):
        assert L._triton_lrn() is None and L._triton_lrn() is None
    assert [r.getMessage().startswith('LRN: Triton kernels unavailable') for r in caplog.records] == [True]
    x = torch.rand(2, 6, 3, 3, dtype=torch.float64) * 30
    torch.testing.assert_close(lrn(x, 5, 1e-2, 0.75, 2.0), lrn_reference(x, 5, 1e-2, 0.75, 2.0))
    monkeypatch.setattr(L, '_triton_op', [])
    set_lrn_mode('triton')
    try:
        with pytest.raises(ImportError):
            L._triton_lrn()
    finally:
        set_lrn_mode('auto')


def test_kernels_compile_for_an_h100_class_gpu():
    """The real Triton compiler (not the interpreter) builds both kernels to sm_90 machine code, bf16 and fp32, relu
    fused or not: what runs on a GPU compiles, even where none is lent. A subprocess, without TRITON_INTERPRET."""
    pytest.importorskip('triton.backends.nvidia', reason="needs triton's NVIDIA backend (ptxas)")
    env = {k: v for k, v in os.environ.items() if k != 'TRITON_INTERPRET'}
    r = subprocess.run([sys.executable, '-c', _AOT], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split() == ['ok'] * 4


_AOT = '''
import triton, triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from timm_alexnet_split import lrn_triton as LT
common = dict(C='i32', HW='i32', n_pos='i32', alpha_n='fp32', beta='fp32', k='fp32')
for dt, relu, beta075 in (('bf16', True, True), ('fp32', False, False)):
    fwd = dict(x_ptr='*' + dt, y_ptr='*' + dt, xsn='i32', xss='i32', ysn='i32', yss='i32', **common)
    bwd = dict(g_ptr='*' + dt, x_ptr='*' + dt, dx_ptr='*' + dt, gsn='i32', gss='i32', xsn='i32', xss='i32',
               dsn='i32', dss='i32', **common)
    const = dict(SIZE=5, BETA_075=beta075, RELU=relu, ACC=tl.float32, BLOCK_S=32, BLOCK_C=64)
    for fn, sig, strides in ((LT._lrn_fwd_kernel, fwd, ('xsc', 'ysc')), (LT._lrn_bwd_kernel, bwd, ('gsc', 'xsc', 'dsc'))):
        c = dict(const, **{s: 1 for s in strides})
        names = fn.arg_names
        full = {n: sig.get(n, 'constexpr') for n in names}
        k = triton.compile(ASTSource(fn, full, c), target=GPUTarget('cuda', 90, 32))
        assert len(k.asm['cubin']) > 0 and 'ld.global' in k.asm['ptx']
        print('ok')
'''
