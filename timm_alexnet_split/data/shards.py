"""``timm-alexnet-split prepare-shards``: an ImageFolder as WebDataset tar shards that timm's wds reader trains from.

Each image is resized as the paper did (shorter side to 256, centre 256x256; ``--keep-aspect`` keeps the whole
image at shorter side 256) and stored as a JPEG with its class index. The layout, for ``--name imagenet``::

    OUT/_info.json                                   splits, shard file names and lengths, counts (timm reads it)
    OUT/class_map.txt                                one class name per line, line i = class index i
    OUT/train/imagenet-train-000000.tar ...          samples KEY.jpg, KEY.cls (index), KEY.json (source file, class)
    OUT/validation/imagenet-validation-000000.tar ...

``timm-alexnet-split train --dataset wds/imagenet --data-dir OUT`` (and upstream timm train.py, with
``--num-classes``) trains from it; shard_reader.py is the reading side. Samples are shuffled across the shards
with a fixed seed, so the same input gives the same shards; shard lengths differ by at most one. Each shard is
written to a temporary name and renamed when complete, so an interrupted run is resumed by running the same
command again: complete shards are kept.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import random
import re
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..atomic import replace_when_done, write_text
from ..errors import CommandParser, UserError
from ..progress import progress as progress_bar

PROG = 'timm-alexnet-split prepare-shards'
FORMAT = 'timm-alexnet-split shards v1'
INFO = '_info.json'
CLASS_MAP = 'class_map.txt'
PLAN = '.prepare-shards.json'  # what a started preparation promised to write; a resume must match it
# ImageFolder split folders -> split names in _info.json (timm train.py's defaults: train, validation)
SPLIT_FOLDERS = {'train': 'train', 'validation': 'validation', 'val': 'validation'}


@dataclass(frozen=True)
class Options:
    size: int = 256
    keep_aspect: bool = False
    quality: int = 90
    seed: int = 0


@dataclass(frozen=True)
class ShardJob:
    path: Path                              # final file
    key_offset: int                         # global index of the shard's first planned sample
    samples: Tuple[Tuple[str, int], ...]    # (source path relative to the image folder, class index)


# ---------------------------------------------------------------------------------------------------------------------
# one image
# ---------------------------------------------------------------------------------------------------------------------
def resize_like_paper(img, size: int, keep_aspect: bool = False):
    """A PIL RGB image with its shorter side resized to ``size`` (bilinear, antialiased), then the centre
    ``size`` x ``size`` square unless ``keep_aspect``."""
    from PIL import Image
    w, h = img.size
    s = size / min(w, h)
    nw, nh = max(size, round(w * s)), max(size, round(h * s))
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), Image.BILINEAR)
    if keep_aspect:
        return img
    left, top = int(round((nw - size) / 2.0)), int(round((nh - size) / 2.0))  # torchvision CenterCrop's rounding
    return img.crop((left, top, left + size, top + size))


def encode_image(path: Path, opts: Options) -> bytes:
    """The file at ``path`` decoded (JPEG draft mode: no more pixels than ``size`` needs), resized, as JPEG bytes."""
    from PIL import Image
    with Image.open(path) as im:
        im.draft('RGB', (opts.size, opts.size))  # JPEG: DCT scaling down to >= size on both sides; others: no-op
        img = resize_like_paper(im.convert('RGB'), opts.size, opts.keep_aspect)
    buf = io.BytesIO()
    img.save(buf, format='JPEG', quality=opts.quality)
    return buf.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644  # fixed metadata: same input, same bytes
    tar.addfile(info, io.BytesIO(data))


def sample_key(index: int) -> str:
    return f'{index:08d}'


def write_shard(job: ShardJob, root: Path, class_names: Sequence[str], opts: Options) -> Tuple[int, List[Dict[str, str]]]:
    """Write one shard (temporary name, renamed when complete). Returns (samples written, skipped images)."""
    skipped: List[Dict[str, str]] = []
    n = 0
    with replace_when_done(job.path, True, 'while writing the shards') as tmp:
        with tarfile.open(tmp, 'w', format=tarfile.USTAR_FORMAT) as tar:
            for i, (rel, label) in enumerate(job.samples):
                try:
                    jpg = encode_image(root / rel, opts)
                except Exception as e:  # any decoder failure (truncated, not an image, bomb...) skips the image
                    skipped.append({'path': rel, 'error': ' '.join(f'{type(e).__name__}: {e}'.split())})
                    continue
                key = sample_key(job.key_offset + i)
                meta = {'filename': rel, 'label': label, 'class_name': class_names[label]}
                _add(tar, f'{key}.jpg', jpg)
                _add(tar, f'{key}.cls', str(label).encode())
                _add(tar, f'{key}.json', json.dumps(meta).encode())
                n += 1
    return n, skipped


def _run_job(payload: Tuple[ShardJob, str, Tuple[str, ...], Options]) -> Tuple[str, int, List[Dict[str, str]]]:
    job, root, names, opts = payload
    n, skipped = write_shard(job, Path(root), names, opts)
    return job.path.name, n, skipped


def read_shard(path: Path) -> List[Dict[str, bytes]]:
    """The samples of one tar shard, in order: {'__key__': key, 'jpg': ..., 'cls': ..., 'json': ...}.

    A shard of plain ustar file entries (what write_shard makes) is parsed here from its bytes (_plain_ustar: ~20 us
    a sample against tarfile's ~85 us, its per-member objects); any other tar, or anything irregular, is read by
    tarfile, with its errors."""
    data = Path(path).read_bytes()
    samples = _plain_ustar(data)
    return samples if samples is not None else _read_with_tarfile(path)


_BLOCK = 512
_ZERO_BLOCK = bytes(_BLOCK)
_CHECKSUM = slice(148, 156)


def _plain_ustar(data: bytes) -> Optional[List[Dict[str, bytes]]]:
    """The samples of a tar made only of regular-file ustar headers with valid checksums, in order; None for
    anything else (another header type, a pax or GNU extension, a bad checksum, a size in base 256 or below 0, a
    name ending in '/', a file that ends early or without its end blocks): tarfile then reads it, or says what is
    wrong."""
    samples: List[Dict[str, bytes]] = []
    view, offset, end = memoryview(data), 0, len(data)
    while offset + _BLOCK <= end:
        header = data[offset:offset + _BLOCK]
        if header == _ZERO_BLOCK:
            return samples
        if header[156:157] not in (b'0', b'\0') or header[257:262] != b'ustar' or header[124] & 0x80:
            return None
        try:
            size, checksum = int(header[124:136].strip(b' \0') or b'0', 8), int(header[_CHECKSUM].strip(b' \0'), 8)
        except ValueError:
            return None
        if size < 0 or checksum != sum(header) - sum(header[_CHECKSUM]) + 8 * 32 or offset + _BLOCK + size > end:
            return None
        name = header[:100].split(b'\0', 1)[0]
        prefix = header[345:500].split(b'\0', 1)[0]
        if prefix:
            name = prefix + b'/' + name
        if name.endswith(b'/'):  # an old-style directory entry: tarfile's to judge
            return None
        key, _, ext = name.rpartition(b'/')[2].partition(b'.')
        if not samples or samples[-1]['__key__'] != key:
            samples.append({'__key__': key})
        start = offset + _BLOCK
        samples[-1][ext.decode('utf-8', 'surrogateescape')] = bytes(view[start:start + size])
        offset = start + -(-size // _BLOCK) * _BLOCK
    return None  # no end blocks: a cut file


def _read_with_tarfile(path: Path) -> List[Dict[str, bytes]]:
    samples: List[Dict[str, bytes]] = []
    with tarfile.open(path, 'r') as tar:
        for m in tar:
            if not m.isfile():
                continue
            key, _, ext = m.name.rpartition('/')[2].partition('.')
            if not samples or samples[-1]['__key__'] != key.encode():
                samples.append({'__key__': key.encode()})
            f = tar.extractfile(m)
            samples[-1][ext] = f.read() if f is not None else b''
    return samples


def shard_keys(path: Path) -> List[str]:
    """The sample keys of a shard, from its tar headers only."""
    with tarfile.open(path, 'r') as tar:
        return sorted({m.name.rpartition('/')[2].partition('.')[0] for m in tar if m.isfile()})


# ---------------------------------------------------------------------------------------------------------------------
# the plan: which image goes into which shard
# ---------------------------------------------------------------------------------------------------------------------
def find_splits(root: Path) -> Dict[str, Path]:
    """Split name -> folder: train/, and validation/ or val/."""
    if not root.is_dir():
        raise UserError(f'image folder {root} not found; give an ImageFolder with train/ and validation/ (or val/)')
    found: Dict[str, Path] = {}
    for folder, split in SPLIT_FOLDERS.items():
        if (root / folder).is_dir():
            if split in found:
                raise UserError(f'{root} has both validation/ and val/; keep one')
            found[split] = root / folder
    if not found:
        raise UserError(f'{root} has no train/, validation/ or val/ folder of class folders')
    return found


def _image_files(folder: Path) -> List[Tuple[str, str]]:
    """(class name, file path relative to folder's parent) of every image in ``folder/<class>/...``, sorted."""
    from timm.data.readers.img_extensions import get_img_extensions
    exts = {e.lower() for e in get_img_extensions()}
    out: List[Tuple[str, str]] = []
    for cls in sorted(d.name for d in folder.iterdir() if d.is_dir()):
        for dirpath, dirnames, filenames in os.walk(folder / cls, followlinks=True):
            dirnames.sort()
            for f in sorted(filenames):
                if os.path.splitext(f)[1].lower() in exts:
                    out.append((cls, os.path.relpath(os.path.join(dirpath, f), folder.parent)))
    return out


def shard_assignment(n: int, shard_size: int, seed: int) -> List[List[int]]:
    """Indices 0..n-1 shuffled with ``seed`` and dealt into ceil(n / shard_size) shards of near-equal length."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    k = max(1, -(-n // shard_size))
    return [order[i::k] for i in range(k)]


def make_plan(root: Path, out: Path, name: str, shard_size: int, opts: Options
              ) -> Tuple[List[str], Dict[str, List[ShardJob]]]:
    """Class names (the training split's folders) and each split's shard jobs."""
    splits = find_splits(root)
    files = {split: _image_files(folder) for split, folder in splits.items()}
    class_names = sorted({c for c, _ in files['train' if 'train' in files else 'validation']})
    index = {c: i for i, c in enumerate(class_names)}
    jobs: Dict[str, List[ShardJob]] = {}
    for split, items in files.items():
        if not items:
            raise UserError(f'no images in {splits[split]} (expected {splits[split]}/<class>/<image>)')
        extra = sorted({c for c, _ in items} - set(index))
        if extra:
            raise UserError(f'{splits[split]} has classes the training split lacks: {", ".join(extra[:5])}')
        seed = opts.seed + (0 if split == 'train' else 1)
        jobs[split] = []
        for k, idx in enumerate(shard_assignment(len(items), shard_size, seed)):
            offset = sum(len(j.samples) for j in jobs[split])
            jobs[split].append(ShardJob(out / split / f'{name}-{split}-{k:06d}.tar', offset,
                                        tuple((items[i][1], index[items[i][0]]) for i in idx)))
    return class_names, jobs


def plan_digest(class_names: Sequence[str], jobs: Dict[str, List[ShardJob]], opts: Options) -> str:
    h = hashlib.sha256(json.dumps([FORMAT, list(class_names), opts.__dict__]).encode())
    for split in sorted(jobs):
        for j in jobs[split]:
            h.update(json.dumps([str(j.path.name), j.key_offset, list(j.samples)]).encode())
    return h.hexdigest()


def _check_out(out: Path, digest: str) -> bool:
    """True when ``out`` holds this very preparation (resume); refuses a folder with other files."""
    if not out.exists():
        return False
    if not out.is_dir():
        raise UserError(f'{out} exists and is not a folder; give a new or empty folder for the shards')
    plan = out / PLAN
    if plan.is_file():
        try:
            old = json.loads(plan.read_text())
        except (OSError, ValueError):
            old = {}
        if old.get('digest') != digest:
            raise UserError(f'{out} holds shards of another image folder or other options; give a new folder '
                            '(or delete it to start over)')
        return True
    if any(out.iterdir()):
        raise UserError(f'{out} is not empty and holds no shards of ours; give a new or empty folder')
    return False


def complete_shard(job: ShardJob) -> Optional[Tuple[int, List[Dict[str, str]]]]:
    """(samples, skipped) of a shard already written by an earlier run, or None when it must be (re)written."""
    if not job.path.is_file():
        return None
    try:
        keys = set(shard_keys(job.path))
    except (OSError, tarfile.TarError):
        return None
    planned = {sample_key(job.key_offset + i): rel for i, (rel, _) in enumerate(job.samples)}
    if not keys <= set(planned):
        return None
    skipped = [{'path': rel, 'error': 'skipped by an earlier run'} for k, rel in planned.items() if k not in keys]
    return len(keys), skipped


# ---------------------------------------------------------------------------------------------------------------------
# the command
# ---------------------------------------------------------------------------------------------------------------------
def _write_json(path: Path, obj: object) -> None:
    with replace_when_done(path, True, 'while writing the shards') as tmp:
        tmp.write_text(json.dumps(obj, indent=1) + '\n')


def split_info(split: str, jobs: Sequence[ShardJob], lengths: Sequence[int], out: Path) -> Dict[str, object]:
    """One split's entry of _info.json in timm's format (file names relative to OUT)."""
    return {'name': split, 'num_samples': int(sum(lengths)),
            'filenames': [j.path.relative_to(out).as_posix() for j in jobs], 'shard_lengths': [int(n) for n in lengths]}


def _run_jobs(payloads: List[Any], workers: int, results: Dict[str, Tuple[int, List[Dict[str, str]]]],
              bar: Optional[Any]) -> None:
    """Write the shards (in ``workers`` processes when there are several shards); results by shard name."""
    if workers > 1 and len(payloads) > 1:
        import multiprocessing as mp
        # fork: the workers need only PIL, and spawn would import torch (via the package) in each
        ctx = mp.get_context('fork' if 'fork' in mp.get_all_start_methods() else None)
        with ctx.Pool(workers) as pool:
            for shard, n, skipped in pool.imap_unordered(_run_job, payloads):
                results[shard] = (n, skipped)
                if bar is not None:
                    bar.update(n + len(skipped))
        return
    for p in payloads:
        shard, n, skipped = _run_job(p)
        results[shard] = (n, skipped)
        if bar is not None:
            bar.update(n + len(skipped))


def prepare(root: Path, out: Path, name: str, shard_size: int, workers: int, opts: Options,
            progress: bool = True) -> Dict[str, object]:
    """Write (or finish writing) the shards, the class map and _info.json; returns the info."""
    class_names, jobs = make_plan(root, out, name, shard_size, opts)
    digest = plan_digest(class_names, jobs, opts)
    resuming = _check_out(out, digest)
    try:
        out.mkdir(parents=True, exist_ok=True)
        if not resuming:  # first, so that a run stopped at any later point is recognised as ours
            _write_json(out / PLAN, {'format': FORMAT, 'digest': digest, 'source': str(root.resolve())})
        for split in jobs:
            (out / split).mkdir(exist_ok=True)
            for stale in (out / split).glob('.*.tar.*.tmp'):  # left by a worker killed mid-shard
                stale.unlink()
        write_text(out / CLASS_MAP, ''.join(f'{c}\n' for c in class_names), 'while writing the shards')
    except OSError as e:
        raise UserError(f'cannot write to {out}: {e.strerror or e}') from None
    results: Dict[str, Tuple[int, List[Dict[str, str]]]] = {}
    todo: List[ShardJob] = []
    for split_jobs in jobs.values():
        for j in split_jobs:
            done = complete_shard(j)
            if done is None:
                todo.append(j)
            else:
                results[j.path.name] = done
    total = sum(len(j.samples) for j in todo)
    kept = sum(len(js) for js in jobs.values()) - len(todo)
    print(f'{len(class_names)} classes; ' + ', '.join(f'{s}: {sum(len(j.samples) for j in js)} images in {len(js)} shards'
                                                    for s, js in jobs.items())
          + (f'; resuming: {kept} complete shards kept' if resuming else '') + f'; {workers} worker(s)', flush=True)
    bar = progress_bar(total=total, desc='prepare-shards', unit='img', every=30.0) if progress else None
    payloads = [(j, str(root), tuple(class_names), opts) for j in todo]
    try:
        _run_jobs(payloads, workers, results, bar)
    except OSError as e:
        raise UserError(f'cannot write shards into {out}: {e.strerror or e}') from None
    finally:
        if bar is not None:
            bar.close()
    info: Dict[str, object] = {
        'name': name, 'format': FORMAT, 'num_classes': len(class_names), 'class_map': CLASS_MAP,
        'image_size': opts.size, 'keep_aspect': opts.keep_aspect, 'jpeg_quality': opts.quality, 'seed': opts.seed,
        'splits': {s: split_info(s, js, [results[j.path.name][0] for j in js], out) for s, js in jobs.items()},
        'skipped': {s: [x for j in js for x in results[j.path.name][1]] for s, js in jobs.items()},
    }
    try:
        _write_json(out / INFO, info)
    except OSError as e:
        raise UserError(f'cannot write {out / INFO}: {e.strerror or e}') from None
    return info


def _tar_bytes(info: Dict[str, object], out: Path) -> int:
    return sum((out / f).stat().st_size for s in info['splits'].values() for f in s['filenames'])  # type: ignore


def main(argv: Optional[List[str]] = None) -> int:
    parser = CommandParser(
        prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description='Write an ImageFolder (train/, and validation/ or val/, of class folders) as WebDataset tar shards\n'
                    'that timm\'s wds reader reads: each image resized as the paper did (shorter side to SIZE, centre\n'
                    'SIZE x SIZE square) and stored as a JPEG with its class index; OUT/_info.json lists the splits,\n'
                    'shards and counts, OUT/class_map.txt the classes. Samples are shuffled across shards with a\n'
                    'fixed seed. Run the same command again to finish an interrupted run (complete shards are kept).\n'
                    'Unreadable images are skipped, counted and listed in _info.json.',
        epilog='example:\n'
               f'  {PROG} data/imagenet data/imagenet-shards --name imagenet\n'
               '  timm-alexnet-split train --config recipes/imagenet_split2_caffe_init.yaml \\\n'
               '      --dataset wds/imagenet --data-dir data/imagenet-shards')
    parser.add_argument('image_folder', metavar='IMAGE_FOLDER', help='ImageFolder root with train/ and validation/ (or val/)')
    parser.add_argument('out', metavar='OUT', help='folder for the shards (new or empty, or an interrupted run of this)')
    parser.add_argument('--size', type=int, default=256, help='shorter side and square size (default 256, the paper)')
    parser.add_argument('--keep-aspect', action='store_true', help='keep the aspect ratio: no centre square crop')
    parser.add_argument('--shard-size', type=int, default=1000, metavar='N', help='images per shard (default 1000)')
    parser.add_argument('--workers', type=int, default=os.cpu_count() or 1, metavar='N',
                        help=f'processes (default: all cores, {os.cpu_count()})')
    parser.add_argument('--quality', type=int, default=90, help='JPEG quality (default 90)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the shuffle across shards (default 0)')
    parser.add_argument('--name', default=None, help='shard file prefix (default: the image folder\'s name)')
    args = parser.parse_args(argv)
    if args.size < 16:
        raise UserError('--size must be at least 16')
    if args.shard_size < 1 or args.workers < 1:
        raise UserError('--shard-size and --workers must be at least 1')
    if not 1 <= args.quality <= 100:
        raise UserError('--quality must be 1-100')
    root, out = Path(args.image_folder), Path(args.out)
    name = args.name or re.sub(r'[^A-Za-z0-9_]+', '_', root.resolve().name) or 'dataset'
    if not re.fullmatch(r'[A-Za-z0-9_]+', name):
        raise UserError('--name may hold only letters, digits and _ (it starts each shard file name)')
    t0 = time.perf_counter()
    info = prepare(root, out, name, args.shard_size, args.workers,
                   Options(args.size, args.keep_aspect, args.quality, args.seed))
    secs = time.perf_counter() - t0
    for s, si in info['splits'].items():  # type: ignore[union-attr]
        skipped = info['skipped'][s]  # type: ignore[index]
        print(f'{s}: {si["num_samples"]} samples in {len(si["filenames"])} shards'
              + (f'; {len(skipped)} unreadable image(s) skipped (listed in {out / INFO})' if skipped else ''))
    print(f'wrote {out} ({_tar_bytes(info, out) / 1e6:.1f} MB of shards) in {secs:.1f} s; train with: '
          f'timm-alexnet-split train --dataset wds/{name} --data-dir {out}')
    return 0
