"""The code's Alembic revision graph, read once through Alembic's own API.

`ScriptDirectory` imports every revision file, which is slow; the graph is
copied into plain data here so the diagnosis (run on every cache refresh) only
does set arithmetic on it.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory


@dataclass(frozen=True)
class Revision:
    id: str
    message: str
    parents: tuple[str, ...]
    position: int  # 0 for a base revision; parents always come first
    path: str | None = None
    drops: frozenset[str] = frozenset()  # tables its upgrade() drops, renames or alters


@dataclass(frozen=True)
class RevisionGraph:
    revisions: dict[str, Revision] = field(default_factory=dict)
    heads: tuple[str, ...] = ()

    def known(self, rev: str) -> bool:
        return rev in self.revisions

    def ancestry(self, revs: Iterable[str]) -> set[str]:
        """The given known revisions and all their ancestors."""
        seen: set[str] = set()
        todo = [r for r in revs if r in self.revisions]
        while todo:
            rev = todo.pop()
            if rev not in seen:
                seen.add(rev)
                todo.extend(self.revisions[rev].parents)
        return seen

    def pending(self, applied_heads: Iterable[str]) -> list[Revision]:
        """Revisions between the applied heads and the code's heads, in apply order."""
        missing = self.ancestry(self.heads) - self.ancestry(applied_heads)
        return sorted((self.revisions[r] for r in missing), key=lambda r: (r.position, r.id))

    def overlapping(self, revs: Iterable[str]) -> list[tuple[str, str]]:
        """Pairs (ancestor, descendant) among revs: a version table must hold heads only."""
        revs = [r for r in revs if r in self.revisions]
        pairs: list[tuple[str, str]] = []
        for r in revs:
            above = self.ancestry(self.revisions[r].parents)
            pairs.extend((o, r) for o in revs if o != r and o in above)
        return pairs


def alembic_config(migrations: Path) -> Config:
    """A Config for the application's script directory, honouring its alembic.ini if any."""
    ini = alembic_ini(migrations)
    cfg = Config(str(ini)) if ini else Config()
    cfg.set_main_option("script_location", str(migrations))
    return cfg


def alembic_ini(migrations: Path) -> Path | None:
    """The alembic.ini that configures `migrations`: inside it (Flask-Migrate's layout), or
    beside it naming it as its script_location (the layout `alembic init` makes)."""
    inside = migrations / "alembic.ini"
    if inside.is_file():
        return inside
    beside = migrations.parent / "alembic.ini"
    if not beside.is_file():
        return None
    try:
        location = Config(str(beside)).get_main_option("script_location") or ""
    except Exception:  # an alembic.ini that does not parse configures nothing here
        return None
    target = Path(os.path.normpath(beside.parent / location)) if location else None
    return beside if target == Path(os.path.normpath(migrations.resolve())) else None


def load_graph(migrations: Path) -> RevisionGraph:
    """Read the script directory. Raises alembic's CommandError when it is unusable."""
    script = ScriptDirectory.from_config(alembic_config(migrations))
    revisions: dict[str, Revision] = {}
    # walk_revisions() goes from the heads down, so reversed it meets parents first.
    for s in reversed(list(script.walk_revisions())):
        parents = _parents(s)
        depth = 1 + max((revisions[p].position for p in parents if p in revisions), default=-1)
        revisions[s.revision] = Revision(
            s.revision, (s.doc or "").strip(), parents, depth, s.path, tables_changed(s.path)
        )
    return RevisionGraph(revisions, tuple(sorted(script.get_heads())))


# Operations that destroy or reshape a table, and where their table name is.
_TABLE_FIRST = {"drop_table", "rename_table", "batch_alter_table", "drop_column", "alter_column"}
_TABLE_SECOND = {"drop_index", "drop_constraint"}


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
