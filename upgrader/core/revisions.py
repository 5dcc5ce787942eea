"""The code's Alembic revision graph, read once through Alembic's own API.

`ScriptDirectory` imports every revision file, which is slow; the graph is
copied into plain data here so the diagnosis (run on every cache refresh) only
does set arithmetic on it.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import CodeType
from typing import Any

from alembic.config import Config
from alembic.script import ScriptDirectory

from upgrader.inifile import find_ini


@dataclass(frozen=True)
class Revision:
    id: str
    message: str
    parents: tuple[str, ...]  # down_revision: the revision's history
    position: int  # 0 for a base revision; what it requires always comes first
    path: str | None = None
    dropped: frozenset[str] | None = None  # as `drops`, when known; else read when asked
    requires: tuple[str, ...] = ()  # parents and `depends_on`: applied before it
    branches: frozenset[str] = frozenset()  # branch labels (Alembic hands them down)
    phase: str = "blocking"  # what the file declares: online | post-deploy (PHASES)
    # its upgrade() as Alembic loaded it: the literals it holds, without reading the file
    code: CodeType | None = field(default=None, compare=False, repr=False)

    @property
    def drops(self) -> frozenset[str]:
        """Tables its upgrade() drops, renames or alters: read from the file when first
        asked (of pending revisions only), not for every revision of the chain."""
        return self.dropped if self.dropped is not None else tables_changed(self.path)

    def changes(self, tables: frozenset[str]) -> frozenset[str]:
        """Which of `tables` its upgrade() drops, renames or alters. The file is parsed only
        when its upgrade() holds one of the names as a literal (`drops` finds nothing else):
        parsing every pending revision cost 0.1 ms each, reading each file 15 µs."""
        if self.dropped is None and not self._may_name(tables):
            return frozenset()
        return self.drops & tables

    def _may_name(self, tables: frozenset[str]) -> bool:
        """Whether its upgrade() may name one of `tables`: from the code Alembic loaded,
        else from the file's text."""
        if self.code is not None:
            return not tables.isdisjoint(self._strings)
        return _file_names_any(self.path, tables)

    @functools.cached_property
    def _strings(self) -> frozenset[str]:
        """Its upgrade()'s literals, gathered once: every diagnosis of a long chain asks."""
        return frozenset(_literals(self.code))


@dataclass(frozen=True)
class RevisionGraph:
    revisions: dict[str, Revision] = field(default_factory=dict)
    heads: tuple[str, ...] = ()
    splits: tuple[tuple[str, ...], ...] = ()  # heads that split one branch by accident
    script: Any = field(default=None, compare=False, repr=False)  # Alembic's, reused to migrate

    def known(self, rev: str) -> bool:
        return rev in self.revisions

    def ancestry(self, revs: Iterable[str], *, history: bool = False) -> set[str]:
        """The given known revisions and all they require (with `history`, their
        down_revisions only, as Alembic's version table sees them)."""
        seen: set[str] = set()
        todo = [r for r in revs if r in self.revisions]
        while todo:
            rev = todo.pop()
            if rev not in seen:
                seen.add(rev)
                node = self.revisions[rev]
                todo.extend(node.parents if history else node.requires)
        return seen

    def pending(self, applied_heads: Iterable[str]) -> list[Revision]:
        """What `alembic upgrade heads` applies from the applied heads, in apply order:
        every head of the code, with its dependencies (`depends_on`) and their history."""
        missing = self.ancestry(self.heads) - self.ancestry(applied_heads)
        return sorted((self.revisions[r] for r in missing), key=lambda r: (r.position, r.id))

    def overlapping(self, revs: Iterable[str]) -> list[tuple[str, str]]:
        """Pairs (ancestor, descendant) among revs: a version table must hold heads only.
        A dependency is not an ancestor: Alembic keeps a row for each branch's head."""
        revs = [r for r in revs if r in self.revisions]
        pairs: list[tuple[str, str]] = []
        for r in revs:
            above = self.ancestry(self.revisions[r].parents, history=True)
            pairs.extend((o, r) for o in revs if o != r and o in above)
        return pairs


def find_splits(revisions: dict[str, Revision], heads: Iterable[str]) -> list[tuple[str, ...]]:
    """Heads that are an accidental split of one branch: they share history and no branch
    label tells them apart. Declared branches (labels, separate bases, `depends_on`) are
    ordinary Alembic and are upgraded together with `upgrade heads`."""
    graph = RevisionGraph(revisions)
    by_label: dict[frozenset[str], list[str]] = {}
    for head in heads:
        by_label.setdefault(revisions[head].branches, []).append(head)
    splits: list[tuple[str, ...]] = []
    for group in by_label.values():
        histories = {h: graph.ancestry([h], history=True) for h in group}
        components: list[set[str]] = []
        for head in group:
            joined = [c for c in components if any(histories[head] & histories[o] for o in c)]
            merged = {head}.union(*joined)
            components = [c for c in components if c not in joined] + [merged]
        splits.extend(tuple(sorted(c)) for c in components if len(c) > 1)
    return sorted(splits)


