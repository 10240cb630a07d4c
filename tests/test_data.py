"""The embedded demo dataset and the Cats vs Dogs split: determinism, layout, the cues, caching, CLI."""
import functools
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torchvision
from timm.data import create_dataset
from unwritable import KINDS, unwritable_folder

from timm_alexnet_split.cli import main as cli
from timm_alexnet_split.data import embedded
from timm_alexnet_split.data import embedded as data
from timm_alexnet_split.data.embedded import (
    CATSDOGS_KAGGLE_PER_CLASS,
    CATSDOGS_VAL_PER_CLASS,
    DEMO_CLASSES,
    DEMO_HUES,
    DEMO_IMG_SIZE,
    DEMO_ORIENTATIONS,
    DEMO_SPLITS,
    ensure_demo_data,
    make_demo_dataset,
    render_demo_images,
    split_catsdogs,
)
from timm_alexnet_split.errors import UserError

SMALL = dict(img_size=64, train_per_class=3, val_per_class=2)  # 64: just above the model's smallest input


def _tree(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob('*')) if p.is_file()}


# ---- demo dataset ------------------------------------------------------------------------------------------------
def test_demo_deterministic(tmp_path):
    a = _tree(make_demo_dataset(tmp_path / 'a', seed=0, progress=False, **SMALL))
    b = _tree(make_demo_dataset(tmp_path / 'b', seed=0, progress=False, **SMALL))
    c = _tree(make_demo_dataset(tmp_path / 'c', seed=1, progress=False, **SMALL))
    assert a == b
    assert a.keys() == c.keys()
    pngs = [k for k in a if k.endswith('.png')]
    assert sum(a[k] != c[k] for k in pngs) == len(pngs)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith('.')]  # no temporary folders left


def test_demo_layout_readable(tmp_path):
    root = make_demo_dataset(tmp_path / 'demo', progress=False, **SMALL)
    manifest = json.loads((root / 'manifest.json').read_text())
    for split, n in zip(DEMO_SPLITS, (SMALL['train_per_class'], SMALL['val_per_class'])):
        tv = torchvision.datasets.ImageFolder(str(root / split))
        assert tv.classes == sorted(DEMO_CLASSES)
        assert np.bincount(tv.targets).tolist() == [n] * len(DEMO_CLASSES)
        assert manifest['counts'][split] == {c: n for c in DEMO_CLASSES}
        img, _ = tv[0]
        assert img.size == (SMALL['img_size'],) * 2 and img.mode == 'RGB'
        ds = create_dataset('', root=str(root), split=split)
        assert len(ds) == n * len(DEMO_CLASSES)
        assert ds.reader.class_to_idx == tv.class_to_idx
    assert len(manifest['files']) == len(DEMO_CLASSES) * (SMALL['train_per_class'] + SMALL['val_per_class'])


def _colour_features(img: np.ndarray) -> np.ndarray:
    """What a colour-only observer sees: the image minus its grey part, as two opponent channels; their mean
    and their Fourier energy per demo orientation."""
    x = img.astype(np.float64) - img.mean(-1, keepdims=True)
    opp = x @ embedded._OPPONENT.T  # (n, h, w, 2)
    return np.concatenate([opp.mean((1, 2))] + [_orientation_energy(opp[..., i]) for i in range(2)], 1)


def _grey_features(img: np.ndarray) -> np.ndarray:
    """What a colour-blind observer sees: mean, spread and Fourier energy per demo orientation of the grey image."""
    grey = img.astype(np.float64).mean(-1)
    return np.concatenate([grey.mean((1, 2))[:, None], grey.std((1, 2))[:, None], _orientation_energy(grey)], 1)


def _orientation_energy(x: np.ndarray) -> np.ndarray:
    """Log Fourier energy of (n, h, w) maps in an angular bin around each demo orientation, in the stripes' band."""
    power = np.abs(np.fft.fft2(x - x.mean((1, 2), keepdims=True))) ** 2
    f = np.fft.fftfreq(x.shape[1])
    fy, fx = np.meshgrid(f, f, indexing='ij')
    radius = np.hypot(fx, fy)
    periods = np.array(data.DEMO_SPEC['period']) * x.shape[1] / DEMO_IMG_SIZE
    band = (radius > 0.8 / periods.max()) & (radius < 1.25 / periods.min())
    # stripes at angle a have their wave vector at (sin a, cos a) in (x, y-down) coordinates
    wave = np.degrees(np.arctan2(fx, fy)) % 180
    feats = []
    for a in DEMO_ORIENTATIONS:
        d = np.abs((wave - a + 90) % 180 - 90)
        feats.append(np.log(power[:, band & (d < 15)].sum(1)))
    return np.stack(feats, 1)


