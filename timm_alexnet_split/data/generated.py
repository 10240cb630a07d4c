"""Procedurally generated datasets as ImageFolder folders with a manifest: written once, checked, reused.

A generated dataset is described by a :class:`Generated`: its class names, images per class and split, the
parameters that define it (written to the manifest; another value is another dataset) and a renderer that
yields the images deterministically. :func:`ensure` reuses a complete folder and regenerates anything else
that is a generated dataset; a folder holding anything else is never replaced.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, Optional, Tuple

import numpy as np

from ..atomic import replace_when_done
from ..errors import UserError

__all__ = ['Generated', 'SPLITS', 'MANIFEST', 'CACHE_ENV', 'cache_dir', 'write', 'is_complete', 'ensure']

SPLITS = ('train', 'validation')
MANIFEST = 'manifest.json'
CACHE_ENV = 'TIMM_ALEXNET_SPLIT_CACHE'

# (split index, images per class) -> (class name, index within the class, uint8 HxWx3 image), in a fixed order
Render = Callable[[int, int], Iterator[Tuple[str, int, np.ndarray]]]


# The opponent-colour plane both generated datasets draw their hues in: rows are the red-green and the
# blue-yellow axes of RGB, each orthogonal to grey (1, 1, 1) and of unit length.
OPPONENT = np.stack([np.array([2.0, -1.0, -1.0]) / math.sqrt(6), np.array([0.0, 1.0, -1.0]) / math.sqrt(2)])

@dataclass(frozen=True)
class Generated:
    """One generated dataset: what it is called in messages, its classes, counts, defining parameters, renderer."""

    what: str
    classes: Tuple[str, ...]
    per_class: Tuple[int, int]  # train, validation
    params: Dict[str, object]
    render: Render
    img_size: int


def cache_dir() -> Path:
    """``$TIMM_ALEXNET_SPLIT_CACHE``, else ``~/.cache/timm_alexnet_split``."""
    base = os.environ.get(CACHE_ENV)
    return Path(base).expanduser() if base else Path.home() / '.cache' / 'timm_alexnet_split'


def png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format='PNG', compress_level=1)
    return buf.getvalue()


def is_generated_folder(path: Path, classes: Tuple[str, ...]) -> bool:
    """True when ``path`` holds nothing but what :func:`write` writes (so replacing it loses no user file)."""
    for entry in path.iterdir():
        if entry.name not in {MANIFEST, *SPLITS}:
            return False
        if entry.name in SPLITS:
            if not entry.is_dir() or entry.is_symlink():
                return False
            for cls in entry.iterdir():
                if cls.name not in classes or not cls.is_dir() or cls.is_symlink():
                    return False
                if any(not f.name.endswith('.png') or not f.is_file() for f in cls.iterdir()):
                    return False
    return True


def _set_aside(out: Path) -> Optional[Path]:
    """A generated folder about to be replaced, moved beside itself (restored if the new one is not written)."""
    if not out.exists():
        return None
    old = out.with_name(f'.{out.name}.{os.getpid()}.old')
    try:
        os.replace(out, old)
    except OSError as e:
        raise UserError(f'cannot replace {out}: {e.strerror or e}') from None
    return old


def _check_target(out: Path, gen: Generated, overwrite: bool) -> None:
    from ..model import MIN_INPUT_SIZE
    if gen.img_size < MIN_INPUT_SIZE:
        raise UserError(f'{gen.what} img_size must be at least {MIN_INPUT_SIZE} (the model\'s smallest input), '
                        f'got {gen.img_size}')
    if min(gen.per_class) < 1:
        raise UserError(f'{gen.what} train_per_class and val_per_class must be >= 1')
    if out.exists():
        if not out.is_dir():
            raise UserError(f'{out} exists and is not a folder; choose another output path')
        if any(out.iterdir()):
            if not overwrite:
                raise UserError(f'{out} is not empty; choose an empty or new folder (or --force to regenerate a '
                                f'{gen.what} folder)')
            if not is_generated_folder(out, gen.classes):
                raise UserError(f'{out} holds files that are not a {gen.what} dataset; refusing to replace it, '
                                'choose another folder')


def write(out_dir: os.PathLike | str, gen: Generated, *, overwrite: bool = False, progress: bool = True) -> Path:
    """Write ``gen`` as ``out_dir/{train,validation}/<class>/NNNNN.png`` + manifest.json (sizes, sha256, digest).

    Written into a temporary sibling folder and renamed into place, so an interrupted run leaves no half
    dataset at ``out_dir``. An existing non-empty ``out_dir`` is replaced only with ``overwrite=True`` and
    only if it holds nothing but a generated dataset; otherwise UserError.
    """
    out = Path(out_dir).expanduser().absolute()
    _check_target(out, gen, overwrite)
    old = _set_aside(out) if out.is_dir() and any(out.iterdir()) else None  # a generated folder (_check_target)
    try:
        with replace_when_done(out, True, f'while generating the {gen.what} data', make_folder=True, folder=True) as tmp:
            _render_into(tmp, gen, progress)
    except BaseException:
        if old is not None and not out.exists():
            os.replace(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return out


def is_complete(root: Path, gen: Generated, verify: bool = False) -> bool:
    """The manifest matches ``gen.params`` and every file it lists is there, with its size (and hash if ``verify``)."""
    try:
        manifest = json.loads((root / MANIFEST).read_text())
        if manifest.get('params') != json.loads(json.dumps(gen.params)):
            return False
        files = manifest['files']
        expected = {f'{split}/{name}' for split in SPLITS for name in gen.classes}
        if {str(Path(rel).parent) for rel in files} != expected:
            return False
        for split in SPLITS:
            for name in gen.classes:
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


def ensure(root: Path, gen: Generated, *, force: bool = False, verify: bool = False, progress: bool = True) -> Path:
    """``root`` holding ``gen``: reused if complete, else (re)generated; a folder of other files raises UserError."""
    root = Path(root).expanduser().absolute()
    if not force and root.is_dir() and is_complete(root, gen, verify):
        return root
    try:
        return write(root, gen, overwrite=True, progress=progress)
    except UserError:
        if is_complete(root, gen):  # another process (e.g. another rank) finished it first
            return root
        raise
    except OSError as e:
        if is_complete(root, gen):  # another process (e.g. another rank) finished it first
            return root
        raise UserError(f'could not write the {gen.what} dataset to {root}: {e}') from None


def manifest_summary(root: Path) -> Tuple[int, Dict[str, int], Optional[int]]:
    """(classes, images per split, image size) from a generated folder's manifest."""
    manifest = json.loads((root / MANIFEST).read_text())
    counts = {split: sum(manifest['counts'][split].values()) for split in SPLITS}
    return len(manifest['counts'][SPLITS[0]]), counts, manifest['params'].get('img_size')


