"""``timm-alexnet-split bench --data``: how fast the paper's training input pipeline runs, per core and on all cores.

Generates ImageNet-like JPEGs (500x375, textured noise so that they compress to ~110 KB as ImageNet's photos do)
into an ImageFolder in a temporary folder, writes them as 256-px shards (prepare-shards, timed), then times, in
one run, the training pipeline (decode, the paper's crop: shorter side 256, random 224; flip; to a uint8 tensor,
as timm's prefetcher takes it) over: the full-size folder, the same with PIL draft decoding, and the shards.
On a GPU also: decoding shard batches with nvjpeg (crop, flip, normalise included) against the network's own
training images/s (bf16, channels_last, batch 256).
"""
from __future__ import annotations

import contextlib
import io
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

IMG_W, IMG_H, NOISE, QUALITY = 500, 375, 23.0, 90


def imagenet_like(rng: np.random.Generator, w: int = IMG_W, h: int = IMG_H) -> bytes:
    """One JPEG (quality 90) of textured noise: smooth colour, mid-frequency grey texture, pixel noise."""
    from PIL import Image

    def field(shape: Tuple[int, ...], step: int) -> np.ndarray:
        a = rng.normal(0, 1, (h // step + 2, w // step + 2, *shape))
        a = ((a - a.min()) / max(np.ptp(a), 1e-9) * 255).astype(np.uint8)
        return np.asarray(Image.fromarray(a).resize((w, h), Image.BICUBIC), dtype=np.float32)

    img = 0.6 * field((3,), 25) + 0.4 * field((), 4)[..., None] + rng.normal(0, NOISE, (h, w, 3))
    buf = io.BytesIO()
    Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(buf, format='JPEG', quality=QUALITY)
    return buf.getvalue()


def make_folder(root: Path, n: int, classes: int = 10, seed: int = 0) -> int:
    """``n`` images in root/train/<class>/ (and a few in root/validation/); returns the bytes written."""
    rng = np.random.default_rng(seed)
    total = 0
    for split, count in (('train', n), ('validation', max(classes, n // 10))):
        for i in range(count):
            d = root / split / f'class{i % classes:03d}'
            d.mkdir(parents=True, exist_ok=True)
            data = imagenet_like(rng)
            (d / f'{i:06d}.jpg').write_bytes(data)
            total += len(data) if split == 'train' else 0
    return total


# ---------------------------------------------------------------------------------------------------------------------
# the pipelines: item -> uint8 tensor (3, 224, 224)
# ---------------------------------------------------------------------------------------------------------------------
def _transform(draft: bool, decode: Optional[Callable] = None) -> Callable:
    """JPEG bytes -> the paper's training crop as a uint8 tensor; decoded by ``decode`` (default PIL, or PIL's
    draft mode with ``draft``; a decoder may give arrays, which PaperCrop takes as the trainer's does)."""
    from timm.data.transforms import MaybePILToTensor
    from torchvision import transforms

    from .data.decode import DraftDecode
    from .train.loaders import PaperCrop
    steps = [DraftDecode(256) if draft else (decode or _full_decode)]
    steps += [PaperCrop((224, 224), 0.875), transforms.RandomHorizontalFlip(), MaybePILToTensor()]
    return transforms.Compose(steps)


def _full_decode(data: bytes):
    from PIL import Image
    return Image.open(io.BytesIO(data)).convert('RGB')


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """One torch thread while a per-core pipeline is timed; the caller's thread count afterwards (the timing runs
    in the main process too, before what else a benchmark measures there)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _run_files(args: Tuple[List[str], bool]) -> int:
    files, draft = args
    with _one_thread():
        tf = _transform(draft)
        for f in files:
            with open(f, 'rb') as fh:
                tf(fh.read())
    return len(files)


def _run_shards(args: Tuple[List[str], bool]) -> int:
    """The shards' pipeline, decoded and cropped as the trainer does shard samples (jpeg.decode_rgb's arrays,
    cropped as tensor views)."""
    import functools

    from .data.jpeg import decode_rgb
    from .data.shards import read_shard
    files, _ = args
    n = 0
    with _one_thread():
        tf = _transform(False, functools.partial(decode_rgb, array=True))
        for f in files:
            for s in read_shard(Path(f)):
                tf(s['jpg'])
                n += 1
    return n


def _time(fn: Callable, payload: Tuple[List[str], bool]) -> float:
    t = time.perf_counter()
    n = fn(payload)
    return n / (time.perf_counter() - t)


def _all_cores(fn: Callable, items: List[str], draft: bool, cores: int) -> float:
    import multiprocessing as mp
    chunks = [(items[i::cores], draft) for i in range(cores)]
    ctx = mp.get_context('fork' if 'fork' in mp.get_all_start_methods() else None)
    with ctx.Pool(cores) as pool:
        pool.map(fn, [(c[0][:1], draft) for c in chunks])  # warm the workers
        t = time.perf_counter()
        n = sum(pool.map(fn, chunks))
    return n / (time.perf_counter() - t)


def measure_cpu(folder: Path, shards: Path, rounds: int, cores: int) -> Dict[str, Dict[str, float]]:
    """Images/s per core (one process, interleaved rounds, median) and on ``cores`` processes, per pipeline."""
    import json
    files = sorted(str(p) for p in (folder / 'train').rglob('*.jpg'))
    info = json.loads((shards / '_info.json').read_text())
    tars = [str(shards / f) for f in info['splits']['train']['filenames']]
    pipelines = {'full-size folder': (_run_files, files, False), 'full-size folder, draft decoding': (_run_files, files, True),
                 '256-px shards': (_run_shards, tars, False)}
    for fn, items, draft in pipelines.values():
        fn((items[:2], draft))  # warm-up: imports, caches
    per_core: Dict[str, List[float]] = {k: [] for k in pipelines}
    for _ in range(rounds):
        for k, (fn, items, draft) in pipelines.items():
            per_core[k].append(_time(fn, (items, draft)))
    out = {k: {'per_core': statistics.median(v)} for k, v in per_core.items()}
    for k, (fn, items, draft) in pipelines.items():
        procs = min(cores, len(items))
        out[k]['all_cores'] = _all_cores(fn, items, draft, procs) if procs > 1 else out[k]['per_core']
    return out


def measure_gpu(shards: Path, device: torch.device, batch: int, rounds: int) -> Dict[str, float]:
    """nvjpeg decoding + crop + flip + normalise of shard batches vs alexnet_split_2 training (bf16), images/s."""
    import json

    from .bench_nets import stepper, variant
    from .data.decode import crop_flip_normalise, decode_batch
    from .data.shards import read_shard
    from .timing import time_variants
    info = json.loads((shards / '_info.json').read_text())
    data = [torch.frombuffer(bytearray(s['jpg']), dtype=torch.uint8)
            for f in info['splits']['train']['filenames'] for s in read_shard(shards / f)]
    data = (data * (batch // max(len(data), 1) + 1))[:batch]
    mean, std = (0.485, 0.456, 0.406), (1 / 255,) * 3

    def decode_step() -> None:
        images, _ = decode_batch(data, device)
        crop_flip_normalise(images, (224, 224), 256, True, mean, std, dtype=torch.bfloat16)

    model = variant('ours', 1000).to(device).to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, 224, 224, device=device).contiguous(memory_format=torch.channels_last) * 60
    y = torch.randint(0, 1000, (batch,), device=device)
    steps = {'decode': decode_step, 'train': stepper(model, x, y, True, True)}
    return time_variants(steps, device, rounds, warmup=2, batch=batch)


def _decoders() -> Dict[str, Callable[[bytes], object]]:
    """JPEG bytes -> RGB pixels, by each decoder this machine has: PIL (timm's reader of folders), and
    simplejpeg's libjpeg-turbo without PIL (the trainer's for shard samples, data/jpeg.py) where it is installed
    (exact, and with its faster inexact DCT and upsampling)."""
    def pil(data: bytes) -> object:
        return _full_decode(data).load()
    found: Dict[str, Callable[[bytes], object]] = {'PIL': pil}
    try:
        import simplejpeg
    except ImportError:
        return found
    found['simplejpeg'] = lambda data: simplejpeg.decode_jpeg(data, colorspace='RGB')
    found['simplejpeg, fast DCT + upsampling'] = lambda data: simplejpeg.decode_jpeg(
        data, colorspace='RGB', fastdct=True, fastupsample=True)
    return found


def measure_decoders(folder: Path, shards: Path, rounds: int) -> Dict[str, Dict[str, float]]:
    """JPEG decoding alone, images/s per core (one thread, interleaved rounds, median): each decoder on the
    full-size JPEGs and on the 256-px shard JPEGs."""
    import json

    from .data.shards import read_shard
    full = [Path(p).read_bytes() for p in sorted((folder / 'train').rglob('*.jpg'))]
    info = json.loads((shards / '_info.json').read_text())
    small = [s['jpg'] for f in info['splits']['train']['filenames'] for s in read_shard(shards / f)]
    decoders = _decoders()
    rates: Dict[str, Dict[str, List[float]]] = {k: {'full-size': [], '256-px': []} for k in decoders}
    with _one_thread():
        for _ in range(rounds):
            for name, decode in decoders.items():
                for kind, items in (('full-size', full), ('256-px', small)):
                    decode(items[0])  # warm-up
                    t = time.perf_counter()
                    for data in items:
                        decode(data)
                    rates[name][kind].append(len(items) / (time.perf_counter() - t))
    return {name: {kind: statistics.median(v) for kind, v in r.items()} for name, r in rates.items()}


def _say_decoders(decoders: Dict[str, Dict[str, float]], say: Callable[[str], None]) -> None:
    say('\nJPEG decoding alone (to RGB pixels), images/s per core')
    say(f'  {"":<34}{"full-size":>10}{"256-px":>11}')
    for name, r in decoders.items():
        say(f'  {name:<34}{r["full-size"]:>10.0f}{r["256-px"]:>11.0f}')
    if 'simplejpeg' not in decoders:
        say('  (simplejpeg not installed: `pip install simplejpeg` adds it to this table)')


def run(n_images: int, rounds: int, cores: int, device: torch.device, keep: Optional[str] = None,
        print_fn: Callable[[str], None] = print) -> Dict[str, object]:
    """The whole data benchmark; prints a table (also returned as 'lines') and returns the figures."""
    from .data.shards import Options, prepare
    lines: List[str] = []

    def say(line: str) -> None:
        lines.append(line)
        print_fn(line)

    with tempfile.TemporaryDirectory(prefix='bench-data-', dir=keep) as tmp:
        folder, shards = Path(tmp) / 'folder', Path(tmp) / 'shards'
        t = time.perf_counter()
        raw = make_folder(folder, n_images)
        say(f'generated {n_images} ImageNet-like JPEGs ({IMG_W}x{IMG_H}, mean {raw / n_images / 1e3:.0f} KB) in '
                 f'{time.perf_counter() - t:.1f} s')
        import contextlib
        t = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            # enough shards for every core to read its own in the all-cores timing
            info = prepare(folder, shards, 'bench', max(10, n_images // (2 * cores)), 1, Options(), progress=False)
        prep = time.perf_counter() - t
        n_all = sum(s['num_samples'] for s in info['splits'].values())  # type: ignore[union-attr]
        tar = sum((shards / f).stat().st_size for f in info['splits']['train']['filenames'])  # type: ignore[index]
        say(f'prepare-shards, one process: {n_all / prep:.0f} images/s per core; shards {tar / n_images / 1e3:.1f} KB '
                 f'per image ({tar / raw:.2f}x the full-size JPEGs)')
        cpu = measure_cpu(folder, shards, rounds, cores)
        decoders = measure_decoders(folder, shards, rounds)
        gpu = measure_gpu(shards, device, 256, rounds) if device.type == 'cuda' else None
    base = cpu['full-size folder']
    from .data.jpeg import decoder_name
    say(f'\ntraining input pipeline (decode, paper crop 224 of 256, flip, to tensor), images/s; {cores} cores; '
        f'the folder\'s JPEGs decoded by PIL (timm\'s reader), the shards\' by {decoder_name()} (the trainer\'s)')
    say(f'  {"":<34}{"per core":>10}{"all cores":>11}{"vs folder":>11}')
    for k, v in cpu.items():
        say(f'  {k:<34}{v["per_core"]:>10.0f}{v["all_cores"]:>11.0f}{v["per_core"] / base["per_core"]:>10.2f}x')
    _say_decoders(decoders, say)
    result: Dict[str, object] = {'images': n_images, 'cores': cores, 'jpeg_kb': raw / n_images / 1e3,
                                 'shard_kb': tar / n_images / 1e3, 'prepare_img_s_per_core': n_all / prep, 'cpu': cpu,
                                 'decoders': decoders}
    if gpu is not None:
        verdict = 'the loader keeps up' if gpu['decode'] >= gpu['train'] else 'the LOADER IS SLOWER'
        say(f'\nGPU, batch 256: nvjpeg decode + crop + flip + normalise {gpu["decode"]:.0f} images/s; '
                 f'alexnet_split_2 training (bf16, channels_last) {gpu["train"]:.0f} images/s: {verdict} '
                 f'({gpu["decode"] / gpu["train"]:.2f}x)')
        result['gpu'] = gpu
    ratio = cpu['256-px shards']['per_core'] / base['per_core']
    result['shards_vs_folder_per_core'] = ratio
    say(f'\nshards vs full-size folder, per core: {ratio:.2f}x')
    result['lines'] = lines
    return result


def cores_available() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


__all__: Sequence[str] = ['run', 'imagenet_like', 'make_folder', 'measure_cpu', 'measure_decoders', 'measure_gpu',
                           'cores_available']
