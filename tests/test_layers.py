"""The shape of the code, held by tests as the linters hold the rest (docs/architecture.md):
one vocabulary of states, an import graph without a cycle, no import inside a function
but for a heavy or optional dependency (said so on its line), and rooms of a readable size.
`lint-imports` (in .ci/run) holds the layers themselves."""

from __future__ import annotations

import ast
import importlib
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import grimp
import pytest

from upgrader.core.decide import STEPS, Why
from upgrader.core.explain import EXPLAIN
from upgrader.core.states import MEANINGS, State
from upgrader.web.flask import Upgrader

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "upgrader"
SOURCES = sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)
VOCABULARY = PACKAGE / "core" / "states.py"


def tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _states_in(node: ast.AST) -> int:
    elements = getattr(node, "elts", [])
    return sum(
        1
        for e in elements
        if isinstance(e, ast.Attribute) and isinstance(e.value, ast.Name) and e.value.id == "State"
    )


def test_no_list_of_states_outside_the_vocabulary() -> None:
    """What a state means is asked of it (core/states.py), never re-derived from a tuple,
    set or list of states somewhere else: a new state is added in one place."""
    found = []
    for path in SOURCES:
        if path == VOCABULARY:
            continue
        for node in ast.walk(tree(path)):
            if isinstance(node, ast.Tuple | ast.Set | ast.List) and _states_in(node):
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert not found, found


def test_every_state_has_a_meaning_and_every_decision_an_explanation() -> None:
    assert set(MEANINGS) == set(State)
    assert set(EXPLAIN) == set(Why)
    assert STEPS[-1].__name__ == "up_to_date"  # the last step always decides


def test_the_import_graph_has_no_cycle() -> None:
    graph = grimp.build_graph("upgrader")
    modules = sorted(m for m in graph.modules if m.startswith("upgrader"))
    imports = {
        m: [x for x in graph.find_modules_directly_imported_by(m) if x.startswith("upgrader")]
        for m in modules
    }
    assert not list(_cycles(imports))


def _cycles(imports: dict[str, list[str]]) -> Iterator[list[str]]:
    """Tarjan's strongly connected components of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    counter = [0]
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = counter[0]
        counter[0] += 1
        stack.append(module)
        on_stack.add(module)
        for other in imports[module]:
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in on_stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                component.append(other)
                if other == module:
                    break
            if len(component) > 1:
                found.append(component)

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10_000))
    try:
        for module in imports:
            if module not in index:
                visit(module)
    finally:
        sys.setrecursionlimit(limit)
    yield from found


def test_imports_inside_functions_say_why() -> None:
    """An import inside a function only for a heavy or optional dependency, with a
    comment on its line saying which (never to dodge a cycle)."""
    found = []
    for path in SOURCES:
        lines = path.read_text().splitlines()
        for node in ast.walk(tree(path)):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for inner in ast.walk(node):
                if isinstance(inner, ast.Import | ast.ImportFrom):
                    line = lines[inner.lineno - 1]
                    if "# heavy:" not in line and "# optional:" not in line:
                        found.append(f"{path.relative_to(PACKAGE)}:{inner.lineno}: {line.strip()}")
    assert not found, found


def _statements(node: ast.AST) -> int:
    """Statements of a function's body, nested ones counted, nested functions apart."""
    count = 0
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            continue
        if isinstance(child, ast.stmt):
            count += 1
        count += _statements(child)
    return count


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_rooms_of_a_readable_size(path: Path) -> None:
    """No module over 600 lines; no function over 60 statements."""
    assert len(path.read_text().splitlines()) <= 600
    for node in ast.walk(tree(path)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            assert _statements(node) <= 60, f"{node.name}: {_statements(node)} statements"


def _mentioned_in_docs() -> Iterator[tuple[str, str]]:
    """(document, name) for each module path and dotted name the docs show in backticks."""
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = doc.read_text()
        for name in re.findall(r"`(upgrader(?:\.\w+)+)", text):
            yield doc.name, name
        for path in re.findall(
            r"`(?:upgrader/)?((?:core|engine|web|http|support|wizard|console|cli)/[a-z_]+\.py)",
            text,
        ):
            yield doc.name, path


def test_what_the_docs_name_exists() -> None:
    """A module moved or a function renamed leaves no doc pointing at nothing."""
    missing = []
    for doc, name in _mentioned_in_docs():
        if name.endswith(".py"):
            if not (PACKAGE / name).is_file():
                missing.append(f"{doc}: {name}")
            continue
        parts = name.split(".")
        if hasattr(Upgrader, parts[1]):
            continue  # `upgrader.init_app(app)`: the extension, as the docs name it
        for cut in range(len(parts), 0, -1):
            try:
                found: object = importlib.import_module(".".join(parts[:cut]))
            except ImportError:
                continue
            try:
                for attr in parts[cut:]:
                    found = getattr(found, attr)
            except AttributeError:
                missing.append(f"{doc}: {name}")
            break
    assert missing == []
