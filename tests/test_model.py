"""The split AlexNet as a timm model: architecture, connectivity, init, timm interface, learning."""
import math

import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data import resolve_data_config
from timm.optim import create_optimizer_v2

import timm_alexnet_split  # noqa: F401  (registers the models)
from timm_alexnet_split.model import MIN_INPUT_SIZE, AlexNetSplit, tower_widths

VARIANTS = ['alexnet_split_1', 'alexnet_split_2', 'alexnet_split_3']
# documented in the README (Widths); 1000 classes
PARAMS = {'alexnet_split_1': 62_378_344, 'alexnet_split_2': 60_965_224, 'alexnet_split_3': 60_494_184}
SMALL = 67  # smallest convenient input: keeps these tests fast on 2 CPU cores


def _x(n=2, size=SMALL, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 255 - 120


@pytest.fixture(scope='module')
def models():
    torch.manual_seed(0)
    return {v: timm.create_model(v, num_classes=5).eval() for v in VARIANTS}


def test_registered():
    assert timm.list_models('alexnet_split*') == VARIANTS
    assert timm.list_models('alexnet_split_2*', include_tags=True) == ['alexnet_split_2', 'alexnet_split_2.bvlc_in1k']


@pytest.mark.parametrize('name', VARIANTS)
def test_parameter_count(name):
    model = timm.create_model(name)
    assert sum(p.numel() for p in model.parameters()) == PARAMS[name]


def test_paper_widths_split_2():
    t = timm.create_model('alexnet_split_2').towers
    assert len(t) == 2
    for tower in t:
        assert [tower.conv1.out_channels, tower.conv2.out_channels, tower.conv3.out_channels,
                tower.conv4.out_channels, tower.conv5.out_channels] == [48, 128, 192, 192, 128]
        assert tower.conv2.in_channels == 48 and tower.conv3.in_channels == 256  # conv3 sees both towers
        assert tower.conv1.kernel_size == (11, 11) and tower.conv1.stride == (4, 4)


def test_widths_split_3_keep_paper_totals():
    assert tower_widths(256, 3) == [86, 85, 85]
    assert tower_widths(96, 3) == [32, 32, 32]
    m = timm.create_model('alexnet_split_3')
    for layer, total in zip(['conv1', 'conv2', 'conv3', 'conv4', 'conv5'], [96, 256, 384, 384, 256]):
        assert sum(getattr(t, layer).out_channels for t in m.towers) == total


def test_print_shows_towers_and_meeting_points():
    text = str(timm.create_model('alexnet_split_2'))
    assert '2 x Tower' in text and 'TowerLRN' in text and 'tower-local' in text
    assert 'conv3 sees all 2 towers' in text and '(fc6): Linear(in_features=9216' in text


@pytest.mark.parametrize('name', VARIANTS)
def test_forward_shapes(models, name):
    m = models[name]
    x = _x()
    assert m(x).shape == (2, 5)
    feats = m.forward_features(x)
    assert feats.shape == (2, m.num_features, *m.pretrained_cfg['pool_size'])
    assert m.forward_head(feats, pre_logits=True).shape == (2, m.head_hidden_size)


def test_paper_spatial_sizes_at_224():
    m = timm.create_model('alexnet_split_2').eval()
    sizes = [o.shape[-1] for o in m.forward_intermediates(_x(1, 224), intermediates_only=True)]
    assert sizes == [55, 27, 13, 13, 13]
    assert m.forward_features(_x(1, 224)).shape[-2:] == (6, 6)


def _captures(model):
    """Forward hooks recording every tower's conv outputs and fc6's input."""
    rec = {}
    hooks = []
    for t, tower in enumerate(model.towers):
        for i in range(1, 6):
            conv = getattr(tower, f'conv{i}')
            hooks.append(conv.register_forward_hook(lambda m, a, o, k=(i, t): rec.__setitem__(k, o)))
    hooks.append(model.pre_logits.fc6.register_forward_hook(lambda m, a, o: rec.__setitem__('fc6', o)))
    return rec, hooks


def connectivity(model, x):
    """deps[(layer, t, src)] = towers s whose conv{src} output conv{layer} of tower t depends on (autograd).

    layer 'fc6' has t = 0. Sources are every earlier conv layer, so a leak anywhere in between shows.
    """
    rec, hooks = _captures(model)
    try:
        model.eval()
        model(x)
    finally:
        for h in hooks:
            h.remove()
    n = len(model.towers)
    deps = {}
    for layer in (2, 3, 4, 5, 'fc6'):
        last = 5 if layer == 'fc6' else layer - 1
        for t in range(n) if layer != 'fc6' else [0]:
            out = rec['fc6'] if layer == 'fc6' else rec[(layer, t)]
            for src in range(1, last + 1):
                grads = torch.autograd.grad(out.sum(), [rec[(src, s)] for s in range(n)], retain_graph=True,
                                            allow_unused=True)
                deps[(layer, t, src)] = {s for s, g in enumerate(grads) if g is not None and g.abs().sum() > 0}
    return deps


def assert_paper_connectivity(deps, n):
    every = set(range(n))
    for t in range(n):
        assert deps[(2, t, 1)] == {t}, f'conv2 of tower {t} sees only its conv1'
        assert deps[(3, t, 2)] == every and deps[(3, t, 1)] == every, f'conv3 of tower {t} sees every tower'
        assert deps[(4, t, 3)] == {t}, f'conv4 of tower {t} sees only its conv3'
        assert deps[(5, t, 4)] == {t} and deps[(5, t, 3)] == {t}, f'conv5 of tower {t} sees only its tower'
    assert all(deps[('fc6', 0, s)] == every for s in range(1, 6)), 'fc6 sees every tower'


@pytest.mark.parametrize('name', ['alexnet_split_2', 'alexnet_split_3'])
def test_towers_meet_only_at_conv3_and_fc6(name):
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=3, init='caffe')
    assert_paper_connectivity(connectivity(model, _x(2, 99)), model.num_towers)


