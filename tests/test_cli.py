"""The `timm-alexnet-split` command itself: its entry point, --version, and torch-free start of the kernel tool."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points

import numpy as np
import pytest

import timm_alexnet_split
from timm_alexnet_split.cli import COMMANDS

BLOCK_TORCH = '''
import importlib.abc, sys
class _NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'timm', 'torchvision'):
            raise ModuleNotFoundError(name + ' is blocked in this test', name=name)
        return None
sys.meta_path.insert(0, _NoTorch())
'''
# what the installed console script runs
ENTRY = 'import sys, timm_alexnet_split_cli as c; sys.exit(c.main())'


def _without_torch(tmp_path):
    block = tmp_path / 'block'
    block.mkdir(exist_ok=True)
    (block / 'sitecustomize.py').write_text(textwrap.dedent(BLOCK_TORCH))
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(block), *filter(None, [os.environ.get('PYTHONPATH')])]),
           'MPLBACKEND': 'Agg'}
    probe = subprocess.run([sys.executable, '-c', 'import torch'], env=env, capture_output=True, text=True)
    assert probe.returncode != 0 and 'blocked' in probe.stderr  # the blocker works
    return env


def _run(args, env, cwd):
    return subprocess.run([sys.executable, '-c', ENTRY, *args], env=env, capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def test_the_console_script_enters_outside_the_package():
    scripts = [e for e in entry_points(group='console_scripts') if e.name == 'timm-alexnet-split']
    assert [e.value for e in scripts] == ['timm_alexnet_split_cli:main']


def test_version_is_the_package_version(tmp_path):
    done = _run(['--version'], _without_torch(tmp_path), tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f'timm-alexnet-split {timm_alexnet_split.__version__}'


def test_kernels_runs_through_the_cli_without_torch(tmp_path):
    from safetensors.numpy import save_file
    rng = np.random.default_rng(0)
    grey = np.repeat(rng.normal(size=(16, 1, 11, 11)), 3, axis=1).astype(np.float32)
    colour = rng.normal(size=(16, 3, 11, 11)).astype(np.float32)
    colour -= colour.mean(axis=1, keepdims=True)  # no luminance part: chromatic fraction 1
    save_file({'towers.0.conv1.weight': grey, 'towers.1.conv1.weight': colour}, str(tmp_path / 'w.safetensors'))
    env = _without_torch(tmp_path)
    done = _run(['kernels', str(tmp_path / 'w.safetensors'), '--out', str(tmp_path / 'out'), '--permutations', '2000'],
                env, tmp_path)
    assert done.returncode == 0, done.stderr
    assert 'verdict: towers differ in colour' in done.stdout and 'tower 1 colour-specific' in done.stdout
    assert (tmp_path / 'out' / 'report.json').is_file()
    bad = _run(['kernels', str(tmp_path / 'nothere.onnx')], env, tmp_path)
    assert bad.returncode == 2 and bad.stderr.count('\n') == 1 and 'Traceback' not in bad.stderr


def test_a_torch_command_without_torch_says_so_in_one_line(tmp_path):
    # the torch-free path must not hide what a torch command needs
    done = _run(['models'], _without_torch(tmp_path), tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith('timm-alexnet-split models: error: cannot import torch') and 'blocked' in done.stderr
    assert done.stderr.count('\n') == 1, done.stderr


def test_every_command_is_listed_in_help(tmp_path):
    done = _run(['--help'], _without_torch(tmp_path), tmp_path)
    assert done.returncode == 0
    for name in COMMANDS:
        assert name in done.stdout


def _config_error(argv, capsys):
    from timm_alexnet_split import cli
    code = cli.main(argv)
    return code, capsys.readouterr().err


def test_a_user_error_is_one_line_and_debug_adds_the_traceback(tmp_path, capsys, monkeypatch):
    missing = str(tmp_path / 'missing.yaml')
    monkeypatch.delenv('TIMM_ALEXNET_SPLIT_DEBUG', raising=False)
    code, err = _config_error(['train', '--config', missing], capsys)
    assert code == 2 and err == f'timm-alexnet-split train: error: config file {missing} not found\n'
    code, err = _config_error(['--debug', 'train', '--config', missing], capsys)
    assert code == 2 and err.startswith('Traceback (most recent call last):') and 'UserError' in err
    assert err.endswith(f'timm-alexnet-split train: error: config file {missing} not found\n')
    monkeypatch.setenv('TIMM_ALEXNET_SPLIT_DEBUG', '1')
    code, err = _config_error(['train', '--config', missing], capsys)
    assert code == 2 and err.startswith('Traceback') and 'load_config' in err
    monkeypatch.setenv('TIMM_ALEXNET_SPLIT_DEBUG', '0')
    code, err = _config_error(['train', '--config', missing], capsys)
    assert code == 2 and 'Traceback' not in err


@pytest.mark.parametrize('name', list(COMMANDS))
def test_an_unknown_option_is_one_line_for_every_command(name, capsys, monkeypatch):
    """argparse's own errors (here an unknown option) are one line naming the command's --help, not its usage block."""
    monkeypatch.delenv('TIMM_ALEXNET_SPLIT_DEBUG', raising=False)
    code, err = _config_error([name, '--no-such-option'], capsys)
    assert code == 2 and err.count('\n') == 1, err
    assert err.startswith(f'timm-alexnet-split {name}: error: ') and f'timm-alexnet-split {name} --help' in err
    assert 'usage:' not in err


@pytest.mark.parametrize('argv, says', [
    (['sweep', '--recipe', 'r.yaml', '--towers', 'x'], "argument --towers: invalid int value: 'x'"),
    (['train', '--epochs', 'x'], "argument --epochs: invalid int value: 'x'"),
    (['train', '--config'], 'argument -c/--config: expected one argument'),
    (['models', '--img-size', '1.5'], "argument --img-size: invalid int value: '1.5'"),
    (['pca-stats'], 'the following arguments are required'),
    (['train', '--model-kwargs', 'init=caffe', 'foo'], "argument --model-kwargs: expected KEY=VALUE words, got 'foo'"),
    (['validate', '--checkpoint', 'x', '--model-kwargs', 'a'], "expected KEY=VALUE words, got 'a'"),
])
def test_a_bad_value_or_a_missing_argument_is_one_line(argv, says, capsys, monkeypatch):
    monkeypatch.delenv('TIMM_ALEXNET_SPLIT_DEBUG', raising=False)
    code, err = _config_error(argv, capsys)
    assert code == 2 and err.count('\n') == 1 and 'usage:' not in err, err
    assert err.startswith(f'timm-alexnet-split {argv[0]}: error: ')
    if says:
        assert says in err


def test_debug_before_the_kernel_tool_keeps_it_torch_free(tmp_path):
    done = _run(['--debug', 'kernels', '--help'], _without_torch(tmp_path), tmp_path)
    assert done.returncode == 0 and 'usage' in done.stdout, done.stderr


def test_the_kernel_tools_error_is_a_user_error():
    from timm_alexnet_split.errors import KernelsError, UserError
    assert issubclass(KernelsError, UserError)


def test_debug_shows_the_kernel_tools_traceback_too(tmp_path, capsys, monkeypatch):
    from timm_alexnet_split import cli
    monkeypatch.delenv('TIMM_ALEXNET_SPLIT_DEBUG', raising=False)
    missing = str(tmp_path / 'nothere.onnx')
    assert cli.main(['kernels', missing]) == 2
    assert 'Traceback' not in capsys.readouterr().err
    assert cli.main(['--debug', 'kernels', missing]) == 2
    err = capsys.readouterr().err
    assert err.startswith('Traceback') and err.rstrip().splitlines()[-1].startswith('timm-alexnet-split kernels: error:')
    assert 'TIMM_ALEXNET_SPLIT_DEBUG' not in __import__('os').environ  # only while the command ran


def test_validate_with_a_device_torch_does_not_know_is_one_line(capsys):
    from timm_alexnet_split.cli import main as cli_main
    assert cli_main(['validate', '--checkpoint', 'nothere.pth', '--device', 'nosuchdev']) == 2
    err = capsys.readouterr().err
    assert err.startswith('timm-alexnet-split validate: error: --device nosuchdev: ') and err.count('\n') == 1


def test_a_crop_pct_not_above_0_and_a_validation_batch_of_0_are_refused(capsys, tmp_path):
    from timm_alexnet_split.cli import main as cli_main
    for argv, says in ((['train', '--demo-data', '--crop-pct', '0'], '--crop-pct must be > 0, got 0.0'),
                       (['train', '--demo-data', '-vb', '0'], '--validation-batch-size must be >= 1, got 0'),
                       (['validate', '--checkpoint', 'x.pth', '--crop-pct', '-1'], '--crop-pct must be > 0')):
        assert cli_main([*argv, '--output', str(tmp_path)] if argv[0] == 'train' else argv) == 2, argv
        assert says in capsys.readouterr().err, argv
    assert list(tmp_path.iterdir()) == []
    (tmp_path / 'images.txt').write_text('x')
    assert cli_main(['pca-stats', str(tmp_path / 'images.txt'), '-o', str(tmp_path / 'eig.json')]) == 2
    assert 'is a file, not a folder' in capsys.readouterr().err
