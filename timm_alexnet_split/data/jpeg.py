"""JPEG bytes -> an RGB PIL image, by libjpeg-turbo without PIL's decoder where it gives PIL's pixels.

simplejpeg calls libjpeg-turbo straight into a NumPy array: the same pixels as PIL's decoder (both libjpeg-turbo
with its exact DCT and fancy upsampling; the tests compare them, and a check at first use turns simplejpeg off,
with a warning, where this machine's two builds disagree), at 1.3-1.8x PIL's rate decoding alone and 1.4x for
the whole pipeline of the 256-px shard JPEGs that CPU decoding reads (docs/benchmarks.md). CMYK and YCCK JPEGs
(PIL converts them otherwise), images larger than PIL's decompression-bomb limit, what is not a JPEG, a file
libjpeg-turbo finds corrupt (PIL decodes some of those), and any image wanted in another mode go to PIL, which
decodes them or raises as it always did.

Invariant: :func:`decode_rgb` returns the pixels of ``Image.open(...).convert('RGB')`` for every JPEG that
PIL decodes; a file PIL refuses may still be decoded where libjpeg-turbo accepts it (a marker PIL's parser
does not know, e.g. TEM), which prepare-shards' own JPEGs (written by PIL) never hold.
"""
from __future__ import annotations

import io
import logging
from typing import Any, Optional

import numpy as np
from PIL import Image

_logger = logging.getLogger(__name__)
_SAME_AS_PIL = ('YCbCr', 'Gray', 'RGB')  # JPEG colour spaces whose RGB pixels both decoders agree on (not CMYK, YCCK)
_UNCHECKED = object()
_SIMPLEJPEG: Any = _UNCHECKED


def _agrees_with_pil(simplejpeg: Any) -> bool:
    """Whether this machine's simplejpeg decodes a 4:2:0 JPEG to PIL's pixels (two separately built libjpegs)."""
    rng = np.random.default_rng(0)
    image = Image.fromarray(np.kron(rng.integers(0, 256, (5, 6, 3)), np.ones((8, 8, 1))).astype(np.uint8)[:37, :45])
    out = io.BytesIO()
    image.save(out, 'JPEG', quality=80)
    data = out.getvalue()
    return np.array_equal(simplejpeg.decode_jpeg(data, colorspace='RGB'),
                          np.asarray(Image.open(io.BytesIO(data)).convert('RGB')))


def _simplejpeg() -> Optional[Any]:
    """simplejpeg where it is installed and gives PIL's pixels here, else None (PIL decodes everything)."""
    global _SIMPLEJPEG
    if _SIMPLEJPEG is _UNCHECKED:
        try:
            import simplejpeg
        except ImportError:  # a dependency; without it PIL decodes everything, the same pixels more slowly
            simplejpeg = None
        if simplejpeg is not None and not _agrees_with_pil(simplejpeg):
            _logger.warning('simplejpeg decodes JPEGs otherwise than PIL on this machine: PIL decodes them all '
                            '(the same pixels as before, more slowly)')
            simplejpeg = None
        _SIMPLEJPEG = simplejpeg
    return _SIMPLEJPEG


def decoder_name() -> str:
    """Which decoder :func:`decode_rgb` uses for JPEGs here."""
    return 'simplejpeg (libjpeg-turbo)' if _simplejpeg() is not None else 'PIL'


def decode_rgb(data: bytes, mode: str = 'RGB', array: bool = False) -> Any:
    """The image in ``data`` as a PIL image of ``mode``: JPEGs decoded by simplejpeg when ``mode`` is RGB. With
    ``array``, what simplejpeg decodes is returned as its (H, W, 3) uint8 array (the same pixels, without the
    copy into a PIL image); what PIL decodes is still a PIL image."""
    simplejpeg = _simplejpeg() if mode == 'RGB' and data[:2] == b'\xff\xd8' else None
    if simplejpeg is not None:
        try:
            h, w, space, _ = simplejpeg.decode_jpeg_header(data)
            if space in _SAME_AS_PIL and (Image.MAX_IMAGE_PIXELS is None or h * w <= Image.MAX_IMAGE_PIXELS):
                pixels = simplejpeg.decode_jpeg(data, colorspace='RGB')
                return pixels if array else Image.fromarray(pixels, 'RGB')
        except ValueError:  # a broken file (libjpeg-turbo stops at any corrupt data): PIL's decoder, and its verdict
            pass
    return Image.open(io.BytesIO(data)).convert(mode)
