"""The README as a new user meets it: its commands exist, the fast ones run, every --help explains itself."""
import functools
import re
import subprocess
import sys
from pathlib import Path

import pytest

from timm_alexnet_split.cli import COMMANDS

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / 'README.md').read_text()
CLI = [sys.executable, '-m', 'timm_alexnet_split']


def _blocks(lang: str):
    return re.findall(rf'```{lang}\n(.*?)```', README, flags=re.S)


def _commands():
    """Every `timm-alexnet-split ...` line in the README's bash blocks (comments stripped)."""
    out = []
    for block in _blocks('bash') + _blocks(''):
        for line in block.splitlines():
            line = line.split('#')[0].strip()
            if line.startswith('timm-alexnet-split '):
                out.append(line.split()[1:])
    return out


def _run(args, **kw):
    return subprocess.run(CLI + args, capture_output=True, text=True, cwd=ROOT, timeout=300, **kw)


@functools.lru_cache(maxsize=None)
def _help(name: str) -> str:
    r = _run([name, '--help'])
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_readme_opens_with_the_two_commands():
    first_block = re.search(r'```\n(.*?)```', README, flags=re.S).group(1)
    assert first_block.splitlines()[0].startswith('make demo')
    assert first_block.splitlines()[1].startswith('make test')
    ci = (ROOT / '.ci' / 'run').read_text()
    assert 'make test' in ci
    assert re.search(r'^test: setup\n\t\$\(PY\) -m pytest', (ROOT / 'Makefile').read_text(), flags=re.M)
    assert re.search(r'^demo: setup\n\t\$\(VENV\)/bin/timm-alexnet-split demo', (ROOT / 'Makefile').read_text(), flags=re.M)


def test_readme_commands_exist_and_their_options_are_real():
    cmds = _commands()
    assert len(cmds) >= 8
    for args in cmds:
        name = args[0]
        assert name in COMMANDS, f'README uses unknown subcommand {name!r}'
        for opt in (a for a in args[1:] if a.startswith('--')):
            assert opt.split('=')[0] in _help(name), f'README: {name} has no option {opt}'


@pytest.mark.parametrize('name', sorted(COMMANDS))
def test_every_subcommand_help_says_what_with_an_example(name):
    text = _help(name)
    assert f'timm-alexnet-split {name}' in text
    assert 'example' in text.lower(), f'{name} --help has no example'
    assert len(text.split()) > 30, f'{name} --help says too little'


def test_models_command_prints_the_readme_table():
    r = _run(['models'])
    assert r.returncode == 0, r.stderr
    for line in r.stdout.splitlines()[1:]:
        name, towers, _, params, gmacs = line.split()
        row = re.search(rf'\| {name} \| {towers} \| [^|]+\| ([\d,]+) \| ([\d.]+) G \|', README)
        assert row, f'{name} missing from the README table'
        assert row.group(1) == params and row.group(2) == gmacs


def test_readme_python_snippet_runs():
    code = _blocks('python')[0]
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr


def test_unknown_command_and_no_command_exit_2():
    assert _run(['frobnicate']).returncode == 2
    r = _run([])
    assert r.returncode == 2 and 'commands:' in r.stdout
