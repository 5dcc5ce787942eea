"""Deciding the state: a short sequence of named steps over the facts, in the order that is
the spec (docs/architecture.md). Pure, and without prose: a step returns a `Finding`
(the state and the typed facts behind it) or None to let the next one look; the words
are core/explain.py's.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
from collections.abc import Callable
from dataclasses import dataclass, replace

from upgrader.core import phases, processes
from upgrader.core.facts import CodeFacts, DatabaseFacts
from upgrader.core.records import Run, StateRow, split_revisions
from upgrader.core.revisions import Revision, RevisionGraph
from upgrader.core.states import State
from upgrader.core.versions import ParsedVersion, compare, parse_version

LEFTOVER = "_alembic_tmp_"
"""The prefix of the copies Alembic's batch mode makes (SQLite's move-and-copy)."""


class Why(str, enum.Enum):
    """Which step decided, and so which explanation applies."""

    UNREACHABLE = "unreachable"
    BUSY = "busy"  # SQLite, locked by the running upgrade
    CODE_UNREADABLE = "code_unreadable"
    NO_REVISIONS = "no_revisions"
    SPLIT = "split"
    BAD_CODE_VERSION = "bad_code_version"
    TABLES_UNREADABLE = "tables_unreadable"
    RUNNING = "running"
    MISSING_FILE = "missing_file"
    FOREIGN_TABLES = "foreign_tables"
    EMPTY = "empty"
    OVERLAPPING = "overlapping"
    HARMFUL = "harmful"
    CUT_OFF = "cut_off"  # an upgrade killed or failed after it began migrating
    UNADOPTED_UNKNOWN = "unadopted_unknown"
    UNADOPTED_PENDING = "unadopted_pending"
    UNADOPTED = "unadopted"
    SEVERAL_ROWS = "several_rows"
    BAD_STORED_VERSION = "bad_stored_version"
    NO_VERSION_TABLE = "no_version_table"
    UPGRADE_STOP = "upgrade_stop"
    COMPATIBLE = "compatible"
    NEWER_REVISIONS = "newer_revisions"
    UNKNOWN_REVISIONS = "unknown_revisions"
    NEWER_VERSION = "newer_version"
    CONTRADICTION = "contradiction"
    ONLINE = "online"
    POST_DEPLOY = "post_deploy"
    PENDING = "pending"
    UP_TO_DATE = "up_to_date"


@dataclass(frozen=True)
class Attempt:
    """An upgrade that was killed or failed after it began migrating, as the facts show it.
    Where the cut fell decides the way back: PostgreSQL rolls a cut-off revision back; on
    MariaDB/MySQL and SQLite it may be half done, and the clean backup (the one taken
    before this upgrade's first attempt, not a rerun's) is the way back."""

    run: Run
    cut: str | None  # the revision that was running
    clean: str | None  # the backup of this upgrade's first attempt
    partial_possible: bool  # the database may keep half of a revision
    leftovers: tuple[str, ...]  # copies a batch migration left
    repairable: tuple[str, ...]  # those whose original is intact
    committed: int | None  # steps the database holds, when fewer than the run finished


@dataclass(frozen=True)
class Stall:
    """A run that holds the lock and does nothing (stopped) or says nothing (silent)."""

    pid: int | None
    host: str | None
    kind: str  # stopped | silent (another host, or the lease expired) | slow (it runs)
    seconds: int = 0  # since its last heartbeat


@dataclass(frozen=True)
class Finding:
    """The decision: a state, which step decided it, and what the explanation needs."""

    state: State
    why: Why
    beneath: State | None = None  # MAINTENANCE over a state in which the site would serve
    unknown: tuple[str, ...] = ()  # the database's revisions this code does not have
    overlapping: tuple[tuple[str, str], ...] = ()
    harmful: tuple[Revision, ...] = ()
    attempt: Attempt | None = None
    split: phases.Split | None = None
    phased_run: Run | None = None  # a live online or post-deploy run
    stall: Stall | None = None
    stopped_early: Run | None = None  # the last attempt changed nothing
    floor: ParsedVersion | None = None  # an upgrade stop: the oldest release it upgrades
    dropped: tuple[str, ...] = ()  # an upgrade stop: releases whose revisions left the chain
    version_to_record: str | None = None  # a release without migrations
    outside_change: tuple[str, str] | None = None  # revisions moved without upgrader
    never_closed: Run | None = None  # a run the journal leaves open, on a database in sync


@dataclass(frozen=True)
class Context:
    """The facts, and what follows from them directly."""

    code: CodeFacts
    db: DatabaseFacts
    now: dt.datetime
    graph: RevisionGraph
    single: StateRow | None  # the state row, when there is exactly one
    stored: ParsedVersion | None  # its version
    pending: tuple[Revision, ...]  # what `alembic upgrade heads` would apply
    unknown: tuple[str, ...]
    run: Run | None  # the journal's last run
    alive: bool  # the last run is open and its process lives
    phased_run: Run | None  # …and it is an online or post-deploy run (the site stays up)

    @classmethod
    def of(cls, code: CodeFacts, db: DatabaseFacts, now: dt.datetime) -> Context:
        graph = code.graph or RevisionGraph()
        single = db.states[0] if len(db.states) == 1 else None
        unknown = tuple(r for r in db.revisions if not graph.known(r))
        pending = tuple(graph.pending(db.revisions)) if not unknown and code.graph else ()
        run = _caught_up(db.last_run, graph, db, pending) if pending else db.last_run
        alive = run is not None and run.status == "running" and _alive(run, db, now)
        return cls(
            code=code,
            db=db,
            now=now,
            graph=graph,
            single=single,
            stored=parse_version(single.schema_version) if single else None,
            pending=pending,
            unknown=unknown,
            run=run,
            alive=alive,
            phased_run=run if alive and run is not None and run.phase else None,
        )

    @functools.cached_property
    def ordering(self) -> int:
        """The stored version against the code's: -1, 0 or 1 (both are valid by then)."""
        assert self.stored is not None
        return compare(self.stored, self.code.version) or 0