def _nearest_centroid(feats: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy of a nearest-class-mean classifier fitted on even and tested on odd samples."""
    fit, test = np.arange(len(labels)) % 2 == 0, np.arange(len(labels)) % 2 == 1
    mu, sd = feats[fit].mean(0), feats[fit].std(0) + 1e-12
    z = (feats - mu) / sd
    classes = np.unique(labels)
    centroids = np.stack([z[fit & (labels == c)].mean(0) for c in classes])
    pred = classes[((z[test][:, None] - centroids[None]) ** 2).sum(-1).argmin(1)]
    return float((pred == labels[test]).mean())


def test_demo_classes_need_both_cues():
    per_class = 40
    names = [c for c in DEMO_CLASSES for _ in range(per_class)]
    hue_of, angle_of = zip(*(embedded._class_attrs(c) for c in names))
    img = render_demo_images(np.random.default_rng(0), hue_of, angle_of, DEMO_IMG_SIZE)
    cls = np.array([DEMO_CLASSES.index(c) for c in names])
    hue = np.array([list(DEMO_HUES.values()).index(h) for h in hue_of])
    ori = np.array([DEMO_ORIENTATIONS.index(a) for a in angle_of])
    n_test = len(cls) // 2
    slack = lambda p: 3 * math.sqrt(p * (1 - p) / n_test)  # three standard errors of a test accuracy

    cf, gf = _colour_features(img), _grey_features(img)
    # colour names the hue family but says nothing about orientation ...
    assert _nearest_centroid(cf, hue) > 0.9
    p = 1 / len(DEMO_ORIENTATIONS)
    assert _nearest_centroid(cf, cls) < p + slack(p)
    # ... the grey image names the orientation but says nothing about hue ...
    assert _nearest_centroid(gf, ori) > 0.9
    p = 1 / len(DEMO_HUES)
    assert _nearest_centroid(gf, cls) < p + slack(p)
    # ... and the two together name the class
    assert _nearest_centroid(np.concatenate([cf[:, :2], gf[:, 2:]], 1), cls) > 0.8


def test_demo_hard_is_the_probe_generator_in_its_own_cache_folder(tmp_path, monkeypatch):
    monkeypatch.setenv('TIMM_ALEXNET_SPLIT_CACHE', str(tmp_path / 'cache'))
    hard = data.ensure_dataset('demo-hard', progress=False, **SMALL)
    demo = data.ensure_dataset('demo', progress=False, **SMALL)
    assert hard == tmp_path / 'cache' / f'demo-hard-v{data.DEMO_VERSION}' and demo == data.default_demo_root()
    params = json.loads((hard / 'manifest.json').read_text())['params']
    assert params['seed'] == 1 and params['spec'] == json.loads(json.dumps({**data.DEMO_SPEC, **data.DEMO_HARD_SPEC}))
    assert params['spec']['lum_noise'] == 35 and params['spec']['gabor_amp'] == [15, 35] and params['spec']['n_gabor'] == 6
    # bit for bit: the first chunk of the training split is render_demo_images with the override, rng([1, 0, 0])
    from PIL import Image
    names = [c for c in DEMO_CLASSES for _ in range(SMALL['train_per_class'])]
    hues, angles = zip(*(embedded._class_attrs(c) for c in names))
    expected = render_demo_images(np.random.default_rng([1, 0, 0]), hues, angles, SMALL['img_size'], data.DEMO_HARD_SPEC)
    assert np.array_equal(np.asarray(Image.open(hard / 'train' / names[4] / '00001.png')), expected[4])
    again = make_demo_dataset(tmp_path / 'again', variant='demo-hard', progress=False, **SMALL)
    assert _tree(again) == _tree(hard) != _tree(demo)
    with pytest.raises(UserError, match='unknown dataset'):
        data.ensure_dataset('nope')


def test_demo_hard_cues_are_weaker():
    names = [c for c in DEMO_CLASSES for _ in range(30)]
    hue_of, angle_of = zip(*(embedded._class_attrs(c) for c in names))
    hue = np.array([list(DEMO_HUES.values()).index(h) for h in hue_of])
    ori = np.array([DEMO_ORIENTATIONS.index(a) for a in angle_of])
    acc = {}
    for variant, spec in (('demo', None), ('demo-hard', data.DEMO_HARD_SPEC)):
        img = render_demo_images(np.random.default_rng(0), hue_of, angle_of, DEMO_IMG_SIZE, spec)
        colour, grey = _colour_features(img)[:, :2], _grey_features(img)[:, 2:]
        acc[variant] = (_separation(colour, hue), _separation(grey, ori), _nearest_centroid(colour, hue),
                        _nearest_centroid(grey, ori))
    assert acc['demo-hard'][0] < acc['demo'][0] / 1.5 and acc['demo-hard'][1] < acc['demo'][1] / 1.5  # weaker ...
    assert min(acc['demo-hard'][2:]) > 0.5  # ... still there


def _separation(feats: np.ndarray, labels: np.ndarray) -> float:
    """Between-class over within-class variance, averaged over the features: how far apart the classes lie."""
    means = np.stack([feats[labels == c].mean(0) for c in np.unique(labels)])
    within = np.mean([feats[labels == c].var(0) for c in np.unique(labels)], 0)
    return float((means.var(0) / within).mean())


def test_ensure_reuses_and_repairs(tmp_path, monkeypatch):
    monkeypatch.setenv('TIMM_ALEXNET_SPLIT_CACHE', str(tmp_path / 'cache'))
    assert data.default_demo_root() == tmp_path / 'cache' / f'demo-v{data.DEMO_VERSION}'
    ensure = functools.partial(ensure_demo_data, progress=False, **SMALL)
    root = ensure()
    assert root == data.default_demo_root()
    first = _tree(root)
    stamp = (root / 'manifest.json').stat().st_mtime_ns
    assert ensure() == root and (root / 'manifest.json').stat().st_mtime_ns == stamp  # reused, not rewritten

    victim = sorted((root / 'train').rglob('*.png'))[0]
    victim.write_bytes(victim.read_bytes()[:50])  # a truncated file
    (sorted((root / 'validation').rglob('*.png'))[-1]).unlink()  # and a missing one
    assert ensure() == root
    assert _tree(root) == first
    assert not [p for p in root.parent.iterdir() if p.name.startswith('.')]

    # other parameters are another dataset: regenerated in place of the demo folder
    other = ensure_demo_data(progress=False, img_size=64, train_per_class=2, val_per_class=1)
    assert len(list((other / 'train').rglob('*.png'))) == 2 * len(DEMO_CLASSES)


def test_ensure_never_deletes_user_files(tmp_path):
    root = tmp_path / 'mine'
    root.mkdir()
    (root / 'notes.txt').write_text('keep me')
    with pytest.raises(UserError, match='not a demo dataset'):
        ensure_demo_data(root, progress=False, **SMALL)
    assert (root / 'notes.txt').read_text() == 'keep me'
    with pytest.raises(UserError, match='not empty'):
        make_demo_dataset(root, progress=False, **SMALL)


def test_demo_data_cli(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(data, 'ensure_demo_data', functools.partial(ensure_demo_data, **SMALL))
    out = tmp_path / 'demo'
    assert cli(['demo-data', str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    stamp = (out / 'manifest.json').stat().st_mtime_ns
    assert cli(['demo-data', str(out)]) == 0 and (out / 'manifest.json').stat().st_mtime_ns == stamp
    assert cli(['demo-data', str(out), '--force']) == 0 and (out / 'manifest.json').stat().st_mtime_ns != stamp

    (tmp_path / 'file').write_text('x')
    assert cli(['demo-data', str(tmp_path / 'file')]) == 2
    (tmp_path / 'theirs').mkdir()
    (tmp_path / 'theirs' / 'a.txt').write_text('x')
    assert cli(['demo-data', str(tmp_path / 'theirs'), '--force']) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 2 and 'Traceback' not in err
    assert (tmp_path / 'theirs' / 'a.txt').exists()


# ---- Cats vs Dogs ------------------------------------------------------------------------------------------------
def test_catsdogs_rule_on_kaggle_names():
    names = [f'{c}.{i}.jpg' for c in ('cat', 'dog') for i in range(CATSDOGS_KAGGLE_PER_CLASS)]
    split, skipped, note = split_catsdogs(names[::-1])
    assert skipped == [] and note is None
    for c in ('cat', 'dog'):
        assert len(split['validation'][c]) == CATSDOGS_VAL_PER_CLASS
        assert len(split['train'][c]) == CATSDOGS_KAGGLE_PER_CLASS - CATSDOGS_VAL_PER_CLASS
        assert set(split['train'][c]) | set(split['validation'][c]) == {n for n in names if n.startswith(c)}
    assert split_catsdogs(names)[0] == split  # input order does not matter
    assert split_catsdogs(names, seed=1)[0]['validation'] != split['validation']
    with pytest.raises(UserError, match='--allow-partial'):
        split_catsdogs(names[1:])


def _kaggle(tmp_path: Path, cats: int, dogs: int) -> Path:
    src = tmp_path / 'kaggle_train'
    src.mkdir()
    for c, n in (('cat', cats), ('dog', dogs)):
        for i in range(n):
            (src / f'{c}.{i}.jpg').write_bytes(f'{c}{i}'.encode())
    (src / 'notes.txt').write_text('x')
    (src / 'cat.x.jpg').write_text('x')
    return src


def _listing(out: Path) -> dict:
    return {s: {c: sorted(p.name for p in (out / s / c).iterdir()) for c in ('cat', 'dog')} for s in DEMO_SPLITS}


def test_prepare_catsdogs(tmp_path, capsys):
    src = _kaggle(tmp_path, 125, 100)
    out1, out2 = tmp_path / 'a', tmp_path / 'b'
    assert cli(['prepare-catsdogs', str(src), str(out1), '--allow-partial']) == 0
    said = capsys.readouterr().out
    assert 'skipped 2' in said and 'cat.x.jpg' in said and 'partial' in said
    assert cli(['prepare-catsdogs', str(src), str(out2), '--allow-partial', '--copy']) == 0
    a, b = _listing(out1), _listing(out2)
    assert a == b  # deterministic
    val = round(100 * CATSDOGS_VAL_PER_CLASS / CATSDOGS_KAGGLE_PER_CLASS)
    assert [len(a['validation'][c]) for c in ('cat', 'dog')] == [val, val]  # balanced
    for c, n in (('cat', 125), ('dog', 100)):
        assert not set(a['train'][c]) & set(a['validation'][c])
        assert set(a['train'][c]) | set(a['validation'][c]) == {f'{c}.{i}.jpg' for i in range(n)}
    link = out1 / 'train' / 'cat' / a['train']['cat'][0]
    assert link.is_symlink() and Path(os.path.realpath(link)) == (src / link.name).resolve()
    copied = out2 / 'validation' / 'dog' / b['validation']['dog'][0]
    assert not copied.is_symlink() and copied.read_bytes() == (src / copied.name).read_bytes()
    record = json.loads((out1 / 'split.json').read_text())
    assert {c: sorted(v) for c, v in record['validation'].items()} == a['validation'] and record['partial']
    assert len(create_dataset('', root=str(out1), split='validation')) == 2 * val


def test_prepare_catsdogs_refuses(tmp_path, capsys):
    src = _kaggle(tmp_path, 30, 30)
    out = tmp_path / 'out'
    assert cli(['prepare-catsdogs', str(src), str(out)]) == 2  # not Kaggle's 25,000 without --allow-partial
    assert '--allow-partial' in capsys.readouterr().err and not out.exists()
    assert cli(['prepare-catsdogs', str(tmp_path / 'missing'), str(out)]) == 2
    assert cli(['prepare-catsdogs', str(tmp_path), str(out)]) == 2  # no cat.N.jpg there
    out.mkdir()
    (out / 'mine.txt').write_text('keep')
    assert cli(['prepare-catsdogs', str(src), str(out), '--allow-partial']) == 2
    assert (out / 'mine.txt').read_text() == 'keep' and len(list(out.iterdir())) == 1
    err = capsys.readouterr().err
    assert err.count('\n') == 3 and 'Traceback' not in err
    assert cli(['prepare-catsdogs', str(src), str(tmp_path / 'new'), '--copy', '--symlink']) == 2
    err = capsys.readouterr().err
    assert 'not allowed with argument' in err and err.count('\n') == 1 and not (tmp_path / 'new').exists()


@pytest.mark.parametrize('kind', KINDS)
def test_prepare_catsdogs_into_an_unwritable_place_is_one_line(tmp_path, capsys, kind):
    src = _kaggle(tmp_path, 4, 4)
    with unwritable_folder(tmp_path, kind) as folder:
        for out in (folder / 'split', folder / 'new' / 'split'):
            assert cli(['prepare-catsdogs', str(src), str(out), '--allow-partial']) == 2
            err = capsys.readouterr().err
            assert err.count('\n') == 1 and 'Traceback' not in err and f'cannot write {out}' in err, err
    assert len(list(src.iterdir())) == 10


def test_prepare_catsdogs_output_has_the_usual_mode_and_no_leftovers(tmp_path):
    src = _kaggle(tmp_path, 4, 4)
    out = tmp_path / 'made' / 'split'
    assert cli(['prepare-catsdogs', str(src), str(out), '--allow-partial']) == 0
    mask = os.umask(0)
    os.umask(mask)
    assert (out.stat().st_mode & 0o777) == 0o777 & ~mask  # not tempfile.mkdtemp's 0700
    assert [p.name for p in out.parent.iterdir()] == ['split']
