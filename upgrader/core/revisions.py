"""The code's Alembic revision graph, read once through Alembic's own API.

`ScriptDirectory` imports every revision file, which is slow; the graph is
copied into plain data here so the diagnosis (run on every cache refresh) only
does set arithmetic on it.
"""

from __future__ import annotations

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
    ini = migrations / "alembic.ini"
    cfg = Config(str(ini)) if ini.is_file() else Config()
    cfg.set_main_option("script_location", str(migrations))
    return cfg


def load_graph(migrations: Path) -> RevisionGraph:
    """Read the script directory. Raises alembic's CommandError when it is unusable."""
    script = ScriptDirectory.from_config(alembic_config(migrations))
    revisions: dict[str, Revision] = {}
    # walk_revisions() goes from the heads down, so reversed it meets parents first.
    for s in reversed(list(script.walk_revisions())):
        parents = _parents(s)
        depth = 1 + max((revisions[p].position for p in parents if p in revisions), default=-1)
        revisions[s.revision] = Revision(s.revision, (s.doc or "").strip(), parents, depth)
    return RevisionGraph(revisions, tuple(sorted(script.get_heads())))


def _parents(script: object) -> tuple[str, ...]:
    down = getattr(script, "down_revision", None)
    if down is None:
        return ()
    return (down,) if isinstance(down, str) else tuple(down)
