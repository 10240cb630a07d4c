"""A Python environment in which ``import torch`` fails: for proving that the torch-free modules stay torch-free."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict

BLOCK_TORCH = '''
import importlib.abc, sys
class _NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == 'torch' or name.startswith('torch.'):
            raise ImportError('torch is blocked in this test')
        return None
sys.meta_path.insert(0, _NoTorch())
'''


def env_without_torch(tmp_path: Path) -> Dict[str, str]:
    """Environment variables whose sitecustomize blocks torch (checked here to work)."""
    block = tmp_path / 'block'
    block.mkdir(exist_ok=True)
    (block / 'sitecustomize.py').write_text(textwrap.dedent(BLOCK_TORCH))
    env = {**os.environ, 'PYTHONPATH': str(block), 'MPLBACKEND': 'Agg'}
    probe = subprocess.run([sys.executable, '-c', 'import torch'], env=env, capture_output=True, text=True)
    assert probe.returncode != 0 and 'blocked' in probe.stderr   # the blocker works
    return env
