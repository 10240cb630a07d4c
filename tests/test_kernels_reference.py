"""The kernel tool writes, byte for byte, what the code of 52326ec wrote on the same deterministic inputs
(tests/kernel_reference.py builds them): the reports and evolution.json as files, the figures by SHA-256 where the
matplotlib and numpy that drew the reference are the ones installed."""
from __future__ import annotations

import json

import matplotlib
import numpy as np
import pytest
from kernel_reference import JSON_OUTPUTS, REFERENCE, digests, outputs


@pytest.fixture(scope='module')
def written(module_tmp):
    return outputs(module_tmp)


@pytest.mark.parametrize('name', JSON_OUTPUTS)
def test_reports_are_byte_identical_to_the_reference(written, name):
    assert written[name] == (REFERENCE / name).read_bytes()


def test_figures_are_byte_identical_to_the_reference(written):
    ref = json.loads((REFERENCE / 'figures.json').read_text())
    if (ref['matplotlib'], ref['numpy']) != (matplotlib.__version__, np.__version__):
        pytest.skip(f'the reference figures were drawn by matplotlib {ref["matplotlib"]}, numpy {ref["numpy"]}')
    assert digests(written) == ref['sha256']