def _caught_up(
    run: Run | None, graph: RevisionGraph, db: DatabaseFacts, pending: tuple[Revision, ...]
) -> Run | None:
    """An open upgrade run at the step the database shows. The journal writes its
    progress at most every half second (engine/steps.py); the version table commits with
    every revision. Step k runs once k - 1 of the run's revisions are committed, and it is
    the next one pending (the first by the graph's order, where branches leave a choice).
    A run of part of the pending revisions (`upgrade --online`) is left as it says."""
    if run is None or run.status != "running" or run.kind not in ("install", "upgrade"):
        return run
    done = None if run.phase else _holds(run, graph, db)
    if done is None or done < run.step or done >= run.steps:
        return run  # the journal is as far (or the run is finishing: it says so itself)
    return replace(run, step=done + 1, revision=pending[0].id, message=pending[0].message)


def _alive(run: Run, db: DatabaseFacts, now: dt.datetime) -> bool:
    """The OS lock knows exactly (SQLite, one host; servers' locks where they may be
    asked); elsewhere the lease, renewed by a heartbeat, says so."""
    return db.lock_held if db.lock_held is not None else run.lease_live(now)


Step = Callable[[Context], "Finding | None"]


def find(code: CodeFacts, db: DatabaseFacts, now: dt.datetime) -> Finding:
    """Decide the state. Pure: the same facts always give the same finding."""
    return find_in(Context.of(code, db, now))


def find_in(context: Context) -> Finding:
    """Decide the state from facts already put in context (explain() reads the same)."""
    for step in STEPS:
        found = step(context)
        if found is not None:
            return found
    raise AssertionError("the last step always decides")  # pragma: no cover


# ------------------------------------------------------------------ the steps, in order


def unreachable(c: Context) -> Finding | None:
    """Nothing can be said without the database."""
    return None if c.db.reachable else Finding(State.DATABASE_UNAVAILABLE, Why.UNREACHABLE)


def busy(c: Context) -> Finding | None:
    """SQLite lets nobody read while the running upgrade writes: that is the answer."""
    if not c.db.busy:
        return None
    pid, host = c.db.holder or (None, None)
    stall = Stall(pid, host, "stopped") if c.db.process == processes.STOPPED else None
    return Finding(State.UPGRADE_RUNNING, Why.BUSY, stall=stall)


