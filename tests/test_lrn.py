"""Tower-local LRN: the formula, both alpha conventions, tower boundaries, gradients, both kernels."""
import pytest
import torch
import torch.nn as nn

from timm_alexnet_split.lrn import TowerLRN, lrn, lrn_mode, lrn_ops, lrn_reference, set_lrn_mode


def paper_formula(x: torch.Tensor, n: int, alpha: float, beta: float, k: float, over_n: bool) -> torch.Tensor:
    """b_i = a_i / (k + a' * sum_{j=max(0,i-n/2)}^{min(C-1,i+n/2)} a_j^2)^beta, written out in float64."""
    x = x.double()
    c = x.shape[1]
    a = alpha / n if over_n else alpha
    out = torch.empty_like(x)
    for i in range(c):
        s = sum(x[:, j] ** 2 for j in range(max(0, i - n // 2), min(c - 1, i + n // 2) + 1))
        out[:, i] = x[:, i] / (k + a * s) ** beta
    return out


@pytest.fixture(params=['eager', 'compiled'])
def mode(request):
    set_lrn_mode(request.param)
    if request.param == 'compiled' and lrn_mode('cpu') != 'compiled':
        pytest.skip('fused kernels cannot be built here (no C++ compiler for inductor)')
    yield request.param
    set_lrn_mode('auto')


@pytest.mark.parametrize('over_n', [True, False])
@pytest.mark.parametrize('alpha,beta,k', [(1e-4, 0.75, 2.0), (1e-2, 0.75, 2.0), (3e-3, 0.6, 1.0)])
def test_lrn_matches_formula(mode, over_n, alpha, beta, k):
    torch.manual_seed(0)
    x = torch.randn(2, 11, 5, 6, dtype=torch.float64) * 40
    got = TowerLRN(5, alpha, beta, k, alpha_over_n=over_n)(x)
    want = paper_formula(x, 5, alpha, beta, k, over_n)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_lrn_float32_close_to_float64_formula(mode):
    torch.manual_seed(1)
    x = torch.relu(torch.randn(4, 48, 13, 13)) * 100
    got = TowerLRN(5, 1e-4, 0.75, 2.0)(x)
    want = paper_formula(x, 5, 1e-4, 0.75, 2.0, True)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)


def test_conventions_differ_by_n():
    x = torch.randn(1, 8, 3, 3, dtype=torch.float64) * 100
    paper = TowerLRN(5, 1e-4, alpha_over_n=False)
    divided = TowerLRN(5, 5e-4, alpha_over_n=True)
    torch.testing.assert_close(paper(x), divided(x))
    assert not torch.allclose(TowerLRN(5, 1e-4, alpha_over_n=False)(x), TowerLRN(5, 1e-4)(x))


def test_matches_torch_local_response_norm(mode):
    x = torch.relu(torch.randn(3, 20, 7, 7, dtype=torch.float64)) * 60
    torch.testing.assert_close(lrn(x, 5, 1e-2, 0.75, 2.0), nn.LocalResponseNorm(5, 1e-2, 0.75, 2.0)(x))


def test_tower_boundary_is_clipped():
    """The last channel of tower 0 must not see tower 1's channels, unlike LRN over all channels."""
    torch.manual_seed(0)
    t0 = torch.rand(2, 6, 4, 4, dtype=torch.float64) * 50
    t1 = torch.rand(2, 6, 4, 4, dtype=torch.float64) * 50
    norm = TowerLRN(5, 1e-2, 0.75, 2.0)
    local = norm(t0)
    torch.testing.assert_close(local, norm(t0.clone()))
    changed_other = norm(t0) - lrn_reference(torch.cat([t0, t1 * 3], 1), 5, 1e-2, 0.75, 2.0)[:, :6]
    assert changed_other[:, -2:].abs().max() > 1e-6  # across-boundary LRN differs near the edge
    torch.testing.assert_close(local[:, :-2], lrn_reference(torch.cat([t0, t1], 1), 5, 1e-2, 0.75, 2.0)[:, :4])
    torch.testing.assert_close(local, paper_formula(t0, 5, 1e-2, 0.75, 2.0, True))


@pytest.mark.parametrize('size,beta,k', [(5, 0.75, 2.0), (3, 0.6, 1.0), (1, 0.75, 2.0)])
def test_gradcheck(mode, size, beta, k):
    x = (torch.randn(2, 7, 3, 3, dtype=torch.float64) * 20).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: lrn(t, size, 5e-2, beta, k), (x,))


def test_backward_matches_autograd_of_reference(mode):
    torch.manual_seed(2)
    x = (torch.relu(torch.randn(3, 16, 6, 6, dtype=torch.float64)) * 80).requires_grad_(True)
    g = torch.randn(3, 16, 6, 6, dtype=torch.float64)
    (gx,) = torch.autograd.grad(lrn(x, 5, 1e-3, 0.75, 2.0), x, g)
    (gr,) = torch.autograd.grad(nn.LocalResponseNorm(5, 1e-3, 0.75, 2.0)(x), x, g)
    torch.testing.assert_close(gx, gr)


def test_bfloat16_keeps_dtype_and_is_close():
    x = torch.relu(torch.randn(2, 12, 5, 5)) * 50
    y = lrn(x.bfloat16())
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), lrn(x), rtol=2e-2, atol=1e-2)


