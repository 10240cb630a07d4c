"""The kernel tool's outputs on small deterministic inputs, for comparing the code before and after a refactor.

``outputs(folder)`` builds the inputs in ``folder`` (a tower-style ONNX graph with conv2, a Caffe-style one, a
.safetensors state_dict and a training run folder, all from fixed seeds), runs the tool on each with relative
paths (the reports name their inputs) and returns {relative output path: bytes}. tests/data/kernels_reference/
holds what the code of 52326ec wrote (``python tests/kernel_reference.py DIR`` writes it again):
the JSON files themselves and the figures' SHA-256 with the matplotlib version that drew them.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Dict

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from onnx_graphs import caffe_style_graph, colour_kernels, grey_kernels, random_kernels, save, tower_style_graph  # noqa: E402

ARGS = ['--permutations', '500', '--quiet', '--force']
REFERENCE = Path(__file__).resolve().parent / 'data' / 'kernels_reference'
JSON_OUTPUTS = ('tower/report.json', 'caffe/report.json', 'st/report.json', 'run_kernels/report.json',
                'evolution/evolution.json')


def _kernels():
    grey = grey_kernels(16, seed=0, colour=0.3)
    colour = colour_kernels(16, seed=1, luminance=1.0)
    return grey, colour


def _run_folder(root: Path) -> Path:
    folder = root / 'conv1'
    folder.mkdir(parents=True, exist_ok=True)
    grey, colour = _kernels()
    start, end = random_kernels(32, seed=7) * 5, np.concatenate([grey, colour]) * 5
    for e in range(4):
        t = e / 3
        np.save(folder / f'epoch_{e:04d}.npy', ((1 - t) * start + t * end).astype(np.float32))
    (folder / 'towers.json').write_text(json.dumps({'num_towers': 2, 'kernels_per_tower': [16, 16],
                                                    'channel_order': 'RGB'}))
    return root


@contextlib.contextmanager
def _cwd(folder: Path):
    before = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


def outputs(folder: Path) -> Dict[str, bytes]:
    """Build the inputs in ``folder``, run the kernel tool on each, return every output file's bytes."""
    from safetensors.numpy import save_file

    from timm_alexnet_split import kernels as K
    folder = Path(folder)
    grey, colour = _kernels()
    save(tower_style_graph([grey, colour]), folder / 'tower.onnx')
    save(caffe_style_graph(np.concatenate([colour, grey]), 2), folder / 'caffe.onnx')
    save_file({'towers.0.conv1.weight': grey, 'towers.1.conv1.weight': colour}, str(folder / 'st.safetensors'))
    _run_folder(folder / 'run')
    runs = [['tower.onnx', '--out', 'tower'], ['caffe.onnx', '--out', 'caffe', '--bgr', '--sort'],
            ['st.safetensors', '--out', 'st', '--measure', 'plain'], ['run', '--out', 'run_kernels'],
            ['--evolution', 'run', '--out', 'evolution', '--sort']]
    with _cwd(folder):
        for argv in runs:
            rc = K.main(argv + ARGS)
            assert rc == 0, argv
    names = ['tower', 'caffe', 'st', 'run_kernels', 'evolution']
    return {str(p.relative_to(folder)): p.read_bytes() for n in names for p in sorted((folder / n).iterdir())}


def digests(files: Dict[str, bytes]) -> Dict[str, str]:
    """SHA-256 of each file that is not one of the JSON outputs (the figures)."""
    return {k: hashlib.sha256(v).hexdigest() for k, v in sorted(files.items()) if k not in JSON_OUTPUTS}


def write_reference(files: Dict[str, bytes], where: Path = REFERENCE) -> None:
    import matplotlib
    for name in JSON_OUTPUTS:
        (where / name).parent.mkdir(parents=True, exist_ok=True)
        (where / name).write_bytes(files[name])
    (where / 'figures.json').write_text(json.dumps({'matplotlib': matplotlib.__version__, 'numpy': np.__version__,
                                                    'sha256': digests(files)}, indent=1) + '\n')


if __name__ == '__main__':
    import tempfile
    os.environ.setdefault('MPLBACKEND', 'Agg')
    with tempfile.TemporaryDirectory() as tmp:
        write_reference(outputs(Path(tmp)), Path(sys.argv[1]) if len(sys.argv) > 1 else REFERENCE)
