"""The repository's scripts/ as modules, for tests of their functions."""
import importlib.util
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent.parent / 'scripts'


def script_module(name: str):
    """scripts/NAME.py imported as a module of that name (not run as __main__)."""
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