def test_connectivity_check_catches_a_leaking_tower():
    class Leaky(AlexNetSplit):
        def _stage_fns(self):
            s1, s2, s3, s4, s5 = super()._stage_fns()

            def s4_leak(ys):  # tower 0's conv5 input also carries a little of tower 1's conv3 maps
                out = s4(ys)
                return [out[0] + 1e-3 * ys[1].mean(), *out[1:]]
            return [s1, s2, s3, s4_leak, s5]

    torch.manual_seed(0)
    deps = connectivity(Leaky(num_towers=2, num_classes=3, init='caffe'), _x(2, 99))
    assert deps[(5, 0, 3)] == {0, 1}
    with pytest.raises(AssertionError, match='conv5 of tower 0'):
        assert_paper_connectivity(deps, 2)


def test_lrn_is_tower_local_in_the_model():
    """Changing tower 1's conv1 kernels must not change tower 0's LRN output."""
    torch.manual_seed(0)
    m = timm.create_model('alexnet_split_2', num_classes=3).eval()
    x = _x(1, 99)
    out = {}
    h = m.towers[0].norm1.register_forward_hook(lambda mod, a, o: out.__setitem__('n', o.clone()))
    m(x)
    before = out['n']
    with torch.no_grad():
        m.towers[1].conv1.weight.mul_(5.0)
    m(x)
    h.remove()
    torch.testing.assert_close(out['n'], before)


def test_caffe_scope_lrn_spans_all_channels():
    m = timm.create_model('alexnet_split_2', num_classes=3, lrn_scope='all', lrn_k=1.0).eval()
    assert isinstance(m.towers[0].norm1, nn.Identity) and m.norm1_all.k == 1.0
    m(_x(1, 99))