def unusable_code(c: Context) -> Finding | None:
    """Code that cannot be compared with anything."""
    code = c.code
    if code.error:
        return Finding(State.SCHEMA_UNKNOWN, Why.CODE_UNREADABLE)
    if code.graph is not None and not code.graph.revisions:
        return Finding(State.SCHEMA_UNKNOWN, Why.NO_REVISIONS)
    if code.graph is not None and code.graph.splits:
        return Finding(State.SCHEMA_UNKNOWN, Why.SPLIT)
    if not code.version.valid:
        return Finding(State.SCHEMA_UNKNOWN, Why.BAD_CODE_VERSION)
    return None


def unreadable_tables(c: Context) -> Finding | None:
    return Finding(State.SCHEMA_UNKNOWN, Why.TABLES_UNREADABLE) if c.db.unreadable else None


def live_run(c: Context) -> Finding | None:
    """A live install or upgrade by any node. The revisions are in flux, and other nodes
    (still on old code) see revisions they do not know: "running" is the truth. Except for
    `upgrade --online` / `--post-deploy`: what they apply was declared safe for the code
    that serves, which goes on serving (the phased states below say it runs)."""
    run = c.run
    if run is None or not c.alive or c.phased_run is not None:
        return None
    return Finding(State.UPGRADE_RUNNING, Why.RUNNING, stall=_stall(run, c))


def _stall(run: Run, c: Context) -> Stall | None:
    db = c.db
    if db.process == processes.STOPPED:
        return Stall(run.pid, run.host, "stopped")
    if db.dialect == "sqlite" or run.lease_live(c.now) or not db.lock_held:
        return None
    seconds = int((c.now - (run.heartbeat_at or run.started_at)).total_seconds())
    kind = "slow" if db.process == processes.RUNNING else "silent"
    return Stall(run.pid, run.host, kind, seconds)


def not_installed(c: Context) -> Finding | None:
    """Never installed: a database file that is not there (a first installation, or a
    volume that is not mounted: nothing here can tell them apart), tables that no
    migration recorded, or nothing at all."""
    db = c.db
    if db.missing_file:
        return Finding(State.NOT_INSTALLED, Why.MISSING_FILE)
    if db.states or db.revisions:
        return None
    if any(t != "alembic_version" for t in db.tables):
        return Finding(State.NOT_INSTALLED, Why.FOREIGN_TABLES)
    return Finding(State.NOT_INSTALLED, Why.EMPTY)


def overlapping(c: Context) -> Finding | None:
    pairs = tuple(c.graph.overlapping(c.db.revisions))
    return Finding(State.SCHEMA_UNKNOWN, Why.OVERLAPPING, overlapping=pairs) if pairs else None


def harmful(c: Context) -> Finding | None:
    """Pending revisions that would drop upgrader's own tables (autogenerate without its
    filter): upgrading with them would delete the state and the journal."""
    found = tuple(r for r in c.pending if r.changes(c.code.guard_tables))
    return Finding(State.SCHEMA_UNKNOWN, Why.HARMFUL, harmful=found) if found else None


def unadopted(c: Context) -> Finding | None:
    """Alembic manages this database, and upgrader has never recorded it."""
    if c.single is not None or c.db.states:
        return None
    attempt = _attempt(c)
    if attempt is not None:  # an adopting run that was killed or failed is just that
        return attempt
    if c.unknown:
        return Finding(State.SCHEMA_UNKNOWN, Why.UNADOPTED_UNKNOWN, unknown=c.unknown)
    if c.pending:
        return Finding(
            State.UPGRADE_PENDING, Why.UNADOPTED_PENDING, stopped_early=_stopped_early(c.run)
        )
    return Finding(State.UPGRADE_PENDING, Why.UNADOPTED)


def untrusted_state(c: Context) -> Finding | None:
    """A state row that cannot be trusted: several, an unreadable version, or a version
    without the Alembic revisions it stands for."""
    if c.single is None:
        return Finding(State.SCHEMA_UNKNOWN, Why.SEVERAL_ROWS)
    assert c.stored is not None
    if not c.stored.valid:
        return Finding(State.SCHEMA_UNKNOWN, Why.BAD_STORED_VERSION)
    if not c.db.revisions and c.graph.revisions:
        return Finding(State.SCHEMA_UNKNOWN, Why.NO_VERSION_TABLE)
    return None


