"""PCA lighting (paper section 4.1): per-image and batched transforms, eigen files, the pca-stats command."""
import json

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torchvision import transforms

from timm_alexnet_split import cli
from timm_alexnet_split.augment import (
    IMAGENET_EIGVAL,
    IMAGENET_EIGVEC,
    BatchPCALighting,
    PCALighting,
    load_eig,
    pca_stats_main,
)
from timm_alexnet_split.errors import UserError

# fb.resnet.torch's matrix as printed in its source (and in PAPER.md); it computes eigvec * (alpha * eigval)
FB_RESNET_EIGVEC = np.array([[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]])


def _random_eig(seed=0):
    """Eigenvalues and a non-symmetric orthogonal matrix whose rows are the eigenvectors."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    return np.array([0.3, 0.05, 0.01]), q


EIGS = {'imagenet': (np.array(IMAGENET_EIGVAL), np.array(IMAGENET_EIGVEC)), 'random': _random_eig()}


def _matches_paper_covariance(offsets, eigval, eigvec, std, tol=0.06):
    """Offsets (n, 3) have covariance V^T diag((std*lambda)^2) V (rows of V = eigenvectors), every direction checked."""
    c = np.cov(np.asarray(offsets, dtype=np.float64), rowvar=False)
    expected = eigvec.T @ np.diag((std * eigval) ** 2) @ eigvec
    w = eigvec / (std * eigval)[:, None]  # whitening: the expected covariance becomes the identity
    whitened = w @ c @ w.T
    return np.abs(whitened - np.eye(3)).max() < tol and np.linalg.norm(c - expected) < tol * np.linalg.norm(expected)


@pytest.mark.parametrize('which', list(EIGS))
def test_per_image_offset_covariance(which):
    eigval, eigvec = EIGS[which]
    std = 0.1
    t = PCALighting(std, eigval, eigvec)
    torch.manual_seed(0)
    zero = torch.zeros(3, 1, 1, dtype=torch.float64)
    offsets = torch.stack([t(zero).flatten() for _ in range(12000)]).numpy()
    assert _matches_paper_covariance(offsets, eigval, eigvec, std)


@pytest.mark.parametrize('which', list(EIGS))
def test_batch_offset_covariance_and_wrong_variants_fail(which):
    eigval, eigvec = EIGS[which]
    std = 0.1
    g = torch.Generator().manual_seed(0)
    n = 50000
    offsets = BatchPCALighting(std, eigval, eigvec)(torch.zeros(n, 3, 1, 1), generator=g).flatten(1).double().numpy()
    assert _matches_paper_covariance(offsets, eigval, eigvec, std)

    alpha = np.random.default_rng(1).standard_normal((n, 3)) * std
    wrong = {
        'eigvec transposed (columns as eigenvectors)': (alpha * eigval) @ eigvec.T,
        'lambda not multiplied': alpha @ eigvec,
        'sqrt(lambda)': (alpha * np.sqrt(eigval)) @ eigvec,
        'lambda squared': (alpha * eigval ** 2) @ eigvec,
    }
    assert _matches_paper_covariance((alpha * eigval) @ eigvec, eigval, eigvec, std)  # the check accepts the right formula
    for name, off in wrong.items():
        assert not _matches_paper_covariance(off, eigval, eigvec, std), name


def test_imagenet_constants_reproduce_fb_resnet_torch():
    v = np.array(IMAGENET_EIGVEC)
    np.testing.assert_allclose(v @ v.T, np.eye(3), atol=1e-4)
    assert np.all(v[0] < 0) and np.allclose(np.abs(v[0]), 1 / np.sqrt(3), atol=0.02)  # largest eigenvalue: the grey axis
    assert list(IMAGENET_EIGVAL) == sorted(IMAGENET_EIGVAL, reverse=True)
    alpha = torch.tensor([0.13, -0.07, 0.2], dtype=torch.float64)
    got = PCALighting(0.1)(torch.zeros(3, 1, 1, dtype=torch.float64), alpha=alpha).flatten().numpy()
    np.testing.assert_allclose(got, FB_RESNET_EIGVEC @ (alpha.numpy() * np.array(IMAGENET_EIGVAL)), atol=1e-12)


@pytest.mark.parametrize('norm_std', [(1 / 255,) * 3, IMAGENET_DEFAULT_STD, (1.0, 1.0, 1.0)])
def test_batch_after_normalisation_equals_normalising_after_per_image(norm_std):
    torch.manual_seed(0)
    x01 = torch.rand(5, 3, 6, 7)
    alpha = torch.randn(5, 3) * 0.1
    mean, nstd = torch.tensor(IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1), torch.tensor(norm_std).view(1, 3, 1, 1)
    per_image = PCALighting(0.1)
    expected = (torch.stack([per_image(x01[i], alpha=alpha[i]) for i in range(5)]) - mean) / nstd
    got = BatchPCALighting(0.1, norm_std=norm_std)((x01 - mean) / nstd, alpha=alpha)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)
    assert not torch.allclose(got, (x01 - mean) / nstd)


def test_batch_draws_once_per_image_and_is_reproducible():
    t = BatchPCALighting(0.1, norm_std=1 / 255)
    x = torch.zeros(8, 3, 4, 5)
    a = t(x, generator=torch.Generator().manual_seed(3))
    b = t(x, generator=torch.Generator().manual_seed(3))
    c = t(x, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)
    assert torch.equal(a, a[:, :, :1, :1].expand_as(a))  # one offset per image, the same on every pixel
    assert len({tuple(r) for r in a[:, :, 0, 0].tolist()}) == 8  # a fresh draw for each image
    assert a.abs().max() > 1  # norm_std 1/255: offsets in 0-255 units


def test_per_image_draws_each_call_and_std_zero_is_identity():
    img = torch.rand(3, 8, 8)
    t = PCALighting(0.1)
    assert not torch.equal(t(img), t(img))
    assert PCALighting(0.0)(img) is img
    x = torch.randn(2, 3, 4, 4)
    assert BatchPCALighting(0.0)(x) is x


def test_no_clamping_and_dtype_kept():
    white = torch.ones(3, 2, 2)
    out = PCALighting(0.1)(white, alpha=torch.tensor([-1.0, 0.0, 0.0]))  # first eigenvector is -grey: brightens
    assert out.min() > 1
    for dtype in (torch.float16, torch.bfloat16, torch.float64):
        assert PCALighting(0.1)(white.to(dtype)).dtype == dtype
        assert BatchPCALighting(0.1)(torch.ones(2, 3, 2, 2, dtype=dtype)).dtype == dtype
    x = torch.zeros(2, 3, 4, 4).to(memory_format=torch.channels_last)
    assert BatchPCALighting(0.1)(x).is_contiguous(memory_format=torch.channels_last)


def test_works_in_torchvision_compose_and_repr():
    pil = Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8))
    normalize = transforms.Normalize(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)
    pipe = transforms.Compose([transforms.ToTensor(), PCALighting(0.1), normalize])
    assert pipe(pil).shape == (3, 20, 24)
    r = repr(pipe)
    assert 'PCALighting(std=0.1, eigval=(0.2175, 0.0188, 0.0045), eigvec=((-0.5675, -0.5808, -0.5836)' in r
    assert 'norm_std=(0.5, 0.5, 0.5)' in repr(BatchPCALighting(0.2, norm_std=0.5))
    with pytest.raises(TypeError, match='ToTensor'):
        PCALighting()(pil)
    with pytest.raises(TypeError, match='ToTensor'):
        PCALighting()(torch.zeros(3, 2, 2, dtype=torch.uint8))
    with pytest.raises(ValueError, match='BatchPCALighting'):
        PCALighting()(torch.zeros(2, 3, 2, 2))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_batch_on_cuda_matches_cpu():
    x = torch.randn(4, 3, 8, 8)
    alpha = torch.randn(4, 3) * 0.1
    t = BatchPCALighting(0.1, norm_std=IMAGENET_DEFAULT_STD)
    torch.testing.assert_close(t(x.cuda(), alpha=alpha.cuda()).cpu(), t(x, alpha=alpha), rtol=1e-5, atol=1e-5)
    g = torch.Generator(device='cuda').manual_seed(0)
    y = t(x.cuda().half(), generator=g)
    assert y.device.type == 'cuda' and y.dtype == torch.float16


# ---------------------------------------------------------------- pca-stats and eigen files

COV = np.array([[0.0060, 0.0045, 0.0030], [0.0045, 0.0055, 0.0035], [0.0030, 0.0035, 0.0050]])
MEAN = np.array([0.5, 0.45, 0.4])


def _write_gaussian_images(root, sizes=((64, 48), (40, 70), (50, 50), (33, 61)), seed=0):
    """PNGs in nested folders, pixels drawn from N(MEAN, COV); returns all pixels written, 0-1."""
    rng = np.random.default_rng(seed)
    chol = np.linalg.cholesky(COV)
    pixels = []
    for k, (h, w) in enumerate(sizes):
        x = MEAN + rng.standard_normal((h * w, 3)) @ chol.T
        u8 = np.clip(np.round(x * 255), 0, 255).astype(np.uint8)
        folder = root / ('a' if k % 2 else 'b/deeper')
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(u8.reshape(h, w, 3)).save(folder / f'img{k}.png')
        pixels.append(u8 / 255.0)
    return np.concatenate(pixels)


def test_pca_stats_recovers_known_covariance(tmp_path):
    data = tmp_path / 'train'
    pixels = _write_gaussian_images(data)
    (data / 'notes.txt').write_text('not an image')
    out = tmp_path / 'eig.json'
    assert pca_stats_main([str(data), '-o', str(out), '--size', '0']) == 0
    res = json.loads(out.read_text())
    assert res['num_images'] == 4 and res['num_pixels'] == len(pixels) and res['skipped'] == []
    assert res['pixel_scale'] == '0-1'
    val, vec = np.array(res['eigval']), np.array(res['eigvec'])
    assert np.all(np.diff(val) < 0)
    np.testing.assert_allclose(vec.T @ np.diag(val) @ vec, np.cov(pixels, rowvar=False, bias=True), rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(res['mean'], pixels.mean(0), atol=1e-9)

    true_val, true_vec = np.linalg.eigh(COV)
    np.testing.assert_allclose(val, true_val[::-1], rtol=0.05)
    assert np.all(np.abs(np.sum(vec * true_vec[:, ::-1].T, axis=1)) > 0.99)
    np.testing.assert_allclose(res['mean'], MEAN, atol=0.01)

    ev, evec = load_eig(str(out))
    np.testing.assert_allclose(ev, val)
    np.testing.assert_allclose(evec, vec)


def test_pca_stats_skips_corrupt_images_and_resizes(tmp_path, capsys):
    data = tmp_path / 'train'
    _write_gaussian_images(data, sizes=((64, 48), (48, 64)))
    (data / 'a' / 'broken.jpg').write_bytes(b'\xff\xd8\xff\xe0 this is not a jpeg')
    good = (data / 'b' / 'deeper' / 'img0.png').read_bytes()
    (data / 'a' / 'truncated.png').write_bytes(good[: len(good) // 2])
    out = tmp_path / 'eig.json'
    assert pca_stats_main([str(data), '-o', str(out), '--size', '32']) == 0
    res = json.loads(out.read_text())
    assert res['num_images'] == 2
    assert sorted(s['path'] for s in res['skipped']) == ['a/broken.jpg', 'a/truncated.png']
    assert res['num_pixels'] == 2 * 32 * 43  # shorter side 48 -> 32, longer 64 -> 43
    assert '2 skipped' in capsys.readouterr().out



def test_pca_stats_max_images(tmp_path):
    data = tmp_path / 'train'
    _write_gaussian_images(data)
    out = tmp_path / 'eig.json'
    assert pca_stats_main([str(data), '-o', str(out), '--max-images', '2', '--size', '0']) == 0
    res = json.loads(out.read_text())
    assert res['num_images'] == 2 and res['num_pixels'] < 64 * 48 + 40 * 70 + 50 * 50 + 33 * 61


def _cli(capsys, *argv):
    rc = cli.main(['pca-stats', *map(str, argv)])
    return rc, capsys.readouterr().err.strip().splitlines()


def test_pca_stats_cli_bad_input_exits_2_with_one_line(tmp_path, capsys):
    rc, err = _cli(capsys, tmp_path / 'missing', '-o', tmp_path / 'e.json')
    assert rc == 2 and len(err) == 1 and 'not found' in err[0]

    empty = tmp_path / 'empty'
    empty.mkdir()
    rc, err = _cli(capsys, empty, '-o', tmp_path / 'e.json')
    assert rc == 2 and len(err) == 1 and 'no .png/.jpg/.jpeg images' in err[0]

    (empty / 'bad.png').write_bytes(b'garbage')
    rc, err = _cli(capsys, empty, '-o', tmp_path / 'e.json')
    assert rc == 2 and len(err) == 1 and 'could be read' in err[0]
    assert not (tmp_path / 'e.json').exists()

    data = tmp_path / 'train'
    _write_gaussian_images(data, sizes=((8, 8),))
    existing = tmp_path / 'mine.json'
    existing.write_text('precious')
    rc, err = _cli(capsys, data, '-o', existing)
    assert rc == 2 and len(err) == 1 and '--force' in err[0]
    assert existing.read_text() == 'precious'
    rc, _ = _cli(capsys, data, '-o', existing, '--force')
    assert rc == 0 and json.loads(existing.read_text())['num_images'] == 1

    rc, err = _cli(capsys, data, '-o', tmp_path / 'x.json', '--max-images', '0')
    assert rc == 2 and len(err) == 1
    rc, err = _cli(capsys, data, '-o', tmp_path / 'empty', '--force')  # a folder is never replaced
    assert rc == 2 and len(err) == 1 and 'cannot write' in err[0] and (tmp_path / 'empty' / 'bad.png').exists()


def test_load_eig_imagenet_and_bad_files(tmp_path):
    val, vec = load_eig('imagenet')
    np.testing.assert_allclose(val, IMAGENET_EIGVAL)
    np.testing.assert_allclose(vec, IMAGENET_EIGVEC)
    bad = {
        'missing.json': None,
        'notjson.json': 'not json {',
        'nokey.json': json.dumps({'eigval': [1, 2, 3]}),
        'shape.json': json.dumps({'eigval': [1, 2], 'eigvec': np.eye(3).tolist()}),
        'notortho.json': json.dumps({'eigval': [0.2, 0.02, 0.004], 'eigvec': [[1, 1, 0], [0, 1, 0], [0, 0, 1]]}),
        'negative.json': json.dumps({'eigval': [0.2, -0.02, 0.004], 'eigvec': np.eye(3).tolist()}),
        'scale.json': json.dumps({'eigval': [55.0, 4.8, 1.1], 'eigvec': np.eye(3).tolist(), 'pixel_scale': '0-255'}),
    }
    for name, text in bad.items():
        if text is not None:
            (tmp_path / name).write_text(text)
        with pytest.raises(UserError):
            load_eig(str(tmp_path / name))
