"""The leaves dataset: deterministic, balanced, readable by timm; its four class factors independent, each carried by
its own cue (hue layout by coarse colour, texture orientation and period by fine grey structure); the trainer's
--demo-data --demo-dataset leaves trains on it."""
import functools
import itertools
import json
import math

import numpy as np
import pytest
import torchvision
import yaml
from timm.data import create_dataset
from trainhelp import RECIPES_DIR

from timm_alexnet_split import data, train
from timm_alexnet_split.cli import main as cli
from timm_alexnet_split.data import leaves
from timm_alexnet_split.data.generated import OPPONENT as _OPPONENT
from timm_alexnet_split.data.leaves import (
    LEAVES_CLASSES,
    LEAVES_HUES,
    LEAVES_ORIENTATIONS,
    LEAVES_PERIODS,
    class_factors,
    make_leaves_dataset,
    render_leaves_images,
)
from timm_alexnet_split.errors import UserError

TINY = dict(img_size=64, train_per_class=2, val_per_class=1)


def _tree(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob('*')) if p.is_file()}


def test_leaves_deterministic(tmp_path):
    a = _tree(make_leaves_dataset(tmp_path / 'a', progress=False, **TINY))
    b = _tree(make_leaves_dataset(tmp_path / 'b', progress=False, **TINY))
    c = _tree(make_leaves_dataset(tmp_path / 'c', progress=False, seed=1, **TINY))
    assert a == b
    pngs = [k for k in a if k.endswith('.png')]
    assert len(pngs) == len(LEAVES_CLASSES) * 3 and a.keys() == c.keys()
    assert sum(a[k] != c[k] for k in pngs) == len(pngs)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith('.')]


def test_leaves_classes_are_every_combination_of_the_factors():
    assert len(LEAVES_CLASSES) >= 64 and len(set(LEAVES_CLASSES)) == len(LEAVES_CLASSES)
    factors = [class_factors(c) for c in LEAVES_CLASSES]
    assert sorted(factors) == sorted(itertools.product(LEAVES_HUES, LEAVES_HUES, LEAVES_ORIENTATIONS, LEAVES_PERIODS))
    # balanced: every value of one factor meets every value of each other factor equally often
    for i, j in itertools.combinations(range(4), 2):
        pairs = [(f[i], f[j]) for f in factors]
        counts = {p: pairs.count(p) for p in set(pairs)}
        assert len(set(counts.values())) == 1


def test_leaves_layout_balanced_and_readable_by_timm(tmp_path):
    root = make_leaves_dataset(tmp_path / 'leaves', progress=False, **TINY)
    manifest = json.loads((root / 'manifest.json').read_text())
    assert manifest['params']['version'] == leaves.LEAVES_VERSION and len(manifest['digest']) == 64
    for split, n in (('train', TINY['train_per_class']), ('validation', TINY['val_per_class'])):
        tv = torchvision.datasets.ImageFolder(str(root / split))
        assert tv.classes == sorted(LEAVES_CLASSES)
        assert np.bincount(tv.targets).tolist() == [n] * len(LEAVES_CLASSES)
        img, _ = tv[0]
        assert img.size == (64, 64) and img.mode == 'RGB'
        ds = create_dataset('', root=str(root), split=split)
        assert len(ds) == n * len(LEAVES_CLASSES) and ds.reader.class_to_idx == tv.class_to_idx


# ---- the cues ----------------------------------------------------------------------------------------------------
def _render(per_class: int, size: int = 64, seed: int = 0):
    names = [c for c in LEAVES_CLASSES for _ in range(per_class)]
    f = [class_factors(c) for c in names]
    img = render_leaves_images(np.random.default_rng(seed), [LEAVES_HUES[x[0]] for x in f], [LEAVES_HUES[x[1]] for x in f],
                               [x[2] for x in f], [LEAVES_PERIODS[x[3]] for x in f], size)
    cols = list(zip(*f))
    labels = [np.unique(c, return_inverse=True)[1] for c in cols]
    return img, labels


def _colour_features(img: np.ndarray) -> np.ndarray:
    """What a colour-only observer sees: mean opponent colour in the centre and in the surround."""
    opp = (img.astype(np.float64) - img.mean(-1, keepdims=True)) @ _OPPONENT.T
    size = img.shape[1]
    g = np.arange(size) + 0.5 - size / 2
    r = np.hypot(g[:, None], g[None, :])
    centre, surround = r < 0.2 * size, r > 0.4 * size
    return np.concatenate([opp[:, centre].mean(1), opp[:, surround].mean(1)], 1)


def _grey_features(img: np.ndarray) -> np.ndarray:
    """What a colour-blind observer sees: log Fourier energy of the grey image per orientation and period band."""
    grey = img.astype(np.float64).mean(-1)
    power = np.abs(np.fft.fft2(grey - grey.mean((1, 2), keepdims=True))) ** 2
    f = np.fft.fftfreq(grey.shape[1])
    fy, fx = np.meshgrid(f, f, indexing='ij')
    radius = np.hypot(fx, fy)
    wave = np.degrees(np.arctan2(fx, fy)) % 180  # stripes at angle a: wave vector (sin a, cos a) in (x, y-down)
    feats = []
    for p in LEAVES_PERIODS.values():
        band = np.abs(np.log(radius * p + 1e-12)) < 0.2
        for a in LEAVES_ORIENTATIONS:
            d = np.abs((wave - a + 90) % 180 - 90)
            feats.append(np.log(power[:, band & (d < 15)].sum(1)))
    return np.stack(feats, 1)


