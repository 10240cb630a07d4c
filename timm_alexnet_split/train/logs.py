"""The trainer's log: stderr now, RUN/log.txt once the run folder exists; timm's own skip warnings silenced."""
from __future__ import annotations

import contextlib
import logging
import logging.handlers
import sys
from pathlib import Path
from typing import Callable, Iterator, List

from tqdm.contrib.logging import logging_redirect_tqdm

from .. import run_files as RF

_logger = logging.getLogger('timm_alexnet_split.train')


@contextlib.contextmanager
def logging_to() -> Iterator[Callable[[Path], None]]:
    """Log lines to stderr now, and to RUN/log.txt once the run folder exists; undone on exit."""
    handlers: List[logging.Handler] = []
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(logging.Formatter('%(message)s'))
    handlers.append(stream)
    old_level, old_prop = _logger.level, _logger.propagate
    _logger.setLevel(logging.INFO)
    _logger.propagate = False
    _logger.addHandler(stream)
    early = logging.handlers.MemoryHandler(capacity=1 << 16, flushLevel=logging.CRITICAL + 1)
    handlers.append(early)  # lines logged before the run folder exists, for log.txt
    _logger.addHandler(early)

    def attach(run_dir: Path) -> None:
        fh = logging.FileHandler(run_dir / RF.LOG, encoding='utf-8')
        fh.setFormatter(logging.Formatter('%(asctime)s %(message)s', '%Y-%m-%d %H:%M:%S'))
        handlers.append(fh)
        early.setTarget(fh)
        early.flush()
        _logger.removeHandler(early)
        _logger.addHandler(fh)

    try:
        with quiet_timm_skips(), logging_redirect_tqdm([_logger]) if sys.stderr.isatty() else contextlib.nullcontext():
            yield attach
    finally:
        for h in handlers:
            _logger.removeHandler(h)
            h.close()
        _logger.setLevel(old_level)
        _logger.propagate = old_prop


@contextlib.contextmanager
def quiet_timm_skips() -> Iterator[None]:
    """Silence timm's own "Skipped sample" warnings: SkipUnreadable records and reports skips itself."""
    timm_ds = logging.getLogger('timm.data.dataset')
    old = timm_ds.level
    timm_ds.setLevel(logging.ERROR)
    try:
        yield
    finally:
        timm_ds.setLevel(old)