@pytest.mark.parametrize('init,one,fc_std', [('paper', 1.0, 0.01), ('caffe', 0.1, 0.005)])
def test_initialisation(init, one, fc_std):
    torch.manual_seed(0)
    m = timm.create_model('alexnet_split_2', init=init)
    for t in m.towers:
        for i in range(1, 6):
            conv = getattr(t, f'conv{i}')
            assert abs(conv.weight.std().item() - 0.01) < 0.01 * 0.05
            assert abs(conv.weight.mean().item()) < 1e-3
            assert torch.all(conv.bias == (one if i in (2, 4, 5) else 0.0))
    for fc in (m.pre_logits.fc6, m.pre_logits.fc7):
        assert abs(fc.weight.std().item() - fc_std) < fc_std * 0.02
        assert torch.all(fc.bias == one)
    assert abs(m.fc8.weight.std().item() - 0.01) < 0.0005 and torch.all(m.fc8.bias == 0)


@pytest.mark.parametrize('kwargs', [
    dict(num_towers=0), dict(num_towers=-1), dict(num_towers=97), dict(num_classes=-1), dict(in_chans=0),
    dict(drop_rate=1.5), dict(init='xavier'), dict(lrn_size=4), dict(lrn_scope='gpu'), dict(conv1_pad=-2),
    dict(fc_width=0), dict(fc_width=2.5),
])
def test_invalid_arguments_raise_value_error(kwargs):
    with pytest.raises(ValueError):
        AlexNetSplit(**kwargs)


def test_fc_width_narrows_fc6_fc7_and_leaves_the_towers():
    m = timm.create_model('alexnet_split_2', num_classes=5, fc_width=64).eval()
    paper = timm.create_model('alexnet_split_2', num_classes=5)
    assert m.head_hidden_size == 64 and paper.head_hidden_size == 4096
    assert m.pre_logits.fc6.weight.shape == (64, 256 * 6 * 6) and m.pre_logits.fc7.weight.shape == (64, 64)
    assert m.fc8.weight.shape == (5, 64)
    assert m.towers.state_dict().keys() == paper.towers.state_dict().keys()
    assert all(v.shape == paper.towers.state_dict()[k].shape for k, v in m.towers.state_dict().items())
    assert m(_x()).shape == (2, 5) and m.forward_head(m.forward_features(_x()), pre_logits=True).shape == (2, 64)
    m.reset_classifier(3)
    assert m(_x()).shape == (2, 3)


def test_state_dict_kwargs_rebuild_a_narrow_head():
    from timm_alexnet_split.checkpoint import state_dict_kwargs
    sd = timm.create_model('alexnet_split_2', num_classes=5, fc_width=64, global_pool='avg').state_dict()
    kw = state_dict_kwargs(sd)
    assert kw == {'num_towers': 2, 'num_classes': 5, 'global_pool': 'avg', 'fc_width': 64}
    timm.create_model('alexnet_split_2', **kw).load_state_dict(sd)
    assert 'fc_width' not in state_dict_kwargs(timm.create_model('alexnet_split_2').state_dict())


@pytest.mark.parametrize('towers', [1, 3, 5])
def test_state_dict_kwargs_count_the_towers(towers):
    from timm_alexnet_split.checkpoint import load_into, state_dict_kwargs
    sd = timm.create_model('alexnet_split_2', num_towers=towers, fc_width=16, num_classes=4).state_dict()
    kw = state_dict_kwargs(sd)
    assert kw['num_towers'] == towers
    load_into(timm.create_model('alexnet_split_2', **kw), sd)  # a plain state_dict rebuilds its own model


def test_too_small_input_is_a_clear_error(models):
    with pytest.raises(ValueError, match=str(MIN_INPUT_SIZE)):
        models['alexnet_split_2'](_x(1, MIN_INPUT_SIZE - 1))
    models['alexnet_split_2'](_x(1, MIN_INPUT_SIZE))


def test_other_input_sizes_pool_to_6x6(models):
    m = models['alexnet_split_2']
    for size in (MIN_INPUT_SIZE, 128, 227, 256):
        assert m.forward_features(_x(1, size)).shape[-2:] == (6, 6)


