"""``timm_alexnet_split.augment`` (PCA lighting) lives in :mod:`timm_alexnet_split.data.augment`; this name is kept
for users' imports (``from timm_alexnet_split.augment import PCALighting``)."""
from .data.augment import *  # noqa: F401,F403
from .data.augment import __all__  # noqa: F401
