"""Datasets: the embedded demo dataset (and its hard variant), the choice of embedded dataset, the Cats vs Dogs split.

The demo dataset is procedural and made on first use: colour images whose class is a pair
(stripe orientation, hue family). The orientation lives only in fine achromatic Gabor patches,
the hue only in smooth isoluminant colour blobs, both under luminance and colour noise, so
neither a colour-blind nor an orientation-blind first layer can tell all classes apart.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import CommandParser, UserError
from . import generated

__all__ = [
    'DEMO_VERSION', 'DEMO_IMG_SIZE', 'DEMO_CLASSES', 'DEMO_ORIENTATIONS', 'DEMO_HUES', 'DEMO_SPLITS', 'DEMO_HARD_SPEC',
    'DEMO_VARIANTS', 'DATASETS', 'make_demo_dataset', 'ensure_demo_data', 'ensure_dataset', 'default_demo_root',
    'render_demo_images',
    'demo_data_main', 'prepare_catsdogs_main', 'split_catsdogs',
]

PROG = 'timm-alexnet-split'

# ---- the embedded demo dataset ---------------------------------------------------------------------------------
DEMO_VERSION = 1
DEMO_IMG_SIZE = 96
DEMO_SPLITS = generated.SPLITS
DEMO_TRAIN_PER_CLASS = 300
DEMO_VAL_PER_CLASS = 40
DEMO_ORIENTATIONS = (0, 45, 90, 135)  # stripe angle in degrees, anticlockwise from horizontal
DEMO_HUES = {'red': 0.0, 'green': 120.0, 'blue': 240.0}  # hue angle in the opponent plane (see _OPPONENT)
DEMO_CLASSES: Tuple[str, ...] = tuple(sorted(f'{h}-{o:03d}' for h in DEMO_HUES for o in DEMO_ORIENTATIONS))
CACHE_ENV = generated.CACHE_ENV
MANIFEST = generated.MANIFEST
_CHUNK = 128  # images rendered per call; part of the generator's definition (seeds are per chunk)

# The picture, in pixels of a DEMO_IMG_SIZE image and 0-255 units; scaled with img_size.
DEMO_SPEC: Dict[str, object] = dict(
    n_gabor=10, period=(6.0, 10.0), sigma=(14.0, 22.0), gabor_amp=(40.0, 60.0), orient_jitter=6.0,
    n_lum_blob=3, lum_blob_amp=20.0,
    n_blob=3, blob_sigma=(10.0, 22.0), chroma_amp=(25.0, 45.0), hue_jitter=20.0,
    lum_noise=15.0, chroma_noise=15.0,
)
# The hard variant (SCIENCE.md, "A first probe"): weaker cues, more noise; generated with seed 1.
DEMO_HARD_SPEC: Dict[str, object] = dict(
    lum_noise=35.0, chroma_noise=30.0, gabor_amp=(15.0, 35.0), chroma_amp=(10.0, 22.0), hue_jitter=35.0,
    orient_jitter=12.0, n_gabor=6, n_blob=2, lum_blob_amp=35.0,
)
# variant -> (spec override, generator seed)
DEMO_VARIANTS: Dict[str, Tuple[Dict[str, object], int]] = {'demo': ({}, 0), 'demo-hard': (DEMO_HARD_SPEC, 1)}
DATASETS = ('demo', 'demo-hard', 'leaves')  # what `demo-data --dataset` and the trainer's --demo-dataset accept

# Unit RGB vectors orthogonal to grey (1,1,1): colour added along them leaves the channel mean, the
# luminance the chromatic fraction of PAPER.md measures, unchanged.
_OPPONENT = generated.OPPONENT


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


def _demo_params(img_size: int, train_per_class: int, val_per_class: int, seed: int,
                 spec: Dict[str, object]) -> Dict[str, object]:
    return dict(generator='timm_alexnet_split.data.render_demo_images', version=DEMO_VERSION, img_size=img_size,
                train_per_class=train_per_class, val_per_class=val_per_class, seed=seed, classes=list(DEMO_CLASSES),
                orientations=list(DEMO_ORIENTATIONS), hues=DEMO_HUES, spec=spec, chunk=_CHUNK)


def _render_split(split_idx: int, per_class: int, img_size: int, seed: int, spec: Optional[Dict[str, object]] = None):
    """Yield (class name, index in class, uint8 image) for one split, deterministically from ``seed``."""
    names = [c for c in DEMO_CLASSES for _ in range(per_class)]
    index = [i for _ in DEMO_CLASSES for i in range(per_class)]
    for c, start in enumerate(range(0, len(names), _CHUNK)):
        rng = np.random.default_rng([seed, split_idx, c])
        chunk = names[start:start + _CHUNK]
        hues, angles = zip(*(_class_attrs(name) for name in chunk))
        images = render_demo_images(rng, hues, angles, img_size, spec)
        yield from zip(chunk, index[start:start + _CHUNK], images)


def demo_generated(variant: str = 'demo', *, img_size: int = DEMO_IMG_SIZE, train_per_class: int = DEMO_TRAIN_PER_CLASS,
                   val_per_class: int = DEMO_VAL_PER_CLASS, seed: Optional[int] = None) -> generated.Generated:
    """The demo dataset ``variant`` ('demo' or 'demo-hard') as a :class:`generated.Generated`; ``seed`` None: the variant's."""
    if variant not in DEMO_VARIANTS:
        raise UserError(f'unknown demo variant {variant!r}; choose from {", ".join(DEMO_VARIANTS)}')
    override, variant_seed = DEMO_VARIANTS[variant]
    seed = variant_seed if seed is None else seed
    spec = {**DEMO_SPEC, **override}
    return generated.Generated(
        what=variant, classes=DEMO_CLASSES, per_class=(train_per_class, val_per_class), img_size=img_size,
        params=_demo_params(img_size, train_per_class, val_per_class, seed, spec),
        render=lambda s, n: _render_split(s, n, img_size, seed, spec))