def test_resolve_data_config_is_paper_preprocessing():
    cfg = resolve_data_config({}, model=timm.create_model('alexnet_split_2'))
    assert cfg['input_size'] == (3, 224, 224)
    assert all(math.isclose(s, 1 / 255) for s in cfg['std'])
    # timm computes (x/255 - mean)/std: a 0-255 pixel minus the mean pixel
    pixel, mean = 200.0, cfg['mean'][0]
    assert math.isclose((pixel / 255 - mean) / cfg['std'][0], pixel - 255 * mean)


# ---- timm interface, in the style of timm's tests/test_models.py ----------------------------------
@pytest.mark.parametrize('name', VARIANTS)
def test_reset_classifier_and_pre_logits(models, name):
    m = timm.create_model(name, num_classes=7).eval()
    assert m.get_classifier().out_features == 7
    m.reset_classifier(0)
    assert m(_x()).shape == (2, m.head_hidden_size)
    m.reset_classifier(3)
    assert m(_x()).shape == (2, 3) and m.num_classes == 3
    m = timm.create_model(name, num_classes=0).eval()
    assert m(_x()).shape == (2, m.head_hidden_size)


@pytest.mark.parametrize('name', VARIANTS)
def test_features_only(name):
    m = timm.create_model(name, features_only=True).eval()
    feats = m(_x(1, 224))
    assert [f.shape[1] for f in feats] == m.feature_info.channels() == [96, 256, 384, 384, 256]
    for f, r in zip(feats, m.feature_info.reduction()):
        assert f.shape[-1] <= math.ceil(224 / r) + 1
    m = timm.create_model(name, features_only=True, out_indices=(1, 4)).eval()
    assert [f.shape[1] for f in m(_x(1, 99))] == [256, 256]


def test_forward_intermediates(models):
    m = models['alexnet_split_2']
    x = _x()
    final, inter = m.forward_intermediates(x)
    torch.testing.assert_close(final, m.forward_features(x))
    assert [i.shape[1] for i in inter] == [f['num_chs'] for f in m.feature_info]
    last2 = m.forward_intermediates(x, indices=2, intermediates_only=True, stop_early=True)
    assert [i.shape[1] for i in last2] == [384, 256]
    torch.testing.assert_close(last2[-1], inter[-1])


def test_in_chans(tmp_path):
    m = timm.create_model('alexnet_split_2', in_chans=1, num_classes=2).eval()
    assert m(torch.randn(2, 1, SMALL, SMALL) * 50).shape == (2, 2)
    with pytest.raises(ValueError, match='expected input'):
        m(_x())


def test_group_matcher_drives_layer_decay():
    m = timm.create_model('alexnet_split_2', num_classes=2)
    groups = create_optimizer_v2(m, 'sgd', lr=0.1, layer_decay=0.5).param_groups
    scales = sorted({g['lr_scale'] for g in groups})
    assert len(scales) >= 7  # stem, conv2..conv5, fc6, fc7 (and fc8) get their own decay
    names = {n for n, _ in m.named_parameters()}
    assert sum(len(g['params']) for g in groups) == len(names)


def test_grad_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    a = timm.create_model('alexnet_split_2', num_classes=3, drop_rate=0.0, init='caffe')
    b = timm.create_model('alexnet_split_2', num_classes=3, drop_rate=0.0, init='caffe')
    b.load_state_dict(a.state_dict())
    b.set_grad_checkpointing(True)
    x, y = _x(2, 99), torch.tensor([0, 2])
    for m in (a, b):
        m.train()
        F.cross_entropy(m(x), y).backward()
    for (n, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, msg=n)


