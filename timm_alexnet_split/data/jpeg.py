"""JPEG bytes -> an RGB PIL image, by libjpeg-turbo without PIL's decoder where it can.

simplejpeg calls libjpeg-turbo straight into a NumPy array: the same pixels as PIL's decoder (both libjpeg-turbo
with its exact DCT and fancy upsampling; the tests compare them), at 1.3-1.7x PIL's rate per core for the 256-px
shard JPEGs that CPU decoding reads (docs/benchmarks.md). CMYK and YCCK JPEGs (PIL converts them otherwise), what
is not a JPEG, a file libjpeg-turbo finds corrupt (PIL decodes some of those), and any image wanted in another
mode go to PIL, which decodes them or raises as it always did.

Invariant: :func:`decode_rgb` returns exactly the pixels of ``Image.open(...).convert('RGB')``.
"""
from __future__ import annotations

import io
from typing import Any, Optional

from PIL import Image


def _simplejpeg() -> Optional[Any]:
    try:
        import simplejpeg
    except ImportError:  # a dependency; without it PIL decodes everything, the same pixels more slowly
        return None
    return simplejpeg


_SIMPLEJPEG = _simplejpeg()
_SAME_AS_PIL = ('YCbCr', 'Gray', 'RGB')  # JPEG colour spaces whose RGB pixels both decoders agree on (not CMYK, YCCK)


def decoder_name() -> str:
    """Which decoder :func:`decode_rgb` uses for JPEGs here."""
    return 'simplejpeg (libjpeg-turbo)' if _SIMPLEJPEG is not None else 'PIL'


def decode_rgb(data: bytes, mode: str = 'RGB') -> Image.Image:
    """The image in ``data`` as a PIL image of ``mode``: JPEGs decoded by simplejpeg when ``mode`` is RGB."""
    if _SIMPLEJPEG is not None and mode == 'RGB' and data[:2] == b'\xff\xd8':
        try:
            if _SIMPLEJPEG.decode_jpeg_header(data)[2] in _SAME_AS_PIL:
                return Image.fromarray(_SIMPLEJPEG.decode_jpeg(data, colorspace='RGB'), 'RGB')
        except ValueError:  # a broken file (libjpeg-turbo stops at any corrupt data): PIL's decoder, and its verdict
            pass
    return Image.open(io.BytesIO(data)).convert(mode)
