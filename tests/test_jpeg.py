"""jpeg.decode_rgb: PIL's pixels by libjpeg-turbo without PIL (simplejpeg), PIL for what it cannot match."""
import io

import numpy as np
import pytest
from PIL import Image

from timm_alexnet_split.data import jpeg, shard_reader

simplejpeg = pytest.importorskip('simplejpeg')  # a dependency: without it decode_rgb is PIL itself


def _jpeg(image, **options):
    out = io.BytesIO()
    image.save(out, 'JPEG', **options)
    return out.getvalue()


@pytest.fixture(scope='module')
def photo():
    rng = np.random.default_rng(0)
    smooth = np.kron(rng.integers(0, 256, (12, 14, 3)), np.ones((8, 8, 1)))[:89, :107]
    return Image.fromarray(np.clip(smooth + rng.normal(0, 12, smooth.shape), 0, 255).astype(np.uint8))


def _pil(data, mode='RGB'):
    return np.asarray(Image.open(io.BytesIO(data)).convert(mode))


@pytest.mark.parametrize('kind', ['4:2:0', '4:4:4 q50', 'progressive', 'grey', 'cmyk'])
def test_the_pixels_are_pils(photo, kind, monkeypatch):
    image = {'grey': photo.convert('L'), 'cmyk': photo.convert('CMYK')}.get(kind, photo)
    options = {'4:4:4 q50': {'quality': 50, 'subsampling': 0}, 'progressive': {'progressive': True}}.get(kind, {})
    data = _jpeg(image, **options)
    calls = []
    real = jpeg._simplejpeg().decode_jpeg
    monkeypatch.setattr(jpeg._simplejpeg(), 'decode_jpeg', lambda *a, **k: calls.append(1) or real(*a, **k))
    got = jpeg.decode_rgb(data)
    assert got.mode == 'RGB' and np.array_equal(np.asarray(got), _pil(data))
    assert bool(calls) == (kind != 'cmyk')  # CMYK: PIL converts it otherwise than libjpeg-turbo would


def test_broken_files_get_pils_verdict(photo):
    data = _jpeg(photo)
    cut = data[:len(data) * 7 // 10]
    with pytest.raises(OSError, match='truncated'):  # as PIL: a truncated file is unreadable
        jpeg.decode_rgb(cut)
    closed = cut + b'\xff\xd9'  # libjpeg-turbo refuses it, PIL decodes what is there: as before
    assert np.array_equal(np.asarray(jpeg.decode_rgb(closed)), _pil(closed))
    png = io.BytesIO()
    photo.save(png, 'PNG')
    assert np.array_equal(np.asarray(jpeg.decode_rgb(png.getvalue())), np.asarray(photo))
    assert jpeg.decode_rgb(data, 'L').mode == 'L'


def test_an_image_beyond_pils_bomb_limit_gets_pils_verdict(photo, monkeypatch):
    monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 89 * 107 // 4)  # the photo is over twice (PIL's) the limit
    with pytest.raises(Image.DecompressionBombError):
        jpeg.decode_rgb(_jpeg(photo))


def test_a_simplejpeg_that_disagrees_with_pil_is_not_used(monkeypatch, caplog):
    class Other:
        @staticmethod
        def decode_jpeg(data, colorspace):
            return np.asarray(Image.open(io.BytesIO(data)).convert('RGB')) // 2 * 2  # another libjpeg's rounding
    monkeypatch.setattr(jpeg, '_SIMPLEJPEG', jpeg._UNCHECKED)
    monkeypatch.setitem(__import__('sys').modules, 'simplejpeg', Other)
    assert jpeg.decoder_name() == 'PIL' and 'otherwise than PIL' in caplog.text


def test_without_simplejpeg_pil_decodes_the_same(photo, monkeypatch):
    data = _jpeg(photo)
    fast = np.asarray(jpeg.decode_rgb(data))
    monkeypatch.setattr(jpeg, '_SIMPLEJPEG', None)
    assert jpeg.decoder_name() == 'PIL' and np.array_equal(np.asarray(jpeg.decode_rgb(data)), fast)


def test_cpu_decoding_from_shards_decodes_with_it(photo, monkeypatch):
    data = [_jpeg(photo.rotate(k * 90)) for k in range(4)]
    calls = []
    monkeypatch.setattr(shard_reader, 'decode_rgb',
                        lambda d, mode, array: calls.append((mode, array)) or jpeg.decode_rgb(d, mode, array))
    reader = shard_reader.ShardSamples('/x', {'filenames': ['a.tar'], 'shard_lengths': [4]}, 2, 0)
    monkeypatch.setattr(reader, 'samples', lambda g: iter([(d, i) for i, d in enumerate(data)]))
    images = [im for im, _ in reader]
    assert calls == [('RGB', False)] * 4 and all(isinstance(im, Image.Image) for im in images)
    assert all(np.array_equal(np.asarray(a), _pil(d)) for a, d in zip(images, data))
    reader.arrays = True  # for the trainer's PaperCrop: simplejpeg's own arrays, the same pixels
    arrays = [im for im, _ in reader]
    assert all(isinstance(a, np.ndarray) and np.array_equal(a, _pil(d)) for a, d in zip(arrays, data))
    data[1] = _jpeg(photo.convert('CMYK'))  # what PIL decodes stays a PIL image, in arrays mode too
    mixed = [im for im, _ in reader]
    assert isinstance(mixed[1], Image.Image) and np.array_equal(np.asarray(mixed[1]), _pil(data[1]))
    assert [isinstance(im, np.ndarray) for im in mixed] == [True, False, True, True]