@pytest.mark.parametrize('suffix', ['.pth', '.safetensors'])
def test_pretrained_from_local_file(tmp_path, suffix):
    torch.manual_seed(0)
    src = timm.create_model('alexnet_split_2', num_classes=4).eval()
    path = tmp_path / f'w{suffix}'
    if suffix == '.safetensors':
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    else:
        torch.save(src.state_dict(), path)
    m = timm.create_model('alexnet_split_2', pretrained=True, num_classes=4,
                          pretrained_cfg_overlay=dict(file=str(path), num_classes=4)).eval()
    x = _x()
    torch.testing.assert_close(m(x), src(x))
    # a new head for another task keeps the backbone
    m5 = timm.create_model('alexnet_split_2', pretrained=True, num_classes=5,
                           pretrained_cfg_overlay=dict(file=str(path), num_classes=4))
    torch.testing.assert_close(m5.towers[1].conv3.weight, src.towers[1].conv3.weight)
    # checkpoint_path= (timm's training-checkpoint loader)
    ck = tmp_path / 'ck.pth.tar'
    torch.save({'state_dict': src.state_dict(), 'epoch': 3}, ck)
    m2 = timm.create_model('alexnet_split_2', num_classes=4, checkpoint_path=str(ck)).eval()
    torch.testing.assert_close(m2(x), src(x))


def test_bvlc_tag_applies_caffe_options_only_to_its_tag():
    m = timm.create_model('alexnet_split_2.bvlc_in1k')
    assert m.lrn_scope == 'all' and m.norm1_all.k == 1.0 and m.towers[0].conv1.padding == (0, 0)
    assert m.pretrained_cfg['input_size'] == (3, 227, 227)
    assert m.forward_features(_x(1, 227)).shape[-2:] == (6, 6)
    p = timm.create_model('alexnet_split_2')
    assert p.lrn_scope == 'tower' and p.towers[0].norm1.k == 2.0 and p.towers[0].conv1.padding == (2, 2)


def test_torch_compile_matches_eager():
    torch.manual_seed(0)
    m = timm.create_model('alexnet_split_2', num_classes=3).eval()
    x = _x(2, SMALL)
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(m)(x), m(x), rtol=1e-4, atol=1e-4)


# ---- does it learn? --------------------------------------------------------------------------------
def _two_colour_batch():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(16, 3, 96, 96, generator=g) * 255
    y = torch.arange(16) % 2
    x[y == 0, 0] += 60
    x[y == 1, 2] += 60
    return x.clamp(0, 255) - torch.tensor([123.7, 116.3, 103.5]).view(1, 3, 1, 1), y