def _render_into(tmp: Path, gen: Generated, progress: bool) -> None:
    """The images as ``tmp/{train,validation}/<class>/NNNNN.png`` and manifest.json (sizes, sha256, digest)."""
    from ..progress import progress as progress_bar

    files: Dict[str, Dict[str, object]] = {}
    total = len(gen.classes) * sum(gen.per_class)
    with progress_bar(total=total, desc=f'{gen.what} data', unit='img', enabled=progress) as bar:
        for s, (split, per_class) in enumerate(zip(SPLITS, gen.per_class)):
            for name in gen.classes:
                (tmp / split / name).mkdir(parents=True)
            for name, i, image in gen.render(s, per_class):
                rel = f'{split}/{name}/{i:05d}.png'
                data = png_bytes(image)
                (tmp / rel).write_bytes(data)
                files[rel] = dict(size=len(data), sha256=hashlib.sha256(data).hexdigest())
                bar.update()
    digest = hashlib.sha256(''.join(f'{k} {v["sha256"]}\n' for k, v in sorted(files.items())).encode()).hexdigest()
    counts = {split: {name: n for name in gen.classes} for split, n in zip(SPLITS, gen.per_class)}
    manifest = dict(params=gen.params, counts=counts, digest=digest, files=files)
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + '\n')
