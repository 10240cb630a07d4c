"""Datasets: the embedded demo dataset and the Cats vs Dogs split.

The demo dataset is procedural and made on first use: colour images whose class is a pair
(stripe orientation, hue family). The orientation lives only in fine achromatic Gabor patches,
the hue only in smooth isoluminant colour blobs, both under luminance and colour noise, so
neither a colour-blind nor an orientation-blind first layer can tell all classes apart.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .errors import UserError

__all__ = [
    'DEMO_VERSION', 'DEMO_IMG_SIZE', 'DEMO_CLASSES', 'DEMO_ORIENTATIONS', 'DEMO_HUES', 'DEMO_SPLITS',
    'make_demo_dataset', 'ensure_demo_data', 'default_demo_root', 'render_demo_images',
    'demo_data_main', 'prepare_catsdogs_main', 'split_catsdogs',
]

PROG = 'timm-alexnet-split'

# ---- the embedded demo dataset ---------------------------------------------------------------------------------
DEMO_VERSION = 1
DEMO_IMG_SIZE = 96
DEMO_SPLITS = ('train', 'validation')
DEMO_TRAIN_PER_CLASS = 300
DEMO_VAL_PER_CLASS = 40
DEMO_ORIENTATIONS = (0, 45, 90, 135)  # stripe angle in degrees, anticlockwise from horizontal
DEMO_HUES = {'red': 0.0, 'green': 120.0, 'blue': 240.0}  # hue angle in the opponent plane (see _OPPONENT)
DEMO_CLASSES: Tuple[str, ...] = tuple(sorted(f'{h}-{o:03d}' for h in DEMO_HUES for o in DEMO_ORIENTATIONS))
CACHE_ENV = 'TIMM_ALEXNET_SPLIT_CACHE'
MANIFEST = 'manifest.json'
_CHUNK = 128  # images rendered per call; part of the generator's definition (seeds are per chunk)

# The picture, in pixels of a DEMO_IMG_SIZE image and 0-255 units; scaled with img_size.
DEMO_SPEC: Dict[str, object] = dict(
    n_gabor=10, period=(6.0, 10.0), sigma=(14.0, 22.0), gabor_amp=(40.0, 60.0), orient_jitter=6.0,
    n_lum_blob=3, lum_blob_amp=20.0,
    n_blob=3, blob_sigma=(10.0, 22.0), chroma_amp=(25.0, 45.0), hue_jitter=20.0,
    lum_noise=15.0, chroma_noise=15.0,
)

# Unit RGB vectors orthogonal to grey (1,1,1): colour added along them leaves the channel mean, the
# luminance the chromatic fraction of PAPER.md measures, unchanged.
_OPPONENT = np.stack([np.array([2.0, -1.0, -1.0]) / math.sqrt(6), np.array([0.0, 1.0, -1.0]) / math.sqrt(2)])


def _class_attrs(name: str) -> Tuple[float, float]:
    hue, angle = name.rsplit('-', 1)
    return DEMO_HUES[hue], float(angle)


def _bumps(rng: np.random.Generator, n: int, k: int, size: int, sigma: Tuple[float, float]) -> Tuple[np.ndarray, ...]:
    """k separable Gaussian bumps per image: y and x profiles (n, k, size) each."""
    grid = np.arange(size) + 0.5
    s = rng.uniform(*sigma, (n, k))[..., None]
    cy, cx = rng.uniform(0, size, (n, k))[..., None], rng.uniform(0, size, (n, k))[..., None]
    return np.exp(-0.5 * ((grid - cy) / s) ** 2), np.exp(-0.5 * ((grid - cx) / s) ** 2)


def render_demo_images(
        rng: np.random.Generator,
        hues: Sequence[float],
        angles: Sequence[float],
        img_size: int = DEMO_IMG_SIZE,
        spec: Optional[Dict[str, object]] = None,
) -> np.ndarray:
    """Draw one image per (hue, angle) pair: (N, img_size, img_size, 3) uint8 RGB.

    Luminance: ``n_gabor`` achromatic Gabor patches with stripes at ``angle`` (+- jitter), random
    period, phase, position, size and contrast; ``n_lum_blob`` grey blobs of random sign; white
    luminance noise. Colour: ``n_blob`` smooth isoluminant blobs whose hue is ``hue`` +- jitter in
    the opponent plane; white chromatic noise. Lengths scale with ``img_size / DEMO_IMG_SIZE``.
    """
    sp = {**DEMO_SPEC, **(spec or {})}
    n, size = len(hues), img_size
    scale = size / DEMO_IMG_SIZE
    f32 = np.float32
    grid = np.arange(size) + 0.5

    g = int(sp['n_gabor'])
    alpha = np.deg2rad(np.asarray(angles, float)[:, None] + rng.normal(0, sp['orient_jitter'], (n, g)))
    k = 2 * np.pi / (rng.uniform(*sp['period'], (n, g)) * scale)
    phase = rng.uniform(0, 2 * np.pi, (n, g))
    amp = rng.uniform(*sp['gabor_amp'], (n, g))
    ey, ex = _bumps(rng, n, g, size, tuple(s * scale for s in sp['sigma']))
    # stripes along (cos a, -sin a) with y pointing down: the wave vector is (sin a, cos a)
    ex = ex * np.exp(1j * (k * np.sin(alpha))[..., None] * grid)
    ey = ey * np.exp(1j * ((k * np.cos(alpha))[..., None] * grid + phase[..., None])) * amp[..., None]
    lum = np.concatenate([ey.real, -ey.imag], 1).transpose(0, 2, 1) @ np.concatenate([ex.real, ex.imag], 1)

    b = int(sp['n_lum_blob'])
    by, bx = _bumps(rng, n, b, size, tuple(s * scale for s in sp['blob_sigma']))
    lum += (by * rng.normal(0, sp['lum_blob_amp'], (n, b))[..., None]).transpose(0, 2, 1) @ bx
    lum = lum.astype(f32)
    lum += rng.standard_normal((n, size, size), dtype=f32) * f32(sp['lum_noise'])

    b = int(sp['n_blob'])
    by, bx = _bumps(rng, n, b, size, tuple(s * scale for s in sp['blob_sigma']))
    hue = np.deg2rad(np.asarray(hues, float)[:, None] + rng.uniform(-1, 1, (n, b)) * sp['hue_jitter'])
    cvec = np.stack([np.cos(hue), np.sin(hue)], -1) * rng.uniform(*sp['chroma_amp'], (n, b))[..., None]
    col = (by[..., None] * cvec[:, :, None, :]).reshape(n, b, 2 * size).transpose(0, 2, 1) @ bx  # (n, y*2, x)
    col = col.reshape(n, size, 2, size).transpose(0, 1, 3, 2).astype(f32)
    col += rng.standard_normal((n, size, size, 2), dtype=f32) * f32(sp['chroma_noise'])

    rgb = col @ _OPPONENT.astype(f32)
    rgb += lum[..., None] + f32(128.5)
    np.clip(rgb, 0, 255.49, out=rgb)
    return rgb.astype(np.uint8)


def _demo_params(img_size: int, train_per_class: int, val_per_class: int, seed: int) -> Dict[str, object]:
    return dict(generator='timm_alexnet_split.data.render_demo_images', version=DEMO_VERSION, img_size=img_size,
                train_per_class=train_per_class, val_per_class=val_per_class, seed=seed, classes=list(DEMO_CLASSES),
                orientations=list(DEMO_ORIENTATIONS), hues=DEMO_HUES, spec=DEMO_SPEC, chunk=_CHUNK)


def _render_split(split_idx: int, per_class: int, img_size: int, seed: int):
    """Yield (class name, index in class, uint8 image) for one split, deterministically from ``seed``."""
    names = [c for c in DEMO_CLASSES for _ in range(per_class)]
    index = [i for _ in DEMO_CLASSES for i in range(per_class)]
    for c, start in enumerate(range(0, len(names), _CHUNK)):
        rng = np.random.default_rng([seed, split_idx, c])
        chunk = names[start:start + _CHUNK]
        hues, angles = zip(*(_class_attrs(name) for name in chunk))
        images = render_demo_images(rng, hues, angles, img_size)
        yield from zip(chunk, index[start:start + _CHUNK], images)


def _png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format='PNG', compress_level=1)
    return buf.getvalue()


def _is_demo_folder(path: Path) -> bool:
    """True when ``path`` holds nothing but what make_demo_dataset writes (so replacing it loses no user file)."""
    allowed = {MANIFEST, *DEMO_SPLITS}
    for entry in path.iterdir():
        if entry.name not in allowed:
            return False
        if entry.name in DEMO_SPLITS:
            if not entry.is_dir() or entry.is_symlink():
                return False
            for cls in entry.iterdir():
                if cls.name not in DEMO_CLASSES or not cls.is_dir() or cls.is_symlink():
                    return False
                if any(not f.name.endswith('.png') or not f.is_file() for f in cls.iterdir()):
                    return False
    return True


def _replace_dir(new: Path, dest: Path) -> None:
    """Move the finished folder ``new`` to ``dest``; an existing ``dest`` (a demo folder) is removed afterwards."""
    if dest.exists():
        old = Path(tempfile.mkdtemp(prefix=f'.{dest.name}.old-', dir=dest.parent))
        os.replace(dest, old / dest.name)
        os.replace(new, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, dest)


def make_demo_dataset(
        out_dir: os.PathLike | str,
        *,
        img_size: int = DEMO_IMG_SIZE,
        train_per_class: int = DEMO_TRAIN_PER_CLASS,
        val_per_class: int = DEMO_VAL_PER_CLASS,
        seed: int = 0,
        overwrite: bool = False,
        progress: bool = True,
) -> Path:
    """Write the demo dataset as ImageFolder: ``out_dir/{train,validation}/<class>/NNNNN.png`` + manifest.json.

    Deterministic: the same arguments give byte-identical files. Written into a temporary sibling folder
    and renamed into place, so an interrupted run leaves no half dataset at ``out_dir``. An existing
    non-empty ``out_dir`` is replaced only with ``overwrite=True`` and only if it holds nothing but a demo
    dataset; otherwise UserError.
    """
    from tqdm import tqdm

    from .model import MIN_INPUT_SIZE
    if img_size < MIN_INPUT_SIZE:
        raise UserError(f'demo img_size must be at least {MIN_INPUT_SIZE} (the model\'s smallest input), got {img_size}')
    if train_per_class < 1 or val_per_class < 1:
        raise UserError('demo train_per_class and val_per_class must be >= 1')
    out = Path(out_dir).expanduser().absolute()
    if out.exists():
        if not out.is_dir():
            raise UserError(f'{out} exists and is not a folder; choose another output path')
        if any(out.iterdir()):
            if not overwrite:
                raise UserError(f'{out} is not empty; choose an empty or new folder (or --force to regenerate a demo folder)')
            if not _is_demo_folder(out):
                raise UserError(f'{out} holds files that are not a demo dataset; refusing to replace it, choose another folder')
    out.parent.mkdir(parents=True, exist_ok=True)
    params = _demo_params(img_size, train_per_class, val_per_class, seed)
    tmp = Path(tempfile.mkdtemp(prefix=f'.{out.name}.tmp-', dir=out.parent))
    try:
        files: Dict[str, Dict[str, object]] = {}
        total = len(DEMO_CLASSES) * (train_per_class + val_per_class)
        with tqdm(total=total, desc='demo data', unit='img', disable=not progress, leave=False) as bar:
            for s, (split, per_class) in enumerate(zip(DEMO_SPLITS, (train_per_class, val_per_class))):
                for name in DEMO_CLASSES:
                    (tmp / split / name).mkdir(parents=True)
                for name, i, image in _render_split(s, per_class, img_size, seed):
                    rel = f'{split}/{name}/{i:05d}.png'
                    data = _png_bytes(image)
                    (tmp / rel).write_bytes(data)
                    files[rel] = dict(size=len(data), sha256=hashlib.sha256(data).hexdigest())
                    bar.update()
        digest = hashlib.sha256(''.join(f'{k} {v["sha256"]}\n' for k, v in sorted(files.items())).encode()).hexdigest()
        counts = {split: {name: n for name in DEMO_CLASSES} for split, n in zip(DEMO_SPLITS, (train_per_class, val_per_class))}
        manifest = dict(params=params, counts=counts, digest=digest, files=files)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + '\n')
        _replace_dir(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def default_demo_root() -> Path:
    """``$TIMM_ALEXNET_SPLIT_CACHE/demo-v<N>``, else ``~/.cache/timm_alexnet_split/demo-v<N>``."""
    base = os.environ.get(CACHE_ENV)
    base_path = Path(base).expanduser() if base else Path.home() / '.cache' / 'timm_alexnet_split'
    return base_path / f'demo-v{DEMO_VERSION}'


def _demo_complete(root: Path, params: Dict[str, object], verify: bool = False) -> bool:
    """The manifest matches ``params`` and every file it lists is there, with its size (and hash if ``verify``)."""
    try:
        manifest = json.loads((root / MANIFEST).read_text())
        if manifest.get('params') != json.loads(json.dumps(params)):
            return False
        files = manifest['files']
        expected = {f'{split}/{name}' for split in DEMO_SPLITS for name in DEMO_CLASSES}
        if {str(Path(rel).parent) for rel in files} != expected:
            return False
        for split in DEMO_SPLITS:
            for name in DEMO_CLASSES:
                if len(list((root / split / name).iterdir())) != manifest['counts'][split][name]:
                    return False
        for rel, info in files.items():
            path = root / rel
            if path.stat().st_size != info['size']:
                return False
            if verify and hashlib.sha256(path.read_bytes()).hexdigest() != info['sha256']:
                return False
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return True


def ensure_demo_data(
        root: Optional[os.PathLike | str] = None,
        *,
        img_size: int = DEMO_IMG_SIZE,
        train_per_class: int = DEMO_TRAIN_PER_CLASS,
        val_per_class: int = DEMO_VAL_PER_CLASS,
        seed: int = 0,
        force: bool = False,
        verify: bool = False,
        progress: bool = True,
) -> Path:
    """The demo dataset's folder, generated if missing and reused if its manifest matches and its files are there.

    An incomplete or different demo folder is regenerated in a fresh folder that then replaces it; a folder
    holding anything else raises UserError. ``force`` regenerates a complete one too; ``verify`` checks hashes.
    """
    root_path = Path(root).expanduser().absolute() if root is not None else default_demo_root().absolute()
    params = _demo_params(img_size, train_per_class, val_per_class, seed)
    if not force and root_path.is_dir() and _demo_complete(root_path, params, verify):
        return root_path
    try:
        return make_demo_dataset(root_path, img_size=img_size, train_per_class=train_per_class,
                                 val_per_class=val_per_class, seed=seed, overwrite=True, progress=progress)
    except OSError as e:
        if _demo_complete(root_path, params):  # another process (e.g. another rank) finished it first
            return root_path
        raise UserError(f'could not write the demo dataset to {root_path}: {e}') from None


def demo_data_main(argv: List[str]) -> int:
    """``timm-alexnet-split demo-data [OUT_DIR] [--force]``."""
    parser = argparse.ArgumentParser(
        prog=f'{PROG} demo-data',
        description='Generate the embedded demo dataset (deterministic, a few seconds): colour images of '
                    f'{len(DEMO_CLASSES)} classes, each a stripe orientation x hue family pair, as an ImageFolder '
                    f'OUT_DIR/train/<class>/*.png and OUT_DIR/validation/<class>/*.png with a manifest.json. '
                    'A complete folder is reused; prints the folder.',
        epilog=f'example: {PROG} demo-data            (into ${CACHE_ENV}/demo-v{DEMO_VERSION} or '
               f'~/.cache/timm_alexnet_split/demo-v{DEMO_VERSION})\n'
               f'         {PROG} demo-data data/demo --force',
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('out_dir', nargs='?', default=None, metavar='OUT_DIR',
                        help=f'where to write it (default: {default_demo_root()})')
    parser.add_argument('--force', action='store_true', help='regenerate even if a complete demo dataset is there')
    parser.add_argument('--verify', action='store_true', help='check every file against the sha256 in the manifest')
    args = parser.parse_args(argv)
    root = Path(args.out_dir) if args.out_dir else default_demo_root()
    if root.exists() and not root.is_dir():
        raise UserError(f'{root} exists and is not a folder; choose another OUT_DIR')
    path = ensure_demo_data(root, force=args.force, verify=args.verify)
    manifest = json.loads((path / MANIFEST).read_text())
    n = {split: sum(manifest['counts'][split].values()) for split in DEMO_SPLITS}
    print(f'demo data: {path} ({len(DEMO_CLASSES)} classes, {n["train"]} train / {n["validation"]} validation, '
          f'{manifest["params"]["img_size"]}x{manifest["params"]["img_size"]} px)')
    return 0


# ---- Cats vs Dogs ------------------------------------------------------------------------------------------------
CATSDOGS_CLASSES = ('cat', 'dog')
CATSDOGS_KAGGLE_PER_CLASS = 12_500
CATSDOGS_VAL_PER_CLASS = 500
CATSDOGS_SEED = 0
_KAGGLE_NAME = re.compile(r'^(cat|dog)\.(\d+)\.jpg$')


def split_catsdogs(
        names: Sequence[str],
        *,
        allow_partial: bool = False,
        seed: int = CATSDOGS_SEED,
) -> Tuple[Dict[str, Dict[str, List[str]]], List[str], Optional[str]]:
    """Split Kaggle file names into {'train': {cls: names}, 'validation': {cls: names}}.

    The rule: per class, sort the names by their number, permute them with
    ``np.random.default_rng([seed, class index]).permutation``, and the first V (500 for Kaggle's
    12,500 per class) go to validation, the rest to train. Returns the split, the names skipped
    (not ``cat.N.jpg`` / ``dog.N.jpg``) and, for a partial set, a note on how it was scaled.
    """
    by_class: Dict[str, List[Tuple[int, str]]] = {c: [] for c in CATSDOGS_CLASSES}
    skipped = []
    for name in names:
        m = _KAGGLE_NAME.match(name)
        if m:
            by_class[m.group(1)].append((int(m.group(2)), name))
        else:
            skipped.append(name)
    counts = {c: len(v) for c, v in by_class.items()}
    note = None
    if all(n == CATSDOGS_KAGGLE_PER_CLASS for n in counts.values()):
        val = CATSDOGS_VAL_PER_CLASS
    else:
        found = ', '.join(f'{n:,} {c}s' for c, n in counts.items())
        if not allow_partial:
            raise UserError(f'found {found}; Kaggle\'s train set has {CATSDOGS_KAGGLE_PER_CLASS:,} of each: point at the full '
                            'train folder, or pass --allow-partial to split what is there')
        if min(counts.values()) < 2:
            raise UserError(f'found {found}; need at least 2 of each class to make a split')
        val = max(1, round(min(counts.values()) * CATSDOGS_VAL_PER_CLASS / CATSDOGS_KAGGLE_PER_CLASS))
        note = (f'partial set ({found}): validation scaled to {val} per class '
                f'({CATSDOGS_VAL_PER_CLASS}/{CATSDOGS_KAGGLE_PER_CLASS:,} of the smaller class), the rest train')
    split: Dict[str, Dict[str, List[str]]] = {'train': {}, 'validation': {}}
    for ci, c in enumerate(CATSDOGS_CLASSES):
        ordered = [name for _, name in sorted(by_class[c])]
        perm = np.random.default_rng([seed, ci]).permutation(len(ordered))
        chosen = [ordered[i] for i in perm]
        split['validation'][c] = sorted(chosen[:val], key=_kaggle_key)
        split['train'][c] = sorted(chosen[val:], key=_kaggle_key)
    return split, sorted(skipped), note


def _kaggle_key(name: str) -> Tuple[int, str]:
    m = _KAGGLE_NAME.match(name)
    return (int(m.group(2)) if m else -1, name)


def _write_catsdogs(src: Path, dest: Path, split: Dict[str, Dict[str, List[str]]], mode: str, note: Optional[str],
                    skipped: List[str]) -> None:
    """Fill the empty folder ``dest`` with the split (symlinks to or copies of ``src``'s files) and split.json."""
    from tqdm import tqdm
    total = sum(len(v) for part in split.values() for v in part.values())
    with tqdm(total=total, desc=mode, unit='file', leave=False) as bar:
        for part, classes in split.items():
            for c, files in classes.items():
                (dest / part / c).mkdir(parents=True)
                for name in files:
                    if mode == 'copy':
                        shutil.copy2(src / name, dest / part / c / name)
                    else:
                        os.symlink(src / name, dest / part / c / name)
                    bar.update()
    record = dict(source=str(src), mode=mode, seed=CATSDOGS_SEED,
                  rule='per class: names sorted by number, permuted by numpy default_rng([seed, class index]) '
                       '(cat 0, dog 1), the first V to validation, the rest to train',
                  counts={p: {c: len(v) for c, v in cl.items()} for p, cl in split.items()},
                  partial=note, skipped=skipped, validation=split['validation'])
    (dest / 'split.json').write_text(json.dumps(record, indent=1) + '\n')


def prepare_catsdogs_main(argv: List[str]) -> int:
    """``timm-alexnet-split prepare-catsdogs KAGGLE_TRAIN_DIR OUT_DIR [--copy|--symlink] [--allow-partial]``."""
    parser = argparse.ArgumentParser(
        prog=f'{PROG} prepare-catsdogs',
        description='Make the deterministic 24,000/1,000 Cats vs Dogs split (recipes/catsdogs_split*.yaml) from the Kaggle '
                    '"Dogs vs. Cats" train folder (25,000 files cat.N.jpg / dog.N.jpg) as an ImageFolder: '
                    'OUT_DIR/train/{cat,dog} (12,000 each) and OUT_DIR/validation/{cat,dog} (500 each), symlinks '
                    'to the originals by default, plus OUT_DIR/split.json recording the rule and the validation '
                    'names. Per class the names are sorted by number and permuted with numpy '
                    f'default_rng([{CATSDOGS_SEED}, class]) (cat 0, dog 1); the first 500 are validation.',
        epilog=f'example: {PROG} prepare-catsdogs ~/kaggle/dogs-vs-cats/train data/catsdogs')
    parser.add_argument('src', metavar='KAGGLE_TRAIN_DIR', help="Kaggle's train folder (cat.0.jpg ... dog.12499.jpg)")
    parser.add_argument('out', metavar='OUT_DIR', help='new or empty folder to write the split into')
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument('--symlink', dest='mode', action='store_const', const='symlink',
                      help='link to the originals (default)')
    mode.add_argument('--copy', dest='mode', action='store_const', const='copy', help='copy the files')
    parser.add_argument('--allow-partial', action='store_true',
                        help='accept a folder without all 25,000 images: the validation share is scaled (and said so)')
    parser.set_defaults(mode='symlink')
    args = parser.parse_args(argv)
    from .atomic import replace_when_done

    src, out = Path(args.src).expanduser().absolute(), Path(args.out).expanduser().absolute()
    if not src.is_dir():
        raise UserError(f'{args.src} is not a folder; pass Kaggle\'s unpacked train folder (cat.0.jpg ... dog.12499.jpg)')
    try:
        names = sorted(e.name for e in src.iterdir())
    except OSError as e:
        raise UserError(f'cannot read {src}: {e.strerror or e}') from None
    if not any(_KAGGLE_NAME.match(n) for n in names):
        hint = ' (it holds a train/ folder: pass that)' if (src / 'train').is_dir() else ''
        raise UserError(f'no cat.N.jpg / dog.N.jpg files in {src}{hint}')
    try:
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise UserError(f'{out} exists and is not an empty folder; choose a new OUT_DIR')
    except OSError as e:
        raise UserError(f'cannot write {out}: {e.strerror or e}') from None
    if out == src or src in out.parents:
        raise UserError('OUT_DIR must not be inside KAGGLE_TRAIN_DIR')
    split, skipped, note = split_catsdogs(names, allow_partial=args.allow_partial)
    if skipped:
        shown = ', '.join(skipped[:5]) + (', ...' if len(skipped) > 5 else '')
        print(f'skipped {len(skipped)} entries not named cat.N.jpg / dog.N.jpg: {shown}')
    if note:
        print(note)
    with replace_when_done(out, True, 'while preparing it', make_folder=True, folder=True) as tmp:  # unwritable: now
        try:
            _write_catsdogs(src, tmp, split, args.mode, note, skipped)
        except OSError as e:
            hint = ' (use --copy where symlinks are not allowed)' if args.mode == 'symlink' else ''
            raise UserError(f'could not write {out}: {e}{hint}') from None
    counts = {p: {c: len(v) for c, v in cl.items()} for p, cl in split.items()}
    print(f'{out}: train {counts["train"]["cat"]:,} cat + {counts["train"]["dog"]:,} dog, validation '
          f'{counts["validation"]["cat"]:,} cat + {counts["validation"]["dog"]:,} dog '
          f'({"copies" if args.mode == "copy" else "symlinks"})')
    return 0
