"""PCA lighting (Krizhevsky et al. 2012, section 4.1) and the ``pca-stats`` command.

For each image, each time it is used, add ``sum_i p_i * alpha_i * lambda_i`` to every RGB pixel,
``alpha_i ~ N(0, std)``, ``p_i`` / ``lambda_i`` the eigenvectors / eigenvalues of the 3x3 covariance of
the training set's RGB pixels. Eigenvectors are the ROWS of ``eigvec`` throughout this module, so the
offset is ``eigvec.T @ (alpha * eigval)``. Pixels are in 0-1.

- :class:`PCALighting`: per-image transform on a CHW float tensor in 0-1, for any torchvision pipeline.
- :class:`BatchPCALighting`: the same on a normalised batch on any device (after timm's prefetcher).
- :func:`load_eig`: ``'imagenet'`` or the JSON that ``timm-alexnet-split pca-stats`` writes.
"""
from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..atomic import replace_when_done
from ..errors import CommandParser, UserError

__all__ = ['IMAGENET_EIGVAL', 'IMAGENET_EIGVEC', 'pca_offset', 'PCALighting', 'BatchPCALighting', 'load_eig',
           'rgb_eigen', 'pca_stats_main']

PROG = 'timm-alexnet-split'

IMAGENET_EIGVAL = (0.2175, 0.0188, 0.0045)
# Rows are eigenvectors (pixels in 0-1). fb.resnet.torch prints this matrix transposed and computes
# eigvec * (alpha * eigval), i.e. its columns are the eigenvectors; the first is the grey axis.
IMAGENET_EIGVEC = (
    (-0.5675, -0.5808, -0.5836),
    (0.7192, -0.0045, -0.6948),
    (0.4009, -0.8140, 0.4203),
)

ArrayLike = Union[Sequence[float], Sequence[Sequence[float]], np.ndarray, torch.Tensor]


