"""Decoding on a device (run here on the CPU, and on CUDA when there is one) and PIL draft decoding (issue 13)."""
import io
import json

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from timm_alexnet_split import train
from timm_alexnet_split.data import decode
from timm_alexnet_split.errors import UserError

MEAN, STD = (0.485, 0.456, 0.406), (1 / 255,) * 3  # the split AlexNet's: 0-255 pixels minus the mean pixel


def _photo(w: int, h: int, seed: int = 0) -> bytes:
    from timm_alexnet_split.databench import imagenet_like
    return imagenet_like(np.random.default_rng(seed), w, h)


def _pil(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert('RGB')


def _t(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def _cpu_path(img: Image.Image, size: int, scale: int, top: int, left: int, flip: bool) -> torch.Tensor:
    """timm's CPU path with --paper-crop for one fixed crop and flip: PaperCrop, flip, to tensor, normalise."""
    img = TF.center_crop(TF.resize(img, scale), scale)
    img = TF.crop(img, top, left, size, size)
    if flip:
        img = TF.hflip(img)
    x = TF.pil_to_tensor(img).float()
    return (x - torch.tensor(MEAN).view(3, 1, 1) * 255) / (torch.tensor(STD).view(3, 1, 1) * 255)


def test_decode_batch_matches_pil_and_leaves_out_a_corrupt_image():
    data = [_photo(256, 256, 1), _photo(500, 375, 2), b'\xff\xd8\xff\xe0 broken', _photo(120, 90, 3)]
    images, ok = decode.decode_batch([_t(d) for d in data], torch.device('cpu'))
    assert ok == [0, 1, 3]
    for img, i in zip(images, ok):
        ref = TF.pil_to_tensor(_pil(data[i]))
        assert img.shape == ref.shape and img.dtype == torch.uint8
        diff = (img.int() - ref.int()).abs()
        assert diff.float().mean() < 0.5 and diff.max() <= 4  # libjpeg builds may round the last bit differently


@pytest.mark.parametrize('w,h', [(256, 256), (300, 260)])
def test_crop_flip_normalise_equals_the_cpu_transform_path(w, h):
    data = _photo(w, h, 4)
    img = _pil(data)
    decoded, _ = decode.decode_batch([_t(data)] * 3, torch.device('cpu'))
    offsets = torch.tensor([[0, 0], [32, 5], [17, 32]])
    flips = torch.tensor([False, True, True])
    x = decode.crop_flip_normalise(decoded, (224, 224), 256, True, MEAN, STD, offsets=offsets, flips=flips)
    assert x.shape == (3, 3, 224, 224) and x.dtype == torch.float32
    for i in range(3):
        ref = _cpu_path(img, 224, 256, int(offsets[i, 0]), int(offsets[i, 1]), bool(flips[i]))
        err = (x[i] - ref).abs()
        if (w, h) == (256, 256):  # shards: no resize, the same pixels
            assert err.max() <= 4
        else:  # PIL's and torch's antialiased bilinear resize differ by rounding
            assert err.mean() < 1.5, err.mean()
    ev = decode.crop_flip_normalise(decoded[:1], (224, 224), 256, False, MEAN, STD)
    ref = TF.center_crop(TF.resize(img, 256), 224)
    ref = (TF.pil_to_tensor(ref).float() - torch.tensor(MEAN).view(3, 1, 1) * 255)
    assert (ev[0] - ref).abs().mean() < 1.5


def test_random_crops_and_flips_cover_the_square_and_follow_hflip():
    data = _photo(256, 256, 5)
    decoded, _ = decode.decode_batch([_t(data)] * 64, torch.device('cpu'))
    g = torch.Generator().manual_seed(0)
    x = decode.crop_flip_normalise(decoded, (224, 224), 256, True, MEAN, STD, hflip=0.0, generator=g)
    assert len({tuple(v.flatten()[:8].tolist()) for v in x}) > 10  # the crops move
    sq = decode.crop_flip_normalise(decoded[:1], (256, 256), 256, False, MEAN, STD)[0]  # the whole square
    for v in x[:4]:  # never flipped at hflip 0: each is one of the unflipped crops
        assert min((v - sq[:, t:t + 224, c:c + 224]).abs().max().item() for t in range(33) for c in range(33)) == 0


def test_draft_decoding_decodes_fewer_pixels_and_stays_close_to_a_full_decode():
    big = _photo(1100, 800, 6)
    d = decode.DraftDecode(256)
    img = d(big)
    assert d.last_scale == 2 and img.size == (550, 400)  # 1/4 would leave the shorter side at 200 < 256
    drafted = TF.pil_to_tensor(TF.center_crop(TF.resize(img, 256), 256)).float()
    full = TF.pil_to_tensor(TF.center_crop(TF.resize(_pil(big), 256), 256)).float()
    assert (drafted - full).abs().mean() < 4, (drafted - full).abs().mean()
    small = d(_photo(500, 375, 7))
    assert d.last_scale == 1 and small.size == (500, 375)  # a 256 resize of a 375-px side needs every pixel


def test_draft_decoding_in_the_trainer_for_a_folder(tmp_path):
    for split in ('train', 'validation'):
        for c in ('a', 'b'):
            (tmp_path / split / c).mkdir(parents=True)
            (tmp_path / split / c / '0.jpg').write_bytes(_photo(300, 200, ord(c)))
    args = train.parse_args(['--data-dir', str(tmp_path), '--decode', 'draft', '--paper-crop', '--workers', '0',
                             '-b', '2', '--color-jitter', '0'])
    args.distributed, args.world_size, args.rank, args.prefetcher = False, 1, 0, True
    train_ds, eval_ds, _ = train.data.build_datasets(args)
    train_ds, eval_ds = train.SkipUnreadable(train_ds), train.SkipUnreadable(eval_ds, substitute=False)
    cfg = {'input_size': (3, 64, 64), 'crop_pct': 0.5, 'interpolation': 'bilinear', 'mean': MEAN, 'std': STD}
    lt, le = train.loaders.build_loaders(args, cfg, torch.device('cpu'), train_ds, eval_ds, torch.float32)
    for loader in (lt, le):
        first = loader.dataset.dataset.transform.transforms[0]
        assert isinstance(first, decode.DraftDecode) and first.target == 128
        x, y = next(iter(loader))
        assert x.shape == (2, 3, 64, 64)
    args.paper_crop = False
    with pytest.raises(UserError, match='--paper-crop'):
        train.loaders.build_loaders(args, cfg, torch.device('cpu'), train_ds, eval_ds, torch.float32)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_nvjpeg_decoding_and_crops_on_cuda_match_the_cpu():
    """nvjpeg and libjpeg are different decoders (chroma upsampling, IDCT): on the H200 (2026-11-30) single pixels
    differed by up to 14 levels, so the check is that each GPU image is the CPU image, far closer to it than to the
    same image mirrored, with its colour channels reversed, or to the next image (an absolute bound too, loose)."""
    data = [_photo(256, 256, s) for s in range(8)] + [_photo(500, 375, 9)]
    gpu, ok = decode.decode_batch([_t(d) for d in data], torch.device('cuda'))
    cpu, _ = decode.decode_batch([_t(d) for d in data], torch.device('cpu'))
    assert ok == list(range(9)) and all(g.is_cuda for g in gpu)

    def dist(a, b):
        return (a.float() - b.float()).abs().mean().item() if a.shape == b.shape else float('inf')
    for i, (g, c) in enumerate(zip(gpu, cpu)):
        g = g.cpu()
        assert g.shape == c.shape and dist(g, c) < 12
        wrong = [c.flip(-1), c.flip(0), c.flip(-2) if i == 8 else cpu[(i + 1) % 8]]  # image 8 has its own size
        assert all(dist(g, c) < 0.5 * dist(g, w) for w in wrong), i
    offsets, flips = torch.randint(0, 33, (9, 2)), torch.rand(9) < 0.5
    xg = decode.crop_flip_normalise(gpu, (224, 224), 256, True, MEAN, STD, offsets=offsets, flips=flips)
    xc = decode.crop_flip_normalise(cpu, (224, 224), 256, True, MEAN, STD, offsets=offsets, flips=flips)
    xw = decode.crop_flip_normalise(cpu, (224, 224), 256, True, MEAN, STD, offsets=offsets, flips=~flips)
    assert xg.is_cuda and xg.shape == xc.shape == (9, 3, 224, 224)
    for g, c, w in zip(xg.cpu(), xc, xw):  # the same crop and flip as the CPU path: closer than the other flip
        assert (g - c).abs().mean() < 0.5 * (g - w).abs().mean()
    print(json.dumps({'nvjpeg_vs_cpu_mean_abs': (xg.cpu() - xc).abs().mean().item()}))