def _nearest_centroid(feats: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy of a nearest-class-mean classifier fitted on even and tested on odd samples."""
    fit, test = np.arange(len(labels)) % 2 == 0, np.arange(len(labels)) % 2 == 1
    z = (feats - feats[fit].mean(0)) / (feats[fit].std(0) + 1e-12)
    classes = np.unique(labels)
    centroids = np.stack([z[fit & (labels == c)].mean(0) for c in classes])
    pred = classes[((z[test][:, None] - centroids[None]) ** 2).sum(-1).argmin(1)]
    return float((pred == labels[test]).mean())


def test_leaves_factors_independent_and_each_in_its_own_cue():
    img, (centre, surround, orient, period) = _render(per_class=8)
    hue_pair, form = centre * 3 + surround, orient * 2 + period
    n_test = len(centre) // 2
    below_chance = lambda acc, k: acc < 1 / k + 3 * math.sqrt((1 / k) * (1 - 1 / k) / n_test)
    cf, gf = _colour_features(img), _grey_features(img)
    # colour tells the centre and surround hues, and nothing of orientation or period ...
    assert _nearest_centroid(cf, centre) > 0.5 and _nearest_centroid(cf, surround) > 0.75
    assert below_chance(_nearest_centroid(cf, form), 8)
    # ... the grey image tells orientation and period, and nothing of the hues
    assert _nearest_centroid(gf, orient) > 0.75 and _nearest_centroid(gf, period) > 0.75
    assert below_chance(_nearest_centroid(gf, hue_pair), 9)
    # the factors' measured cues are uncorrelated across factors: colour features do not vary with the form
    # factors beyond chance, grey features not with the hues (above), and the two feature sets are unrelated
    corr = np.corrcoef(np.concatenate([cf, gf], 1).T)[:cf.shape[1], cf.shape[1]:]
    assert np.abs(corr).max() < 0.15


def test_leaves_images_are_dead_leaves_with_coarse_colour():
    """Occlusion makes flat patches with sharp edges; colour is smoother than luminance."""
    img, _ = _render(per_class=1)
    x = img.astype(np.float64)
    grey = x.mean(-1)
    opp = (x - x.mean(-1, keepdims=True)) @ _OPPONENT.T

    def high_share(m):  # share of variance in the upper half of the frequencies
        p = np.abs(np.fft.fft2(m - m.mean((1, 2), keepdims=True), axes=(1, 2))) ** 2
        f = np.fft.fftfreq(m.shape[1])
        hi = np.hypot(f[:, None], f[None, :]) > 0.25
        return p[:, hi].sum() / p.sum()

    assert high_share(grey) > 2 * high_share(opp[..., 0]) and high_share(grey) > 2 * high_share(opp[..., 1])
    assert 90 < grey.mean() < 170 and (x == 255).mean() < 0.05 and (x == 0).mean() < 0.05


def test_leaves_size_is_an_option():
    img, _ = _render(per_class=1, size=80)
    assert img.shape == (len(LEAVES_CLASSES), 80, 80, 3) and img.dtype == np.uint8
    with pytest.raises(UserError, match='at least'):
        make_leaves_dataset('unused', img_size=32, progress=False)


# ---- selection: demo-data and the trainer --------------------------------------------------------------------------
@pytest.fixture
def tiny_leaves(monkeypatch, tmp_path):
    monkeypatch.setenv('TIMM_ALEXNET_SPLIT_CACHE', str(tmp_path / 'cache'))
    monkeypatch.setattr(leaves, 'ensure_leaves_data', functools.partial(leaves.ensure_leaves_data, **TINY))
    return tmp_path / 'cache' / f'leaves-v{leaves.LEAVES_VERSION}'


def test_demo_data_cli_makes_the_leaves_dataset(tiny_leaves, tmp_path, capsys):
    assert cli(['demo-data', '--dataset', 'leaves']) == 0
    said = capsys.readouterr().out
    assert str(tiny_leaves) in said and f'{len(LEAVES_CLASSES)} classes' in said
    first = _tree(tiny_leaves)
    assert cli(['demo-data', str(tmp_path / 'mine'), '--dataset', 'leaves']) == 0
    assert _tree(tmp_path / 'mine') == first
    assert cli(['demo-data', '--dataset', 'nope']) == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'nope'" in err and err.count('\n') == 1


def test_trainer_option_names_every_dataset():
    action = {a.dest: a for a in train.build_parser()._actions}['demo_dataset']
    assert tuple(action.choices) == data.DATASETS and action.default == 'demo'


def test_trainer_trains_on_the_leaves_dataset(tiny_leaves, tmp_path, monkeypatch):
    monkeypatch.setattr(leaves, 'ensure_leaves_data', functools.partial(leaves.ensure_leaves_data.func, img_size=64,
                                                                        train_per_class=1, val_per_class=1))
    recipe = yaml.safe_load(open(RECIPES_DIR / 'leaves.yaml'))
    assert recipe['demo_data'] is True and recipe['demo_dataset'] == 'leaves'
    code = train.main(['--demo-data', '--demo-dataset', 'leaves', '--model', 'alexnet_split_2', '--model-kwargs',
                       'fc_width=64', '--img-size', '64', '-b', '36', '--epochs', '1', '--device', 'cpu', '--workers', '0',
                       '--no-save-conv1', '--no-safetensors', '--output', str(tmp_path / 'runs'), '--experiment', 'leaves'])
    assert code == 0
    run = tmp_path / 'runs' / 'leaves'
    args = yaml.safe_load((run / 'args.yaml').read_text())
    assert args['demo_dataset'] == 'leaves' and args['data_dir'] == str(tiny_leaves)
    assert args['num_classes'] == len(LEAVES_CLASSES)
    assert len((run / 'summary.csv').read_text().strip().splitlines()) == 2  # header + the one epoch