def make_demo_dataset(
        out_dir: os.PathLike | str,
        *,
        img_size: int = DEMO_IMG_SIZE,
        train_per_class: int = DEMO_TRAIN_PER_CLASS,
        val_per_class: int = DEMO_VAL_PER_CLASS,
        seed: Optional[int] = None,
        variant: str = 'demo',
        overwrite: bool = False,
        progress: bool = True,
) -> Path:
    """Write the demo dataset as ImageFolder: ``out_dir/{train,validation}/<class>/NNNNN.png`` + manifest.json.

    Deterministic: the same arguments give byte-identical files. ``variant`` 'demo-hard' is the generator with
    weaker cues and more noise (DEMO_HARD_SPEC, seed 1 unless ``seed`` is given). Written into a temporary
    sibling folder and renamed into place, so an interrupted run leaves no half dataset at ``out_dir``. An
    existing non-empty ``out_dir`` is replaced only with ``overwrite=True`` and only if it holds nothing but a
    demo dataset; otherwise UserError.
    """
    gen = demo_generated(variant, img_size=img_size, train_per_class=train_per_class, val_per_class=val_per_class,
                         seed=seed)
    return generated.write(out_dir, gen, overwrite=overwrite, progress=progress)


def default_demo_root(variant: str = 'demo') -> Path:
    """``$TIMM_ALEXNET_SPLIT_CACHE/<variant>-v<N>``, else ``~/.cache/timm_alexnet_split/<variant>-v<N>``."""
    return generated.cache_dir() / f'{variant}-v{DEMO_VERSION}'


def ensure_demo_data(
        root: Optional[os.PathLike | str] = None,
        *,
        img_size: int = DEMO_IMG_SIZE,
        train_per_class: int = DEMO_TRAIN_PER_CLASS,
        val_per_class: int = DEMO_VAL_PER_CLASS,
        seed: Optional[int] = None,
        variant: str = 'demo',
        force: bool = False,
        verify: bool = False,
        progress: bool = True,
) -> Path:
    """The demo dataset's folder, generated if missing and reused if its manifest matches and its files are there.

    An incomplete or different demo folder is regenerated in a fresh folder that then replaces it; a folder
    holding anything else raises UserError. ``force`` regenerates a complete one too; ``verify`` checks hashes.
    """
    gen = demo_generated(variant, img_size=img_size, train_per_class=train_per_class, val_per_class=val_per_class,
                         seed=seed)
    root_path = Path(root) if root is not None else default_demo_root(variant)
    return generated.ensure(root_path, gen, force=force, verify=verify, progress=progress)