def _as_eig(eigval: Optional[ArrayLike], eigvec: Optional[ArrayLike]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Validate eigenvalues (3,) and row eigenvectors (3, 3) as float64 CPU tensors (ImageNet by default)."""
    val = torch.as_tensor(np.asarray(IMAGENET_EIGVAL if eigval is None else eigval, dtype=np.float64))
    vec = torch.as_tensor(np.asarray(IMAGENET_EIGVEC if eigvec is None else eigvec, dtype=np.float64))
    if val.shape != (3,) or vec.shape != (3, 3):
        raise ValueError(f'eigval must have shape (3,) and eigvec (3, 3), got {tuple(val.shape)} and {tuple(vec.shape)}')
    if not (torch.isfinite(val).all() and torch.isfinite(vec).all()):
        raise ValueError('eigval and eigvec must be finite')
    return val, vec


def _fmt(t: torch.Tensor) -> str:
    if t.dim() == 1:
        return repr(tuple(round(v, 6) for v in t.tolist()))
    return repr(tuple(tuple(round(v, 6) for v in r) for r in t.tolist()))


def pca_offset(alpha: torch.Tensor, eigval: torch.Tensor, eigvec: torch.Tensor) -> torch.Tensor:
    """RGB offsets ``sum_i eigvec[i] * alpha[..., i] * eigval[i]`` for alpha of shape (..., 3)."""
    return (alpha * eigval) @ eigvec


class PCALighting:
    """Add PCA lighting noise to one CHW float RGB image in 0-1 (a torchvision-style transform).

    A fresh ``alpha ~ N(0, std)`` is drawn from torch's global RNG at every call, so each use of an
    image gets its own lighting (DataLoader workers are seeded by torch/timm). The result is NOT
    clamped to 0-1, as in the paper and fb.resnet.torch; put it after ``ToTensor()`` and before
    ``Normalize``.

    Args:
        std: standard deviation of alpha (paper: 0.1); 0 returns the image unchanged.
        eigval: the 3 eigenvalues of the RGB covariance, pixels in 0-1 (default: ImageNet's).
        eigvec: 3x3, rows are the eigenvectors (default: ImageNet's).
    """

    def __init__(self, std: float = 0.1, eigval: Optional[ArrayLike] = None, eigvec: Optional[ArrayLike] = None):
        if not (std >= 0 and math.isfinite(std)):
            raise ValueError(f'std must be a finite number >= 0, got {std}')
        self.std = float(std)
        self.eigval, self.eigvec = _as_eig(eigval, eigvec)

    def __call__(self, img: torch.Tensor, alpha: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Return ``img`` plus one offset per call; ``alpha`` (3,) replaces the random draw if given."""
        if not isinstance(img, torch.Tensor) or not img.is_floating_point():
            raise TypeError(f'PCALighting expects a float CHW tensor in 0-1 (put it after ToTensor()), got {_describe(img)}')
        if img.dim() != 3 or img.shape[0] != 3:
            raise ValueError(f'PCALighting expects one RGB image (3, H, W), got shape {tuple(img.shape)}; '
                             'use BatchPCALighting for batches')
        if alpha is None:
            if self.std == 0:
                return img
            alpha = torch.randn(3) * self.std
        offset = pca_offset(alpha.to('cpu', torch.float64), self.eigval, self.eigvec)
        return img + offset.to(device=img.device, dtype=img.dtype).view(3, 1, 1)

    def __repr__(self) -> str:
        return f'{type(self).__name__}(std={self.std}, eigval={_fmt(self.eigval)}, eigvec={_fmt(self.eigvec)})'


class BatchPCALighting:
    """PCA lighting on a normalised batch (N, 3, H, W) on any device and float dtype, one draw per image.

    The batch is ``(x01 - mean) / norm_std`` per channel with ``x01`` the pixels in 0-1 (timm's
    prefetcher does exactly this with the model's mean/std). Normalisation is affine, so adding
    ``offset / norm_std`` here equals adding ``offset`` to ``x01`` before normalising. The draws
    are made on the batch's device (no host synchronisation); pass a ``generator`` on that device
    to make them reproducible.

    Args:
        std: standard deviation of alpha (paper: 0.1); 0 returns the batch unchanged.
        eigval: the 3 eigenvalues of the RGB covariance, pixels in 0-1 (default: ImageNet's).
        eigvec: 3x3, rows are the eigenvectors (default: ImageNet's).
        norm_std: per-channel std the batch was divided by, in 0-1 units (timm's ``std``; the
            split AlexNet's is 1/255, i.e. 0-255 pixels).
    """

    def __init__(self, std: float = 0.1, eigval: Optional[ArrayLike] = None, eigvec: Optional[ArrayLike] = None,
                 norm_std: Union[float, Sequence[float]] = (1.0, 1.0, 1.0)):
        if not (std >= 0 and math.isfinite(std)):
            raise ValueError(f'std must be a finite number >= 0, got {std}')
        ns = np.broadcast_to(np.asarray(norm_std, dtype=np.float64), (3,))
        if not (np.isfinite(ns).all() and (ns > 0).all()):
            raise ValueError(f'norm_std must be 3 finite numbers > 0, got {norm_std}')
        self.std = float(std)
        self.eigval, self.eigvec = _as_eig(eigval, eigvec)
        self.norm_std = torch.as_tensor(ns.copy())
        self._matrix = self.eigvec / self.norm_std  # offsets in normalised units: (alpha * eigval) @ _matrix
        self._cache: dict = {}

    def _on(self, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
        if device not in self._cache:
            self._cache[device] = (self.eigval.to(device, torch.float32), self._matrix.to(device, torch.float32))
        return self._cache[device]

    def __call__(self, x: torch.Tensor, generator: Optional[torch.Generator] = None,
                 alpha: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Return ``x`` plus each image's offset; ``alpha`` (N, 3) replaces the random draws if given."""
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError(f'BatchPCALighting expects a normalised float batch (N, 3, H, W), got {_describe(x)}')
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f'BatchPCALighting expects a batch (N, 3, H, W), got shape {tuple(x.shape)}')
        eigval, matrix = self._on(x.device)
        if alpha is None:
            if self.std == 0:
                return x
            dev = generator.device if generator is not None else x.device
            alpha = torch.randn(x.shape[0], 3, device=dev, generator=generator).to(x.device, non_blocking=True) * self.std
        offset = (alpha.to(x.device, torch.float32) * eigval) @ matrix
        return x + offset.to(x.dtype).view(-1, 3, 1, 1)

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(std={self.std}, eigval={_fmt(self.eigval)}, eigvec={_fmt(self.eigvec)}, '
                f'norm_std={_fmt(self.norm_std)})')


def _describe(x: object) -> str:
    return f'{x.dtype} tensor' if isinstance(x, torch.Tensor) else type(x).__name__


def load_eig(spec: str) -> Tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (3,) and row eigenvectors (3, 3), pixels in 0-1, from ``'imagenet'`` or a pca-stats JSON file."""
    if spec == 'imagenet':
        return np.array(IMAGENET_EIGVAL, dtype=np.float64), np.array(IMAGENET_EIGVEC, dtype=np.float64)
    path = Path(spec)
    hint = f"give 'imagenet' or a JSON file written by '{PROG} pca-stats'"
    if not path.is_file():
        raise UserError(f'PCA eigen file {spec} not found; {hint}')
    try:
        data = json.loads(path.read_text())
        eigval = np.asarray(data['eigval'], dtype=np.float64)
        eigvec = np.asarray(data['eigvec'], dtype=np.float64)
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        raise UserError(f'{spec} is not a readable PCA eigen file ({type(e).__name__}: {e}); {hint}') from None
    if eigval.shape != (3,) or eigvec.shape != (3, 3):
        raise UserError(f'{spec}: eigval must be 3 numbers and eigvec 3 rows of 3; {hint}')
    if not (np.isfinite(eigval).all() and np.isfinite(eigvec).all()) or (eigval < 0).any():
        raise UserError(f'{spec}: eigval must be finite and >= 0, eigvec finite; {hint}')
    if not np.allclose(eigvec @ eigvec.T, np.eye(3), atol=1e-3):
        raise UserError(f'{spec}: the rows of eigvec are not orthonormal eigenvectors; {hint}')
    if data.get('pixel_scale', '0-1') != '0-1':
        raise UserError(f"{spec}: pixel_scale is {data['pixel_scale']!r}, expected '0-1'; {hint}")
    return eigval, eigvec


def _image_files(root: Path) -> List[Path]:
    from timm.data.readers.img_extensions import get_img_extensions
    exts = {e.lower() for e in get_img_extensions()}
    files = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames.sort()
        files += [Path(dirpath) / f for f in sorted(filenames) if os.path.splitext(f)[1].lower() in exts]
    return files


def _read_rgb(path: Path, size: int) -> np.ndarray:
    """Pixels (P, 3) uint8 of one image, its shorter side resized to ``size`` (0: original size)."""
    from PIL import Image
    with Image.open(path) as im:
        if size:
            im.draft('RGB', (size, size))  # JPEG: decode at a reduced scale, still >= size
        im = im.convert('RGB')
        if size and min(im.size) != size:
            w, h = im.size
            s = size / min(w, h)
            im = im.resize((max(1, round(w * s)), max(1, round(h * s))), Image.BILINEAR)
        return np.asarray(im, dtype=np.uint8).reshape(-1, 3)


def rgb_eigen(total: np.ndarray, outer: np.ndarray, n: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean (3,), eigenvalues (3,) descending and row eigenvectors (3, 3) from pixel sums."""
    mean = total / n
    cov = outer / n - np.outer(mean, mean)
    val, vec = np.linalg.eigh((cov + cov.T) / 2)
    val, vec = np.clip(val[::-1], 0, None), vec[:, ::-1].T.copy()
    vec *= np.sign(vec[np.arange(3), np.abs(vec).argmax(1)])[:, None]  # largest component positive
    return mean, val, vec


def pca_stats_main(argv: List[str]) -> int:
    """``timm-alexnet-split pca-stats``: a dataset's RGB eigenvalues/vectors for PCA lighting."""
    parser = CommandParser(
        prog=f'{PROG} pca-stats',
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description='Estimate the eigenvalues and eigenvectors of the 3x3 covariance of RGB pixel values (0-1)\n'
                    'over the images under DATA_DIR (any nesting, e.g. an ImageFolder train/ folder), as the\n'
                    'paper did for ImageNet, for PCA lighting (--pca-eig FILE). Streams the images with bounded\n'
                    'memory; unreadable images are skipped and listed. Writes JSON: eigval (descending),\n'
                    'eigvec (rows are the eigenvectors), mean, num_pixels, num_images, skipped, pixel_scale.',
        epilog=f'example:\n  {PROG} pca-stats data/catsdogs/train -o data/catsdogs/eig.json')
    parser.add_argument('data_dir', metavar='DATA_DIR', help='folder searched recursively for .png/.jpg/.jpeg images')
    parser.add_argument('-o', '--output', required=True, metavar='FILE', help='JSON file to write')
    parser.add_argument('--max-images', type=int, default=None, metavar='N',
                        help='use N images evenly spaced over the sorted list (default: all)')
    parser.add_argument('--size', type=int, default=256, metavar='S',
                        help='resize each image so its shorter side is S before counting pixels (default 256; 0: as stored)')
    parser.add_argument('--force', action='store_true', help='overwrite FILE if it exists')
    args = parser.parse_args(argv)

    root, out = Path(args.data_dir), Path(args.output)
    if not root.is_dir():
        what = 'is a file, not a folder' if root.exists() else 'not found'
        raise UserError(f'data folder {root} {what}; give the folder holding the training images')
    if out.exists() and not args.force:
        raise UserError(f'{out} exists; choose another -o or add --force to overwrite it')
    if args.max_images is not None and args.max_images < 1:
        raise UserError('--max-images must be at least 1')
    if args.size < 0:
        raise UserError('--size must be >= 0 (0 keeps the stored size)')
    files = _image_files(root)
    if not files:
        raise UserError(f'no .png/.jpg/.jpeg images under {root}')
    if args.max_images is not None and args.max_images < len(files):
        files = [files[i] for i in np.unique(np.linspace(0, len(files) - 1, args.max_images).round().astype(int))]

    from ..progress import progress
    total, outer, n, used, skipped = np.zeros(3), np.zeros((3, 3)), 0, 0, []
    for f in progress(files, desc='pca-stats', unit='img'):
        try:
            px = _read_rgb(f, args.size)
        except Exception as e:  # any decoder failure (truncated, not an image, bomb...) skips the file
            skipped.append({'path': str(f.relative_to(root)), 'error': f'{type(e).__name__}: {e}'})
            continue
        c = np.ascontiguousarray(px.T, dtype=np.float64)  # 0-255 integers: these float64 sums stay exact below 2**53
        total += c.sum(1)
        outer += c @ c.T
        n += c.shape[1]
        used += 1
    if not used:
        raise UserError(f'none of the {len(files)} images under {root} could be read (first: {skipped[0]["error"]})')

    mean, eigval, eigvec = rgb_eigen(total / 255, outer / 255 ** 2, n)
    result = {'eigval': eigval.tolist(), 'eigvec': eigvec.tolist(), 'mean': mean.tolist(), 'num_pixels': int(n),
              'num_images': used, 'skipped': skipped, 'pixel_scale': '0-1'}
    try:
        with replace_when_done(out, True, 'while estimating', make_folder=True) as tmp:
            tmp.write_text(json.dumps(result, indent=2) + '\n')
    except UserError as e:
        raise UserError(f'{e}; choose another -o') from None
    print(f'{used} images, {n:,} pixels; {len(skipped)} skipped' + (' (listed in the file)' if skipped else ''))
    print('eigval ' + ' '.join(f'{v:.5g}' for v in eigval))
    for row in eigvec:
        print('eigvec ' + ' '.join(f'{v:+.4f}' for v in row))
    print(f'wrote {out}; use it with --pca-eig {out}')
    return 0