def upgrade_stop(c: Context) -> Finding | None:
    """This release cannot upgrade the database: it is older than the release the code
    declares it upgrades from, or it holds the revisions of a release (UPGRADER_RELEASES)
    that the code's chain no longer has (a squash)."""
    code, stored = c.code, c.stored
    assert stored is not None
    floor = parse_version(code.upgrade_from) if code.upgrade_from else None
    below = floor is not None and (compare(stored, floor) or 0) < 0
    dropped = tuple(
        sorted(
            version
            for version, revision in code.releases.items()
            if revision in c.unknown and (compare(parse_version(version), code.version) or 0) < 0
        )
    )
    if not below and not dropped:
        return None
    return Finding(
        State.DATABASE_TOO_OLD,
        Why.UPGRADE_STOP,
        unknown=c.unknown,
        floor=floor if below else None,
        dropped=dropped,
    )


def compatible_ahead(c: Context) -> Finding | None:
    """Old code on a schema that an online upgrade declared compatible with it: it serves."""
    assert c.single is not None
    if not c.unknown or not phases.compatible(c.code.heads, c.single.compatible_heads):
        return None
    found = Finding(
        State.COMPATIBLE_AHEAD, Why.COMPATIBLE, unknown=c.unknown, phased_run=c.phased_run
    )
    return _unless_maintenance(c, found)


def unknown_revisions(c: Context) -> Finding | None:
    """Revisions this code does not have: a newer release's, or nobody's it knows."""
    if not c.unknown:
        return None
    if c.ordering > 0:
        return Finding(State.DATABASE_AHEAD, Why.NEWER_REVISIONS, unknown=c.unknown)
    return Finding(State.SCHEMA_UNKNOWN, Why.UNKNOWN_REVISIONS, unknown=c.unknown)


def newer_version(c: Context) -> Finding | None:
    """A stored version newer than the code's, with no revision it does not know."""
    if c.ordering <= 0:
        return None
    if not c.pending:
        return Finding(State.DATABASE_AHEAD, Why.NEWER_VERSION)
    return Finding(State.SCHEMA_UNKNOWN, Why.CONTRADICTION)


def cut_off(c: Context) -> Finding | None:
    """An upgrade that was killed or failed, unless the database matches the code anyway."""
    in_sync = not c.pending and c.ordering == 0
    return None if in_sync else _attempt(c)


def phased(c: Context) -> Finding | None:
    """Pending revisions of which none blocks (core/phases.py): the site keeps serving.
    Online ones can be applied now; post-deploy ones once no node runs older code."""
    if not c.pending:
        return None
    split = phases.split(c.pending)
    if not split.serving:
        return None
    if split.online:
        found = Finding(State.ONLINE_PENDING, Why.ONLINE, split=split, phased_run=c.phased_run)
    else:
        found = Finding(
            State.POST_DEPLOY_PENDING, Why.POST_DEPLOY, split=split, phased_run=c.phased_run
        )
    return _unless_maintenance(c, found)


def pending(c: Context) -> Finding | None:
    if not c.pending:
        return None
    return Finding(State.UPGRADE_PENDING, Why.PENDING, stopped_early=_stopped_early(c.run))


def up_to_date(c: Context) -> Finding:
    """The database matches the code: ok, or maintenance. A newer code version with no
    pending revision is a release without migrations, to be recorded (a phased run that
    has migrated but not closed yet records the version itself)."""
    run = c.run
    never_closed = run if run is not None and run.status == "running" and not c.phased_run else None
    newer = c.ordering < 0 and c.phased_run is None
    found = Finding(
        State.OK,
        Why.UP_TO_DATE,
        version_to_record=c.code.version.raw if newer else None,
        outside_change=_outside_change(run, c.db.revisions),
        never_closed=never_closed,
    )
    return _unless_maintenance(c, found)