def ensure_dataset(name: str = 'demo', root: Optional[os.PathLike | str] = None, **options) -> Path:
    """The embedded dataset ``name`` (one of DATASETS) in ``root`` or its cache folder: reused, else generated.

    ``options``: those of :func:`ensure_demo_data` or :func:`timm_alexnet_split.leaves.ensure_leaves_data`.
    """
    if name in DEMO_VARIANTS:
        return ensure_demo_data(root, variant=name, **options)
    if name == 'leaves':
        from .leaves import ensure_leaves_data
        return ensure_leaves_data(root, **options)
    raise UserError(f'unknown dataset {name!r}; choose from {", ".join(DATASETS)}')


def default_root(name: str) -> Path:
    if name == 'leaves':
        from .leaves import default_leaves_root
        return default_leaves_root()
    return default_demo_root(name)


def demo_data_main(argv: List[str]) -> int:
    """``timm-alexnet-split demo-data [OUT_DIR] [--dataset NAME] [--force] [--verify]``."""
    parser = CommandParser(
        prog=f'{PROG} demo-data',
        description='Generate an embedded dataset (deterministic, seconds) as an ImageFolder OUT_DIR/train/<class>/*.png '
                    'and OUT_DIR/validation/<class>/*.png with a manifest.json. A complete folder is reused; prints the '
                    f'folder. demo: {len(DEMO_CLASSES)} classes, each a stripe orientation x hue family pair. '
                    'demo-hard: the same classes with weaker cues and more noise. leaves: dead-leaves images, '
                    '72 classes = texture orientation x texture frequency x centre hue x surround hue.',
        epilog=f'example: {PROG} demo-data            (into ${CACHE_ENV}/demo-v{DEMO_VERSION} or '
               f'~/.cache/timm_alexnet_split/demo-v{DEMO_VERSION})\n'
               f'         {PROG} demo-data --dataset leaves\n'
               f'         {PROG} demo-data data/demo --force',
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('out_dir', nargs='?', default=None, metavar='OUT_DIR',
                        help='where to write it (default: the cache folder <dataset>-v<N>, '
                             f'e.g. {default_demo_root()})')
    parser.add_argument('--dataset', default='demo', choices=DATASETS, help='which dataset (default demo)')
    parser.add_argument('--force', action='store_true', help='regenerate even if a complete dataset is there')
    parser.add_argument('--verify', action='store_true', help='check every file against the sha256 in the manifest')
    args = parser.parse_args(argv)
    root = Path(args.out_dir) if args.out_dir else default_root(args.dataset)
    if root.exists() and not root.is_dir():
        raise UserError(f'{root} exists and is not a folder; choose another OUT_DIR')
    path = ensure_dataset(args.dataset, root, force=args.force, verify=args.verify)
    classes, n, size = generated.manifest_summary(path)
    print(f'{args.dataset} data: {path} ({classes} classes, {n["train"]} train / {n["validation"]} validation, '
          f'{size}x{size} px)')
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
    from ..progress import progress
    total = sum(len(v) for part in split.values() for v in part.values())
    with progress(total=total, desc=mode, unit='file') as bar:
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
    from ..atomic import write_text
    write_text(dest / 'split.json', json.dumps(record, indent=1) + '\n', 'while splitting Cats vs Dogs')


def prepare_catsdogs_main(argv: List[str]) -> int:
    """``timm-alexnet-split prepare-catsdogs KAGGLE_TRAIN_DIR OUT_DIR [--copy|--symlink] [--allow-partial]``."""
    parser = CommandParser(
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
    from ..atomic import replace_when_done

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
