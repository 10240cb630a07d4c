"""Which folder holds a split of an image-folder dataset: timm's lookup, without its silent fallback.

timm's ``create_dataset`` looks for ``ROOT/SPLIT`` (and for the synonyms of train and validation) and, when
there is none, quietly reads the whole ``ROOT``: a misspelled ``--split valdation`` then evaluates on
``train/`` and ``validation/`` together, with ``train`` and ``validation`` as two classes. Here a split
that is not there is an error naming the splits that are, unless ``ROOT`` has no split folders at all
(a plain folder of class folders, which then *is* the data).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

from ..errors import UserError

__all__ = ['TRAIN_NAMES', 'EVAL_NAMES', 'split_folders', 'find_split']

# timm.data.dataset_factory's synonyms, in its order of preference
TRAIN_NAMES = ('train', 'training')
EVAL_NAMES = ('val', 'valid', 'validation', 'eval', 'evaluation')
OTHER_NAMES = ('test', 'testing')


def split_folders(root: Path) -> List[str]:
    """The sub-folders of ``root`` whose names are split names (train, validation, val, test, ...)."""
    known = {n for n in TRAIN_NAMES + EVAL_NAMES + OTHER_NAMES}
    try:
        return sorted(e.name for e in os.scandir(root) if e.is_dir() and e.name.lower() in known)
    except OSError:
        return []


def find_split(root: Path, split: str) -> Optional[Path]:
    """The folder of ``split`` under ``root`` as timm finds it (the name itself, else a synonym of the same kind),
    or None when ``root`` has no split folders at all (``root`` is itself a folder of class folders).

    Raises UserError when ``root`` has split folders but none for ``split``: never another split's images
    under this one's name.
    """
    root = Path(root)
    name = split.split('[')[0]
    if name and (root / name).is_dir():
        return root / name
    kind = TRAIN_NAMES if name in TRAIN_NAMES else EVAL_NAMES if name in EVAL_NAMES else ()
    for synonym in kind:
        if (root / synonym).is_dir():
            return root / synonym
    present = split_folders(root)
    if present:
        raise UserError(f'no split {split!r} in {root}: it has {", ".join(present)} (choose one of them)')
    return None