def alembic_config(migrations: Path, ini: Path | None = None) -> Config:
    """A Config for the application's script directory, with its alembic.ini: the one
    named (UPGRADER_ALEMBIC_CONFIG, as Alembic's -c), else the one that configures it."""
    ini = ini or find_ini(migrations)
    cfg = Config(str(ini)) if ini else Config()
    cfg.set_main_option("script_location", str(migrations))
    return cfg


def load_graph(migrations: Path, ini: Path | None = None) -> RevisionGraph:
    """Read the script directory. Raises alembic's CommandError when it is unusable."""
    script = ScriptDirectory.from_config(alembic_config(migrations, ini))
    revisions: dict[str, Revision] = {}
    # walk_revisions() goes from the heads down, dependencies included, so reversed it
    # meets everything a revision requires before the revision itself.
    for s in reversed(list(script.walk_revisions())):
        parents = _parents(s)
        requires = tuple(dict.fromkeys((*parents, *_dependencies(s))))
        depth = 1 + max((revisions[p].position for p in requires if p in revisions), default=-1)
        revisions[s.revision] = Revision(
            s.revision,
            (s.doc or "").strip(),
            parents,
            depth,
            s.path,
            None,
            requires,
            frozenset(s.branch_labels or ()),
            _phase(s),
            getattr(getattr(getattr(s, "module", None), "upgrade", None), "__code__", None),
        )
    heads = tuple(sorted(script.get_heads()))
    splits = tuple(find_splits(revisions, heads))
    return RevisionGraph(revisions, heads, splits, script)


PHASES = ("online", "post-deploy")
"""What a revision may declare with a module-level `upgrader_phase = "online"`: safe to
apply while the previous release still runs (expand: a table, a nullable column); or
`"post-deploy"`: only once no node runs older code (contract: drop, rename, NOT NULL).
Anything else, or nothing, is "blocking": today's behaviour, the site waits for it."""


def _phase(script: Any) -> str:
    value = getattr(getattr(script, "module", None), "upgrader_phase", None)
    return value if value in PHASES else "blocking"


def _dependencies(script: Any) -> tuple[str, ...]:
    """`depends_on`, as revision ids (Alembic resolves branch labels to them)."""
    resolved = getattr(script, "_resolved_dependencies", None)
    if resolved is not None:
        return tuple(resolved)
    deps = getattr(script, "dependencies", None) or ()
    return (deps,) if isinstance(deps, str) else tuple(deps)


def _literals(code: CodeType | None) -> Iterator[str]:
    """The strings a function's code holds, its nested functions' included."""
    for const in code.co_consts if code else ():
        if isinstance(const, str):
            yield const
        elif isinstance(const, CodeType):
            yield from _literals(const)
        elif isinstance(const, tuple | frozenset):  # keyword names, constant tuples
            yield from (c for c in const if isinstance(c, str))


@functools.lru_cache(maxsize=4096)
def _file_names_any(path: str | None, tables: frozenset[str]) -> bool:
    try:
        with open(path or "", encoding="utf-8", errors="replace") as handle:
            source = handle.read()
    except OSError:
        return False  # as tables_changed: Alembic itself reports a file it cannot read
    return any(table in source for table in tables)


# Operations that destroy or reshape a table, and where their table name is.
_TABLE_FIRST = {"drop_table", "rename_table", "batch_alter_table", "drop_column", "alter_column"}
_TABLE_SECOND = {"drop_index", "drop_constraint"}


@functools.lru_cache(maxsize=4096)
def tables_changed(path: str | None) -> frozenset[str]:
    """Tables that a revision file's upgrade() drops, renames or alters, read from its source.

    Autogenerate writes `op.drop_table("upgrader_runs")` when env.py lacks
    upgrader's filter; this finds it without running the migration.
    """
    try:
        with open(path or "", encoding="utf-8") as handle:
            tree = ast.parse(handle.read())
    except (OSError, SyntaxError, ValueError):
        return frozenset()  # a compiled-only or odd file: Alembic itself reports real problems
    upgrade = next(
        (n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "upgrade"), None
    )
    found: set[str] = set()
    for node in ast.walk(upgrade) if upgrade else ():
        if not isinstance(node, ast.Call):
            continue
        func = node.func  # op.drop_table(...), not batch_op.drop_column(...)
        if isinstance(func, ast.Attribute):
            name = func.attr if getattr(func.value, "id", None) == "op" else ""
        else:
            name = getattr(func, "id", "")
        index = 0 if name in _TABLE_FIRST else 1 if name in _TABLE_SECOND else None
        if index is None:
            continue
        args = [k.value for k in node.keywords if k.arg == "table_name"]
        args += node.args[index : index + 1]
        found.update(
            a.value for a in args if isinstance(a, ast.Constant) and isinstance(a.value, str)
        )
    return frozenset(found)


def _parents(script: object) -> tuple[str, ...]:
    down = getattr(script, "down_revision", None)
    if down is None:
        return ()
    return (down,) if isinstance(down, str) else tuple(down)
