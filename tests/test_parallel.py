"""place_towers: towers on devices, the same maths and the same state_dict as the unplaced model."""
import pytest
import timm
import torch
import torch.nn.functional as F

import timm_alexnet_split  # noqa: F401
from timm_alexnet_split.parallel import head_device, parse_devices, place_towers, tower_devices

CUDA = torch.cuda.is_available()


def _pair(name, seed=0):
    torch.manual_seed(seed)
    a = timm.create_model(name, num_classes=4, drop_rate=0.0, init='caffe')
    b = timm.create_model(name, num_classes=4, drop_rate=0.0, init='caffe')
    b.load_state_dict(a.state_dict())
    return a, b


def _fwd_bwd(model, x, y):
    model.train()
    out = model(x.to(next(model.towers[0].parameters()).device))
    loss = F.cross_entropy(out, y.to(out.device))
    model.zero_grad()
    loss.backward()
    return out.detach().cpu(), {n: p.grad.detach().cpu() for n, p in model.named_parameters()}


@pytest.fixture
def full_fp32(monkeypatch):
    """No TF32 in convolutions or matrix products while the test runs (CUDA's defaults allow it in convolutions)."""
    monkeypatch.setattr(torch.backends.cudnn, 'allow_tf32', False, raising=False)
    precision = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision('highest')
    yield
    torch.set_float32_matmul_precision(precision)


@pytest.mark.parametrize('name,devices', [('alexnet_split_2', ['cpu', 'cpu']), ('alexnet_split_3', ['cpu'] * 3)]
                         + ([('alexnet_split_2', ['cuda:0', 'cuda:0']), ('alexnet_split_2', ['cuda:0', 'cpu'])]
                            if CUDA else []))
def test_placed_equals_unplaced(name, devices, full_fp32):
    """Placing the towers changes where they run, not the maths: the same outputs and gradients as the unplaced model,
    in full fp32 (cuDNN's default TF32 convolutions differ from the CPU by more than the tolerance). The reference
    runs on the CPU when a tower does (towers on two devices: data crosses between them), else on the towers'
    device."""
    ref, placed = _pair(name)
    ref.to('cpu' if 'cpu' in devices else devices[0])
    place_towers(placed, devices)
    assert tower_devices(placed) == [torch.device(d) for d in devices]
    x = torch.rand(2, 3, 80, 80) * 255 - 120
    y = torch.tensor([1, 3])
    out_ref, g_ref = _fwd_bwd(ref, x, y)
    out, g = _fwd_bwd(placed, x, y)
    torch.testing.assert_close(out, out_ref, rtol=1e-4, atol=1e-4)
    assert g.keys() == g_ref.keys()
    for n in g:
        torch.testing.assert_close(g[n], g_ref[n], rtol=1e-3, atol=1e-5, msg=n)


def test_state_dict_keys_unchanged_and_round_trip():
    ref, placed = _pair('alexnet_split_2')
    place_towers(placed, ['cpu', 'cpu'], head_device='cpu')
    assert head_device(placed) == torch.device('cpu')
    sd = placed.state_dict()
    assert list(sd) == list(ref.state_dict())
    fresh = timm.create_model('alexnet_split_2', num_classes=4)
    fresh.load_state_dict(sd)
    place_towers(fresh, ['cpu', 'cpu']).load_state_dict(ref.state_dict())


def test_bad_placements():
    m = timm.create_model('alexnet_split_2', num_classes=4)
    with pytest.raises(ValueError, match='2 towers need 2 devices'):
        place_towers(m, ['cpu'])
    with pytest.raises(ValueError, match='not a device'):
        place_towers(m, ['cpu', 'gpu7'])
    with pytest.raises(TypeError):
        place_towers(torch.nn.Linear(2, 2), ['cpu'])
    if not CUDA:
        with pytest.raises(ValueError, match='CUDA is not available'):
            place_towers(m, ['cuda:0', 'cuda:1'])


def test_parse_devices():
    assert parse_devices(['cpu', 'cpu'], 2) == [torch.device('cpu')] * 2
    assert parse_devices(['cpu'], 3) == [torch.device('cpu')] * 3
    if not CUDA:
        with pytest.raises(ValueError):
            parse_devices(['2'], 2)
    else:
        assert parse_devices(['1'], 2) == [torch.device('cuda:0')] * 2


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason='needs two GPUs')
def test_two_gpus_towers_on_each():
    ref, placed = _pair('alexnet_split_2')
    place_towers(placed, ['cuda:0', 'cuda:1'], head_device='cuda:1')
    assert tower_devices(placed) == [torch.device('cuda:0'), torch.device('cuda:1')]
    assert head_device(placed) == torch.device('cuda:1') and placed.fc8.weight.device == torch.device('cuda:1')
    x = torch.rand(4, 3, 224, 224) * 255 - 120
    y = torch.tensor([0, 1, 2, 3])
    out_ref, g_ref = _fwd_bwd(ref, x, y)
    out, g = _fwd_bwd(placed, x, y)
    torch.testing.assert_close(out, out_ref, rtol=1e-3, atol=1e-3)
