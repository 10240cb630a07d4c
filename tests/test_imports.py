"""No import circle among the package's modules: every module's imports, read with ast (those inside functions
and under TYPE_CHECKING too, since a circle made inside a function is a circle all the same), form a graph without
cycles, except the circles in KNOWN_CIRCLES, which are waiting for their modules' owners to break them."""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, FrozenSet, List, Set

import timm_alexnet_split

PACKAGE = 'timm_alexnet_split'
ROOT = Path(timm_alexnet_split.__file__).resolve().parent

# Circles waiting to be broken (none now): a new one fails the test, and so does one listed here that is gone.
KNOWN_CIRCLES: Set[FrozenSet[str]] = set()


def _modules() -> Dict[str, Path]:
    """Dotted name (without the package prefix; '' for the package's __init__) -> file."""
    out = {}
    for path in sorted(ROOT.rglob('*.py')):
        parts = list(path.relative_to(ROOT).with_suffix('').parts)
        if parts[-1] == '__init__':
            parts = parts[:-1]
        out['.'.join(parts)] = path
    return out


def _absolute(node: ast.ImportFrom, name: str, path: Path) -> str:
    """The dotted module an ``ImportFrom`` in ``name`` (file ``path``) reads from, package prefix included."""
    if node.level == 0:
        return node.module or ''
    here = [PACKAGE] + (name.split('.') if name else [])
    base = here if path.name == '__init__.py' else here[:-1]
    base = base[:len(base) - (node.level - 1)]
    return '.'.join(base + ([node.module] if node.module else []))


def _imports(name: str, path: Path, modules: Dict[str, Path]) -> Set[str]:
    """The package's modules that ``name`` imports anywhere in its file (``from pkg import sub``: the submodule)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, name, path)
            targets = [f'{base}.{a.name}' if f'{base}.{a.name}'[len(PACKAGE) + 1:] in modules else base
                       for a in node.names]
        else:
            continue
        for t in targets:
            if t == PACKAGE or t.startswith(PACKAGE + '.'):
                short = t[len(PACKAGE) + 1:]
                if short in modules and short != name:
                    found.add(short)
    return found


def import_graph() -> Dict[str, Set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def circles(graph: Dict[str, Set[str]]) -> List[FrozenSet[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[FrozenSet[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            v, edges = work[-1]
            w = next(edges, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = set()
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.add(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    found.append(frozenset(comp))
    return found


def test_the_reader_sees_imports_inside_functions():
    graph = import_graph()
    assert 'kernels' in graph['demo']            # demo imports the kernel tool inside a function
    assert 'train.stops' in graph['train.loop'] and 'onnx_graph' in graph['kernels.readers']


def test_the_finder_finds_a_circle():
    assert circles({'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}}) == [frozenset('abc')]
    assert circles({'a': {'b'}, 'b': set()}) == []


def test_no_new_import_circle():
    found = set(circles(import_graph()))
    new = sorted(sorted(c) for c in found - KNOWN_CIRCLES)
    assert not new, f'import circles: {new}; move what both modules need into a module below them'


def test_known_circles_are_still_there():
    """A circle that is gone leaves KNOWN_CIRCLES, so that it cannot come back unnoticed."""
    gone = sorted(sorted(c) for c in KNOWN_CIRCLES - set(circles(import_graph())))
    assert not gone, f'no longer circles, remove them from KNOWN_CIRCLES: {gone}'