@pytest.mark.parametrize('kwargs', [dict(size=4), dict(size=0), dict(alpha=-1.0), dict(k=0.0), dict(beta=-0.1)])
def test_invalid_arguments(kwargs):
    with pytest.raises(ValueError):
        TowerLRN(**kwargs)


def test_invalid_mode():
    with pytest.raises(ValueError):
        set_lrn_mode('fast')


@pytest.mark.parametrize('size,channels', [(5, 7), (5, 48), (3, 4), (7, 5)])
@pytest.mark.parametrize('alpha', [1e-4, 5e-3])
def test_lrn_as_elementary_ops_is_the_same_formula(size, channels, alpha):
    """What `export --lrn ops` writes: the window sum as a banded 1x1 convolution, clipped at the tower's edges."""
    x = torch.randn(2, channels, 3, 4, dtype=torch.float64) * 40
    torch.testing.assert_close(lrn_ops(x, size, alpha, 0.75, 2.0), lrn_reference(x, size, alpha, 0.75, 2.0),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
@pytest.mark.parametrize('lrn_kind', ['eager', 'compiled'])
def test_cuda_kernels_match_the_formula_forward_and_backward(lrn_kind):
    """On a GPU the fused (Triton) kernels and the eager ops give the formula's values and gradients, fp32 and bf16,
    at a training-sized tensor (the size at which 'auto' uses the fused kernels)."""
    set_lrn_mode(lrn_kind)
    try:
        assert lrn_mode('cuda') == lrn_kind
        torch.manual_seed(3)
        x = (torch.relu(torch.randn(64, 48, 27, 27, device='cuda')) * 80).requires_grad_(True)
        g = torch.randn_like(x)
        y = lrn(x, 5, 1e-4, 0.75, 2.0)
        (gx,) = torch.autograd.grad(y, x, g)
        xr = x.detach().double().requires_grad_(True)
        yr = nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0)(xr)
        (gr,) = torch.autograd.grad(yr, xr, g.double())
        torch.testing.assert_close(y.double(), yr, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(gx.double(), gr, rtol=1e-4, atol=1e-5)
        yb = lrn(x.detach().bfloat16(), 5, 1e-4, 0.75, 2.0)
        assert yb.dtype == torch.bfloat16
        torch.testing.assert_close(yb.double(), yr.detach(), rtol=2e-2, atol=2e-2)
    finally:
        set_lrn_mode('auto')


def test_layout_is_kept(mode):
    """channels_last in, channels_last out and back (the towers stay channels_last); NCHW stays NCHW."""
    for fmt in (torch.channels_last, torch.contiguous_format):
        x = (torch.rand(2, 12, 5, 5) * 50).contiguous(memory_format=fmt).requires_grad_(True)
        y = lrn(x, 5, 1e-2, 0.75, 2.0)
        (gx,) = torch.autograd.grad(y, x, torch.randn_like(y).contiguous(memory_format=fmt))
        assert y.is_contiguous(memory_format=fmt) and gx.is_contiguous(memory_format=fmt)
        torch.testing.assert_close(y, lrn_reference(x.detach(), 5, 1e-2, 0.75, 2.0))