STEPS: tuple[Step, ...] = (
    unreachable,
    busy,
    unusable_code,
    unreadable_tables,
    live_run,
    not_installed,
    overlapping,
    harmful,
    unadopted,
    untrusted_state,
    upgrade_stop,
    compatible_ahead,
    unknown_revisions,
    newer_version,
    cut_off,
    phased,
    pending,
    up_to_date,
)
"""The order is the spec: docs/architecture.md lists it."""


# ------------------------------------------------------------------------- helpers


def _unless_maintenance(c: Context, found: Finding) -> Finding:
    """A state in which the site would serve, unless an administrator switched
    maintenance on (block level, within its window): then it is maintenance."""
    assert c.single is not None
    m = c.single.maintenance
    if m.active(c.now) and m.mode == "block":
        return replace(found, state=State.MAINTENANCE, beneath=found.state)
    return found


def _attempt(c: Context) -> Finding | None:
    """An upgrade that was killed, failed, or was closed by `unlock`, after it began
    migrating. None when there is none (or it stopped before changing anything)."""
    run, db = c.run, c.db
    if run is None or run.kind != "upgrade":
        return None
    if run.status not in ("running", "interrupted", "failed", "aborted"):
        return None
    if run.status == "running" and _alive(run, db, c.now):
        return None
    if _stopped_early(run):
        return None  # nothing was migrated: the upgrade is simply pending
    applied = c.graph.ancestry(db.revisions)
    cut = None
    if run.step and run.revision and run.revision not in applied:
        cut = run.revision
    elif run.step:  # the journal's progress may lag a moment behind: the next one, then
        following = c.graph.pending(db.revisions)
        cut = following[0].id if following else None
    leftovers = tuple(sorted(t for t in db.tables if t.startswith(LEFTOVER)))
    attempt = Attempt(
        run=run,
        cut=cut,
        clean=clean_backup(db.recent_runs),
        partial_possible=db.dialect in ("sqlite", "mysql", "mariadb"),
        leftovers=leftovers,
        repairable=tuple(t for t in leftovers if t[len(LEFTOVER) :] in db.tables),
        committed=_committed(run, c.graph, db),
    )
    state = State.UPGRADE_FAILED if run.status == "failed" else State.UPGRADE_INTERRUPTED
    return Finding(state, Why.CUT_OFF, attempt=attempt)


def _committed(run: Run, graph: RevisionGraph, db: DatabaseFacts) -> int | None:
    """How many of a cut-off run's steps the database holds, when fewer than the journal
    says it finished: a transaction that held several steps was rolled back with them
    (PostgreSQL, where env.py runs the whole pass in one)."""
    holds = _holds(run, graph, db)
    return holds if holds is not None and holds < run.step - 1 else None  # step k was running


def _holds(run: Run, graph: RevisionGraph, db: DatabaseFacts) -> int | None:
    """How many of the run's revisions the database holds; None for a run that had not
    begun migrating, or whose journal entry does not say where it began."""
    if not run.step or run.from_revisions is None:
        return None
    before = graph.ancestry(split_revisions(run.from_revisions))
    return len(graph.ancestry(db.revisions) - before)


def _stopped_early(run: Run | None) -> Run | None:
    """A run that ended before migrating anything (its backup failed, or it was stopped
    while backing up) leaves the upgrade pending."""
    if run is None or run.kind != "upgrade" or run.step or run.status == "succeeded":
        return None
    return run


def clean_backup(runs: tuple[Run, ...]) -> str | None:
    """The backup of this upgrade's first attempt: the runs since the last one that
    finished well (or a restore) are its attempts, newest first."""
    clean = None
    for run in runs:
        if run.status == "succeeded" or run.kind != "upgrade":
            break
        if run.backup_path:
            clean = run.backup_path
    return clean


def _outside_change(run: Run | None, revisions: tuple[str, ...]) -> tuple[str, str] | None:
    """Revisions that moved since upgrader last wrote them down (`flask db upgrade` run by
    hand): the last journal entry that closed well says which revisions it left."""
    if run is None or run.status != "succeeded" or run.to_revisions is None:
        return None
    recorded = split_revisions(run.to_revisions)
    if sorted(recorded) == sorted(revisions):
        return None
    return ", ".join(recorded) or "none", ", ".join(revisions) or "none"
