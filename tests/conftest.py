"""Shared fixtures. Disk matters here: CI's machine has little room next to a 5.5 GB PyTorch, so a module's shared
run folders go when its tests are done (pyproject's tmp_path_retention_policy does the same for each test's own)."""
import shutil

import pytest


@pytest.fixture(scope='module')
def module_tmp(tmp_path_factory, request):
    """A folder for one test module's shared fixtures, deleted when the module's last test has run."""
    path = tmp_path_factory.mktemp(request.module.__name__.rsplit('.', 1)[-1])
    yield path
    shutil.rmtree(path, ignore_errors=True)