def _losses(init: str, lr: float, steps: int = 12):
    torch.manual_seed(0)
    m = timm.create_model('alexnet_split_2', num_classes=2, init=init).train()
    opt = torch.optim.SGD(m.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    x, y = _two_colour_batch()
    out = []
    for _ in range(steps):
        loss = F.cross_entropy(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        out.append(loss.item())
    return out


def test_caffe_init_learns_at_the_recipes_learning_rate():
    """Recipes that must train (demo, the ImageNet variant that starts) use Caffe's init at lr 0.01."""
    losses = _losses('caffe', 0.01)
    assert losses[0] == pytest.approx(math.log(2), abs=0.05)
    assert sum(losses[-3:]) / 3 < losses[0] - 0.05


def test_paper_init_at_lr_0_01_does_not_start():
    """The paper's printed recipe (biases 1, lr 0.01): the loss jumps instead of falling (README, Training)."""
    losses = _losses('paper', 0.01)
    assert losses[0] > math.log(2) + 0.3  # biases 1 on 0-255 inputs: large initial logits
    assert max(losses[1:]) > 5 * losses[0]


# ---- pretrained weights: none built in, and the error says how to get them (issue 14, item 8) -------------
@pytest.mark.parametrize('name', ['alexnet_split_2', 'alexnet_split_2.bvlc_in1k'])
def test_pretrained_without_a_file_says_how_to_import_bvlc(name):
    with pytest.raises(RuntimeError) as e:
        timm.create_model(name, pretrained=True)
    msg = str(e.value)
    assert 'timm-alexnet-split import-onnx bvlcalexnet-12.onnx -o bvlc_alexnet.safetensors' in msg
    assert "timm.create_model('alexnet_split_2.bvlc_in1k', pretrained=True, " \
           "pretrained_cfg_overlay=dict(file='bvlc_alexnet.safetensors'))" in msg
    assert 'docs/zoo.md' in msg and '\n' not in msg


@pytest.mark.parametrize('name,kwargs', [('alexnet_split_3', {}), ('alexnet_split_2', dict(num_towers=4))])
def test_pretrained_without_a_file_other_tower_counts(name, kwargs):
    with pytest.raises(RuntimeError, match=r'pretrained_cfg_overlay=dict\(file=PATH\)') as e:
        timm.create_model(name, pretrained=True, **kwargs)
    assert 'import-onnx' in str(e.value) and 'two towers' in str(e.value)  # says why bvlc does not fit


# ---- any tower count 1..96 (issue 14, item 11) -------------------------------------------------------------
@pytest.mark.parametrize('n', [1, 4, 5, 96])
def test_any_tower_count_builds_and_runs(n):
    torch.manual_seed(0)
    m = timm.create_model('alexnet_split_2', num_towers=n, num_classes=3, fc_width=16).eval()
    assert m.num_towers == n and len(m.towers) == n
    for layer, total in zip(['conv1', 'conv2', 'conv3', 'conv4', 'conv5'], [96, 256, 384, 384, 256]):
        widths = [getattr(t, layer).out_channels for t in m.towers]
        assert sum(widths) == total and max(widths) - min(widths) <= 1
    assert all(t.conv3.in_channels == 256 for t in m.towers)
    assert m.pretrained_cfg['first_conv'] == tuple(f'towers.{t}.conv1' for t in range(n))
    with torch.no_grad():
        assert m(_x(2, 64)).shape == (2, 3) and m(_x(1, MIN_INPUT_SIZE)).shape == (1, 3)


@pytest.mark.parametrize('name', VARIANTS + ['alexnet_split_2.bvlc_in1k'])
def test_num_towers_overrides_every_variant(name):
    m = timm.create_model(name, num_towers=5, num_classes=2, fc_width=8)
    assert len(m.towers) == 5
    assert len(timm.create_model(name, fc_width=8).towers) == {'1': 1, '2': 2, '3': 3}[name.split('.')[0][-1]]


@pytest.mark.parametrize('n', [0, -1, 97, 2.0, True, '4'])  # (timm drops None: the variant's own count)
def test_tower_count_outside_1_to_96_is_a_value_error(n):
    with pytest.raises(ValueError, match='num_towers must be an integer from 1 to 96'):
        timm.create_model('alexnet_split_2', num_towers=n)


@pytest.mark.parametrize('n', [1, 4, 5])
def test_towers_stay_separate_at_other_counts(n):
    torch.manual_seed(0)
    model = timm.create_model('alexnet_split_2', num_towers=n, num_classes=3, init='caffe', fc_width=16)
    assert_paper_connectivity(connectivity(model, _x(2, 64)), n)


def test_five_tower_weights_load_with_in_chans_adapted(tmp_path):
    """first_conv names every tower, so timm adapts all conv1s when in_chans differs from the file's."""
    torch.manual_seed(0)
    src = timm.create_model('alexnet_split_1', num_towers=5, num_classes=2, fc_width=8)
    path = tmp_path / 'five.pth'
    torch.save(src.state_dict(), path)
    m = timm.create_model('alexnet_split_1', num_towers=5, num_classes=2, fc_width=8, in_chans=1, pretrained=True,
                          pretrained_cfg_overlay=dict(file=str(path), num_classes=2))
    for t, s in zip(m.towers, src.towers):
        assert t.conv1.weight.shape[1] == 1
        torch.testing.assert_close(t.conv1.weight[:, 0], s.conv1.weight.sum(1))


# ---- tracing (issue 14, item 12): torch.jit.trace and torch.fx work; torch.jit.script does not (README) ----
def test_jit_trace_matches_eager():
    torch.manual_seed(0)
    m = timm.create_model('alexnet_split_3', num_classes=3, fc_width=16).eval()
    x = _x(2, SMALL)
    with torch.no_grad():
        traced = torch.jit.trace(m, x)
        torch.testing.assert_close(traced(x), m(x))
        torch.testing.assert_close(traced(_x(3, SMALL, seed=1)), m(_x(3, SMALL, seed=1)))


def test_torch_export_matches_eager():
    torch.manual_seed(0)
    m = timm.create_model('alexnet_split_2', num_classes=3, fc_width=16).eval()
    x = _x(2, SMALL)
    exported = torch.export.export(m, (x,))
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(x), m(x))


@pytest.mark.parametrize('kwargs', [{}, dict(lrn_scope='all'), dict(num_towers=5, global_pool='avg')])
def test_fx_symbolic_trace_matches_eager(kwargs):
    torch.manual_seed(0)
    m = timm.create_model('alexnet_split_2', num_classes=3, fc_width=16, **kwargs).eval()
    gm = torch.fx.symbolic_trace(m)
    for size in (SMALL, 99):  # 99 px: pool5 is not 6x6, the adaptive pool runs inside the traced graph
        x = _x(2, size)
        with torch.no_grad():
            torch.testing.assert_close(gm(x), m(x))
    with pytest.raises(ValueError, match='too small'):  # the input checks survive tracing
        gm(_x(1, MIN_INPUT_SIZE - 1))
    # and gradients flow through the traced graph (LRN's backward included)
    gm.train()
    gm(_x(2, SMALL)).sum().backward()
    assert m.towers[0].conv1.weight.grad is not None


def test_fx_feature_extraction_through_timm():
    from timm.models import create_feature_extractor
    m = timm.create_model('alexnet_split_2', num_classes=3, fc_width=16).eval()
    fx = create_feature_extractor(m, return_nodes={'towers.0.conv5': 'c5', 'pre_logits.fc6': 'fc6'})
    out = fx(_x(1, SMALL))
    assert out['c5'].shape[1] == 128 and out['fc6'].shape == (1, 16)


# ---- the models command (issue 14, item 13) ---------------------------------------------------------------
def test_models_command_prints_per_tower_widths_as_the_readme(capsys):
    import re
    from pathlib import Path

    from timm_alexnet_split.cli import models_main
    assert models_main(['--img-size', '64', '--num-classes', '2']) == 0
    lines = capsys.readouterr().out.splitlines()[1:]
    readme = (Path(__file__).resolve().parent.parent / 'README.md').read_text()
    assert len(lines) == len(VARIANTS)
    for line in lines:
        name, towers, widths = line.split()[:3]
        row = re.search(rf'^\| {name} \| {towers} \| ([^|]+) \|', readme, flags=re.M)
        assert row, f'{name} missing from the README table'
        assert widths == row.group(1).replace(' ', ''), name
    assert '32/86,85,85/128/128/86,85,85' in lines[2]


@pytest.mark.parametrize('scope', ['tower', 'all'])
@pytest.mark.parametrize('towers', [1, 2, 3])
def test_channels_last_is_kept_end_to_end_in_the_towers(towers, scope):
    """A channels_last input to a channels_last model: every 4-d tensor any module sees or returns is dense
    channels_last (no layout copy inside the towers: LRN, the towers' split and concatenation keep it), and so are
    the convolutions' weight gradients."""
    torch.manual_seed(0)
    model = timm.create_model('alexnet_split_2', num_towers=towers, num_classes=5, lrn_scope=scope)
    model = model.to(memory_format=torch.channels_last)
    seen = []

    def record(name):
        def hook(module, inputs, output):
            seen.extend((f'{name} {kind}', t) for kind, ts in (('input', inputs), ('output', (output,)))
                        for t in ts if isinstance(t, torch.Tensor) and t.dim() == 4)
        return hook

    for name, module in model.named_modules():
        module.register_forward_hook(record(name))
    model(_x().contiguous(memory_format=torch.channels_last)).sum().backward()
    assert len(seen) >= 17 * towers  # conv, act, norm, pool of every tower: the hooks did run
    not_cl = [name for name, t in seen if not t.is_contiguous(memory_format=torch.channels_last)]
    assert not_cl == []
    grads = {n: p.grad for n, p in model.named_parameters() if p.dim() == 4}
    assert [n for n, g in grads.items() if not g.is_contiguous(memory_format=torch.channels_last)] == []
