"""Online and post-deploy revisions: what may be applied while the site stays up.

A revision file declares its phase with a module-level `upgrader_phase` (revisions.PHASES):

- "online" (expand): safe while the previous release still runs. `upgrade --online`
  applies these while every node keeps serving; before it does, it records the
  database's revisions as `compatible_heads`, so nodes still on that code keep serving
  on the new schema instead of showing Err3.
- "post-deploy" (contract): only once no node runs older code. The new code works
  without them, so it serves while they are pending; `upgrade --post-deploy` applies
  them once the node registry shows no older node, and clears `compatible_heads`.
- nothing declared: "blocking", today's behaviour: the site waits for the upgrade.

The decision (core/decide.py) and the engine (engine/upgrade.py) both split the pending
revisions here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from upgrader.core.revisions import Revision


@dataclass(frozen=True)
class Split:
    """The pending revisions, by when they may be applied."""

    online: tuple[Revision, ...]  # now, with the site up: online, needing only online ones
    rest: tuple[Revision, ...]  # after those, in apply order
    blocking: tuple[Revision, ...]  # those of the rest that take the site down

    @property
    def serving(self) -> bool:
        """Can the new code serve while these are pending? Only when none blocks."""
        return not self.blocking


def split(pending: Sequence[Revision]) -> Split:
    """`pending` in apply order (RevisionGraph.pending). An online revision that needs a
    pending revision which is not online itself waits for it: it belongs to the rest."""
    waiting = {r.id for r in pending}
    online: list[Revision] = []
    ready: set[str] = set()
    for revision in pending:
        needs = [p for p in revision.requires if p in waiting]
        if revision.phase == "online" and all(p in ready for p in needs):
            online.append(revision)
            ready.add(revision.id)
    rest = tuple(r for r in pending if r.id not in ready)
    return Split(tuple(online), rest, tuple(r for r in rest if r.phase == "blocking"))


def targets(revisions: Sequence[Revision]) -> tuple[str, ...]:
    """The revisions Alembic must be asked to reach so that it applies exactly these:
    those that no other one of them requires."""
    required = {p for r in revisions for p in r.requires}
    return tuple(sorted(r.id for r in revisions if r.id not in required))


def compatible(code_heads: Iterable[str], compatible_heads: Iterable[str]) -> bool:
    """Is code with these heads declared to work on the schema (by the online upgrade
    that recorded `compatible_heads` before it applied newer revisions)?"""
    heads, declared = set(code_heads), set(compatible_heads)
    return bool(heads) and heads <= declared
