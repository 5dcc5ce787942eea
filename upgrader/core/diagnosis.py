"""The one place that decides the state of an installation.

`decide()` is a pure function of what the code says (`CodeFacts`) and what the
database says (`DatabaseFacts`). `diagnose()` gathers both and calls it. Pages,
the CLI, the status endpoint and the wizard only render the `Diagnosis`; none
of them decides anything on its own.

Every oddity is a state with an explanation and a fix, never an exception.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, inspect, text
from sqlalchemy.exc import SQLAlchemyError

from upgrader.core import journal, lockfile, nodes, phases, processes, records, storage, times
from upgrader.core.database import (
    NoAnswer,
    describe_error,
    guard_engine,
    missing_sqlite_file,
    safe_url,
    within,
)
from upgrader.core.records import Maintenance, Run, StateRow
from upgrader.core.revisions import Revision, RevisionGraph, load_graph
from upgrader.core.storage import DatabaseFacts
from upgrader.core.tables import define_tables, forget_columns, table_names
from upgrader.core.times import utcnow
from upgrader.core.versions import ParsedVersion, compare, parse_version
from upgrader.i18n import N_
from upgrader.settings import Settings


class State(str, enum.Enum):
    OK = "ok"
    NOT_INSTALLED = "not_installed"
    UPGRADE_PENDING = "upgrade_pending"
    UPGRADE_RUNNING = "upgrade_running"
    UPGRADE_INTERRUPTED = "upgrade_interrupted"
    UPGRADE_FAILED = "upgrade_failed"
    DATABASE_AHEAD = "database_ahead"
    SCHEMA_UNKNOWN = "schema_unknown"
    DATABASE_TOO_OLD = "database_too_old"  # older than this release upgrades from (a stop)
    MAINTENANCE = "maintenance"
    DATABASE_UNAVAILABLE = "database_unavailable"
    # Serving states (core/phases.py): the site stays up, administrators see a banner.
    ONLINE_PENDING = "online_pending"  # revisions that may be applied with the site up
    POST_DEPLOY_PENDING = "post_deploy_pending"  # once no node runs older code
    COMPATIBLE_AHEAD = "compatible_ahead"  # older code, on a schema declared to fit it

    @property
    def serving(self) -> bool:
        """Does the guard let visitors through? (MAINTENANCE lets the allow-list through.)"""
        return self in _SERVING

    @property
    def error_code(self) -> str | None:
        """The code visitors see in "Down for Maintenance (ErrN)"."""
        return _ERROR_CODES.get(self)

    @property
    def exit_code(self) -> int:
        """The exit status of `upgrader status` (documented in docs/cli.md)."""
        return _EXIT_CODES[self]


_ERROR_CODES = {
    State.DATABASE_UNAVAILABLE: "Err1",
    State.UPGRADE_PENDING: "Err2",
    State.UPGRADE_RUNNING: "Err2",
    State.UPGRADE_INTERRUPTED: "Err2",
    State.UPGRADE_FAILED: "Err2",
    State.DATABASE_AHEAD: "Err3",
    State.SCHEMA_UNKNOWN: "Err3",
    State.DATABASE_TOO_OLD: "Err3",
}
_EXIT_CODES = {
    State.OK: 0,
    State.DATABASE_UNAVAILABLE: 1,
    State.UPGRADE_PENDING: 2,
    State.UPGRADE_RUNNING: 2,
    State.UPGRADE_INTERRUPTED: 2,
    State.UPGRADE_FAILED: 2,
    State.DATABASE_AHEAD: 3,
    State.SCHEMA_UNKNOWN: 3,
    State.DATABASE_TOO_OLD: 3,
    State.NOT_INSTALLED: 4,
    State.MAINTENANCE: 5,
    State.ONLINE_PENDING: 6,
    State.POST_DEPLOY_PENDING: 7,
    State.COMPATIBLE_AHEAD: 8,
}
_SERVING = frozenset(
    {State.OK, State.ONLINE_PENDING, State.POST_DEPLOY_PENDING, State.COMPATIBLE_AHEAD}
)

SUMMARIES = {
    State.OK: N_("Everything is up to date."),
    State.NOT_INSTALLED: N_("This site has not been installed yet."),
    State.UPGRADE_PENDING: N_(
        "This site is being updated to a new version. Please check back soon."
    ),
    State.UPGRADE_RUNNING: N_("An update of this site is in progress. Please check back soon."),
    State.UPGRADE_INTERRUPTED: N_(
        "An update of this site was interrupted. An administrator needs to finish it."
    ),
    State.UPGRADE_FAILED: N_(
        "An update of this site did not complete. An administrator needs to finish it."
    ),
    State.DATABASE_AHEAD: N_(
        "This site's software is older than its database. An administrator needs to deploy "
        "the matching version."
    ),
    State.SCHEMA_UNKNOWN: N_(
        "This site's database does not match its software. An administrator needs to look at it."
    ),
    State.DATABASE_TOO_OLD: N_(
        "This site's database is too old for this version of its software. An administrator "
        "needs to upgrade it in steps."
    ),
    State.MAINTENANCE: N_("This site is down for maintenance. Please check back soon."),
    State.DATABASE_UNAVAILABLE: N_(
        "This site cannot reach its database right now. Please try again in a few minutes."
    ),
    State.ONLINE_PENDING: N_("An update of this site can be applied while it stays online."),
    State.POST_DEPLOY_PENDING: N_(
        "An update of this site will be completed once every server runs the new version."
    ),
    State.COMPATIBLE_AHEAD: N_(
        "This server runs an older version of the site, which still works with its database."
    ),
}
"""One line per state that any visitor may read: calm, and free of internals."""


@dataclass(frozen=True)
class CodeFacts:
    """What the deployed code says: its version and its migration graph."""

    version: ParsedVersion
    graph: RevisionGraph | None
    error: str | None = None  # the script directory could not be read
    releases: Mapping[str, str] = field(default_factory=dict)
    guard_tables: frozenset[str] = field(default_factory=table_names)
    upgrade_from: str | None = None  # the oldest release this code upgrades (UPGRADER_UPGRADE_FROM)

    @property
    def heads(self) -> tuple[str, ...]:
        return self.graph.heads if self.graph else ()


@dataclass(frozen=True)
class Diagnosis:
    state: State
    summary: str
    fix: str
    details: tuple[str, ...]
    code_version: str
    schema_version: str | None
    database_revisions: tuple[str, ...]
    code_heads: tuple[str, ...]
    pending_revisions: tuple[Revision, ...]
    maintenance: Maintenance | None
    run: Run | None
    installer_present: bool
    checked_at: dt.datetime
    version_to_record: str | None = None  # a release without migrations, not yet recorded
    state_row_id: int | None = None
    outside_change: tuple[str, str] | None = None  # revisions moved without upgrader: (from, to)
    missing_file: str | None = None  # SQLite: the database file is not there
    compatible_heads: tuple[str, ...] = ()  # older code declared to work on this schema
    blocked_by: tuple[str, ...] = ()  # post-deploy: the nodes on older code, by name
    stalled: bool = False  # the running upgrade's process is stopped, or silent past its lease

    @property
    def code(self) -> str | None:
        return self.state.error_code

    @property
    def exit_code(self) -> int:
        return self.state.exit_code

    @property
    def headline(self) -> str:
        return self.headline_in(str)

    def summary_in(self, translate: Callable[[str], str]) -> str:
        """The summary in a language; an administrator's own message stays as written."""
        running = SUMMARIES[State.UPGRADE_RUNNING]
        run = self.run
        if self.state is State.UPGRADE_RUNNING and run and self.summary.startswith(running + " ("):
            step = translate(N_("(step %(step)s of %(steps)s)"))
            return f"{translate(running)} {step % {'step': run.step, 'steps': run.steps}}"
        return translate(self.summary)

    def headline_in(self, translate: Callable[[str], str]) -> str:
        """The headline in a language (upgrader.i18n); the code stays as it is."""
        if self.code:
            return f"{translate(N_('Down for Maintenance'))} ({self.code})"
        return translate(
            {
                State.OK: N_("Up to date"),
                State.NOT_INSTALLED: N_("Not installed"),
                State.MAINTENANCE: N_("Down for Maintenance"),
                State.ONLINE_PENDING: N_("Online upgrade available"),
                State.POST_DEPLOY_PENDING: N_("Post-deploy migrations pending"),
                State.COMPATIBLE_AHEAD: N_("Older code on a compatible database"),
            }[self.state]
        )

    def to_dict(self) -> dict[str, Any]:
        """The `status --json` contract (docs/cli.md). Holds no secret."""
        return {
            "state": self.state.value,
            "code": self.code,
            "headline": self.headline,
            "summary": self.summary,
            "fix": self.fix,
            "details": list(self.details),
            "code_version": self.code_version,
            "schema_version": self.schema_version,
            "database_revisions": list(self.database_revisions),
            "code_heads": list(self.code_heads),
            "pending_revisions": [
                {"revision": r.id, "message": r.message, "phase": r.phase}
                for r in self.pending_revisions
            ],
            "compatible_heads": list(self.compatible_heads),
            "blocked_by": list(self.blocked_by),
            "maintenance": None
            if self.maintenance is None
            else self.maintenance.to_dict(self.checked_at),
            "run": None if self.run is None else self.run.to_dict(),
            "installer_present": self.installer_present,
            "checked_at": times.iso(self.checked_at),
        }


def decide(
    code: CodeFacts,
    db: DatabaseFacts,
    *,
    now: dt.datetime,
    cli: str = "upgrader",
    installer_present: bool = False,
    installer_dir: str | None = None,
) -> Diagnosis:
    """Decide the state. Pure: the same facts always give the same diagnosis."""
    single: StateRow | None = db.states[0] if len(db.states) == 1 else None
    stored = parse_version(single.schema_version) if single else None
    graph = code.graph or RevisionGraph()
    known = all(graph.known(r) for r in db.revisions)
    pending = tuple(graph.pending(db.revisions)) if known and code.graph else ()
    run = db.last_run
    progress = _progress(run)
    # Is the open run's process alive? The OS lock knows exactly (SQLite, one host);
    # elsewhere its lease, renewed by a heartbeat, says so.
    alive = (
        run is not None
        and run.status == "running"
        and (db.lock_held if db.lock_held is not None else run.lease_live(now))
    )
    # `upgrade --online` and `--post-deploy` leave the site up while they run
    phased_run = run if alive and run is not None and run.phase else None

    def result(
        state: State, fix: str, *details: str, summary: str | None = None, **extra: Any
    ) -> Diagnosis:
        return Diagnosis(
            state=state,
            summary=summary or SUMMARIES[state],
            fix=fix,
            details=tuple(d for d in (*details, *db.problems) if d),
            code_version=code.version.raw,
            schema_version=single.schema_version if single else None,
            database_revisions=db.revisions,
            code_heads=code.heads,
            pending_revisions=pending,
            maintenance=single.maintenance if single else None,
            run=run,
            installer_present=installer_present,
            checked_at=now,
            state_row_id=single.id if single else None,
            compatible_heads=single.compatible_heads if single else (),
            **extra,
        )

    def maintenance_or(state: State, fix: str, *details: str, **extra: Any) -> Diagnosis:
        """A state in which the site would serve, unless an administrator switched
        maintenance on: then it is maintenance, and the state's details stay."""
        assert single is not None
        m = single.maintenance
        if m.active(now) and m.mode == "block":
            until = f" until {times.iso(m.until)}" if m.until else ""
            return result(
                State.MAINTENANCE,
                f"Switch it off with `{cli} maintenance off` when the work is done.",
                *details,
                f"maintenance switched on by {m.set_by or 'unknown'}{until}",
                summary=m.message or None,
                **extra,
            )
        return result(state, fix, *details, **extra)

    def finish(command: str) -> str:
        """How to finish: the web installer while it is on the server, else the command."""
        if installer_present:
            return f"open /install in a browser, or run `{cli} {command}`"
        where = (
            f"its directory {installer_dir} is not there; copy the release's install/ "
            "directory there to use it"
            if installer_dir
            else "no installer directory is configured"
        )
        return f"run `{cli} {command}` on the server (the web installer is off: {where})"

    upgrade = finish("upgrade")
    upgrade_now = upgrade[0].upper() + upgrade[1:]
    install = finish("install")
    install_now = install[0].upper() + install[1:] + "."
    revs = ", ".join(db.revisions) or "none"

    # 1. Nothing can be said without the database.
    if not db.reachable:
        return result(
            State.DATABASE_UNAVAILABLE,
            "Check that the database server is running and reachable with the configured "
            f"URL, then run `{cli} status` again.",
            f"connecting failed: {db.error}",
        )

    if db.busy:
        pid, host = db.holder or (None, None)
        stopped = _stopped(host, pid, db.process, upgrade, sqlite=True)
        return result(
            State.UPGRADE_RUNNING,
            stopped[1] if stopped else f"Wait for it to finish; follow it with `{cli} status`.",
            "the database is busy with the running upgrade (its process holds the upgrade "
            f"lock, and SQLite lets nobody read during its writes): {db.busy}",
            stopped[0] if stopped else "",
            stalled=stopped is not None,
        )

    # 2. Code that cannot be compared with anything.
    if code.error:
        return result(
            State.SCHEMA_UNKNOWN,
            "Point UPGRADER_MIGRATIONS at the application's Alembic directory, or redeploy "
            "the release completely: its migrations are missing or broken.",
            f"the code's migrations cannot be read: {code.error}",
        )
    if code.graph is not None and not code.graph.revisions:
        return result(
            State.SCHEMA_UNKNOWN,
            "Point UPGRADER_MIGRATIONS at the application's Alembic directory; if it is the "
            "right one, the release is missing its migrations (versions/ is empty).",
            "the code's migrations directory holds no revisions",
        )
    if code.graph is not None and code.graph.splits:
        splits = "; ".join(" and ".join(heads) for heads in code.graph.splits)
        first = code.graph.splits[0]
        return result(
            State.SCHEMA_UNKNOWN,
            "This release is broken: its migrations split one branch in two, and Alembic "
            "cannot tell which comes first. Do not upgrade with it: keep the previous release, "
            "and have the application's developer merge the heads (`alembic merge -m merge "
            f"{' '.join(first)}`, or `flask db merge {' '.join(first)}`) and ship a fixed release.",
            f"the code's migrations split one branch without a branch label: heads {splits}",
        )
    if not code.version.valid:
        return result(
            State.SCHEMA_UNKNOWN,
            "Set the application's version (UPGRADER_CODE_VERSION) to its release number, "
            "for example 2.0.1.",
            f"the code's version {code.version.error}",
        )

    if db.unreadable:
        return result(
            State.SCHEMA_UNKNOWN,
            "upgrader's own tables are damaged: restore them from the last backup, or send the "
            f"output of `{cli} doctor` to support.",
            f"the database answers, but upgrader's tables cannot be read: {db.unreadable}",
        )

    # 3. A live lease: an install or upgrade by any node. The revisions are in flux, and
    # other nodes (still on old code) see revisions they do not know: "running" is the truth.
    # Except for `upgrade --online` / `--post-deploy`: what they apply was declared safe for
    # the code that serves, which goes on serving (the phased states below say it runs).
    if run is not None and alive and phased_run is None:
        stalled = _stopped(
            run.host, run.pid, db.process, upgrade, sqlite=db.dialect == "sqlite"
        ) or _silent(run, now, db, cli, upgrade)
        return result(
            State.UPGRADE_RUNNING,
            stalled[1]
            if stalled
            else f"Wait for it to finish; follow it with `{cli} status`. "
            f"It was started by {run.actor or 'unknown'} on {run.host} (pid {run.pid}) at "
            f"{times.iso(run.started_at)}.",
            f"run #{run.id} from {run.from_version or '-'} to {run.to_version}: {progress}",
            stalled[0] if stalled else "",
            f"a session of the killed run is still working in the server: {db.lingering}"
            if db.lingering
            else "",
            # for visitors: how far, never which revision (that is for administrators)
            summary=f"{SUMMARIES[State.UPGRADE_RUNNING]} (step {run.step} of {run.steps})"
            if run.step and run.steps
            else None,
            stalled=stalled is not None,
        )

    # 4. Never installed, or never seen by upgrader.
    if db.missing_file:
        # A first installation, or a database file that was moved or whose volume is not
        # mounted: nothing here can tell them apart, so nothing is created without a person
        # confirming the path, and visitors are not sent to the installer.
        return result(
            State.NOT_INSTALLED,
            f"If this site was installed before, its database file is missing: put it back "
            f"at {db.missing_file} (or mount its volume), and nothing else is needed. If this "
            f"is a new installation, {install[0].lower() + install[1:]}: it creates the file.",
            f"the database file {db.missing_file} does not exist",
            summary=N_("This site cannot find its database. An administrator needs to look at it."),
            missing_file=db.missing_file,
        )
    if not db.states and not db.revisions:
        foreign = [t for t in db.tables if t != "alembic_version"]
        if foreign:
            shown = ", ".join(foreign[:8]) + (" …" if len(foreign) > 8 else "")
            return result(
                State.NOT_INSTALLED,
                "This database already holds tables that no migration recorded. Check that "
                "UPGRADER_DATABASE_URL names this application's database; if it does, the "
                "tables predate Alembic: bring them under Alembic (`"
                f"{cli} stamp REVISION` with the matching revision), then run `{cli} adopt`.",
                f"the database holds {len(foreign)} table(s) ({shown}) but no version information",
                "alembic_version exists but is empty" if db.has_version_table else "",
            )
        return result(
            State.NOT_INSTALLED,
            install_now,
            "the database is empty",
        )

    # 5. Revisions that this code cannot place, and state rows that cannot be trusted.
    unknown = [r for r in db.revisions if not graph.known(r)]
    overlapping = graph.overlapping(db.revisions)
    if overlapping:
        pairs = "; ".join(f"{a} is an ancestor of {b}" for a, b in overlapping)
        keep = sorted({b for _, b in overlapping} - {a for a, _ in overlapping})
        return result(
            State.SCHEMA_UNKNOWN,
            f"Check which revision the schema really has; if it is {', '.join(keep)}, keep "
            f"only that row in alembic_version (`{cli} stamp --purge {' '.join(keep)}`), then "
            f"run `{cli} status` again.",
            f"alembic_version holds overlapping revisions ({revs}): {pairs}",
        )

    harmful = [r for r in pending if r.drops & code.guard_tables]
    if harmful:
        names = ", ".join(sorted(set().union(*(r.drops & code.guard_tables for r in harmful))))
        files = "; ".join(f"{r.id} ({r.path})" for r in harmful)
        return result(
            State.SCHEMA_UNKNOWN,
            "Do not upgrade with this release: it would delete upgrader's state and journal. "
            "Keep running the previous release, and tell the application's developer: their "
            f"revision(s) {files} drop or alter {names}, which autogenerate writes when env.py "
            "lacks upgrader's filter; they must remove those operations, add `include_name` from "
            "upgrader.alembic to env.py (docs/embedding.md), and ship a fixed release.",
            f"pending revision(s) {', '.join(r.id for r in harmful)} would drop or alter "
            f"upgrader's own tables ({names})",
            summary=SUMMARIES[State.SCHEMA_UNKNOWN],
        )

    attempt = _attempt(db, graph, cli, upgrade, now)
    if attempt is not None and single is None and not db.states:
        return result(*attempt)  # an adopting run that was killed or failed is just that

    if single is None and not db.states:
        # Alembic manages this database, upgrader has never recorded it.
        adopt = "the database is managed by Alembic but has no upgrader state yet"
        if unknown:
            return result(
                State.SCHEMA_UNKNOWN,
                "Deploy the release that created this database, or check that "
                "UPGRADER_DATABASE_URL names this application's database.",
                adopt,
                f"revision(s) {', '.join(unknown)} are not part of this code",
            )
        if pending:
            return result(
                State.UPGRADE_PENDING,
                f"{upgrade_now}: it adopts the database and applies {len(pending)} revision(s).",
                adopt,
                f"{len(pending)} revision(s) pending from {revs}",
                _stopped_early(run) or "",
            )
        return result(
            State.UPGRADE_PENDING,
            f"Run `{cli} adopt` once: it records version {code.version.raw} for this database "
            "and changes nothing in its schema, which already matches the code.",
            adopt,
            summary=SUMMARIES[State.UPGRADE_PENDING],
        )

    if single is None:
        listed = "; ".join(f"id {s.id}: {s.schema_version!r}" for s in db.states)
        guess = _release_for(code, db.revisions)
        return result(
            State.SCHEMA_UNKNOWN,
            f"Run `{cli} adopt --version {guess or 'VERSION'}` with the release the database "
            "was last upgraded to: it keeps one state row.",
            f"upgrader's state table holds {len(db.states)} rows ({listed}); it must hold one",
        )

    assert stored is not None
    if not stored.valid:
        guess = _release_for(code, db.revisions)
        return result(
            State.SCHEMA_UNKNOWN,
            f"Run `{cli} adopt --version {guess or 'VERSION'}` with the release the database "
            f"was last upgraded to (its revisions are {revs}).",
            f"the stored schema version {stored.error}",
        )
    if not db.revisions and graph.revisions:
        what = "is empty" if db.has_version_table else "is missing"
        release_rev = code.releases.get(stored.raw)
        return result(
            State.SCHEMA_UNKNOWN,
            "Restore the backup taken before the last upgrade; or, if the application's tables "
            f"are intact, record their revision with `{cli} stamp {release_rev or 'REVISION'}`"
            f"{f' (the revision of release {stored.raw})' if release_rev else ''}.",
            f"upgrader's state says version {stored.raw}, but alembic_version {what}",
        )

    ordering = compare(stored, code.version)
    assert ordering is not None
    stop = _upgrade_stop(code, stored, unknown)
    if stop is not None:
        return result(State.DATABASE_TOO_OLD, *stop)
    if unknown and phases.compatible(code.heads, single.compatible_heads):
        return maintenance_or(
            State.COMPATIBLE_AHEAD,
            f"Deploy the new release on this node and restart it (it runs {code.version.raw}): "
            f"its code still works here, but `{cli} upgrade --post-deploy` waits for every node "
            f"to run the new release (`{cli} nodes` lists them).",
            f"revision(s) {', '.join(unknown)} come from a newer release, applied online; "
            f"this code ({code.version.raw}, {', '.join(code.heads)}) is declared compatible "
            "with them",
            _progress_of(phased_run),
        )
    if unknown:
        if ordering > 0:
            return result(
                State.DATABASE_AHEAD,
                f"Deploy version {stored.raw} of the application (or later), or restore the "
                f"backup taken before the database was upgraded to {stored.raw}.",
                f"the database was upgraded to {stored.raw}; this code is {code.version.raw}",
                f"revision(s) {', '.join(unknown)} come from a newer release",
            )
        clean = _clean_backup(db.recent_runs) or _last_backup(db.recent_runs)
        back = (
            f"restore the backup {clean} (`{cli} restore {clean} --yes`)"
            if clean
            else "restore a backup from before it was applied"
        )
        return result(
            State.SCHEMA_UNKNOWN,
            f"This code ({code.version.raw}) does not have revision(s) {', '.join(unknown)}, "
            f"which the database (at {stored.raw}) holds. If this release no longer carries "
            f"the migrations of {stored.raw} (its chain was squashed), upgrade the database "
            "with an intermediate release first, then deploy this one; the application's "
            "developer can say so with UPGRADER_UPGRADE_FROM and UPGRADER_RELEASES. If no "
            f"release has them, deploy the code they belong to, or {back}.",
            f"revision(s) {', '.join(unknown)} are not part of this code, yet the stored "
            f"version {stored.raw} is not newer than the code ({code.version.raw})",
        )
    if not pending and ordering > 0:
        return result(
            State.DATABASE_AHEAD,
            f"Deploy version {stored.raw} of the application (or later), or restore the backup "
            f"taken before the database was upgraded to {stored.raw}.",
            f"the database was upgraded to {stored.raw}; this code is {code.version.raw} "
            "(the schema revisions agree)",
        )
    if pending and ordering > 0:
        return result(
            State.SCHEMA_UNKNOWN,
            f"Deploy version {stored.raw} of the application and check its migrations, or "
            "restore a backup.",
            f"the stored version {stored.raw} is newer than the code ({code.version.raw}), yet "
            f"the database lacks {len(pending)} of the code's revisions",
        )

    in_sync = not pending and ordering == 0
    if attempt is not None and not in_sync:
        return result(*attempt)
    split = phases.split(pending)
    if pending and split.serving:
        return _phased(code, db, split, phased_run, stored.raw, cli, maintenance_or)
    if pending:
        versions = (
            f"version {stored.raw} to {code.version.raw}"
            if ordering
            else f"at version {stored.raw} (the code's version was not raised)"
        )
        return result(
            State.UPGRADE_PENDING,
            f"{upgrade_now}.",
            f"{versions}: {len(pending)} revision(s) pending",
            _stopped_early(run) or "",
        )
    notes: list[str] = []
    if run is not None and run.status == "running" and phased_run is None:
        notes.append(
            f"run #{run.id} never closed, but the database already matches the code; "
            f"`{cli} history` shows it"
        )
    # a phased run that has migrated but not closed yet records the version itself
    to_record = code.version.raw if ordering < 0 and phased_run is None else None
    outside = _outside_change(run, db.revisions)
    if outside:
        notes.append(
            f"the schema was changed outside upgrader (revision {outside[0]} to {outside[1]}, "
            "with no backup and no journal entry)"
        )
    if to_record:
        notes.append(
            f"release {to_record} adds no migrations: version {stored.raw} is to be recorded "
            f"as {to_record}"
            if not outside
            else f"version {stored.raw} is to be recorded as {to_record}"
        )
    return maintenance_or(State.OK, "", *notes, version_to_record=to_record, outside_change=outside)


def _phased(
    code: CodeFacts,
    db: DatabaseFacts,
    split: phases.Split,
    run: Run | None,
    stored: str,
    cli: str,
    serve: Callable[..., Diagnosis],
) -> Diagnosis:
    """Pending revisions of which none blocks (core/phases.py): the site keeps serving.
    Online ones can be applied now; post-deploy ones once no node runs older code."""
    version = code.version.raw
    running = (
        f"Wait for run #{run.id} ({run.phase}) to finish; follow it with `{cli} status`."
        if run is not None
        else ""
    )
    later = (
        f"{len(split.rest)} post-deploy revision(s) ({', '.join(r.id for r in split.rest)}) "
        f"wait until every node runs {version}"
        if split.rest
        else ""
    )
    if split.online:
        then = f", then, once every node runs {version}, `{cli} upgrade --post-deploy`"
        return serve(
            State.ONLINE_PENDING,
            running
            or f"Run `{cli} upgrade --online`: it applies {len(split.online)} revision(s) while "
            f"the site stays up{then if split.rest else ''}.",
            f"version {stored} to {version}: {len(split.online)} revision(s) can be applied "
            f"online ({', '.join(r.id for r in split.online)})",
            later,
            _progress_of(run),
        )
    old = nodes.older(db.nodes or (), version)
    names = tuple(n.name for n in old)
    if db.nodes is None:
        fix = f"Once every node runs {version}, run `{cli} upgrade --post-deploy`."
        blocked = ""
    elif old:
        fix = (
            f"Deploy {version} on the node(s) still on older code and restart them, or stop "
            f"them ({', '.join(names)}; `{cli} nodes` lists them); then run "
            f"`{cli} upgrade --post-deploy`."
        )
        blocked = f"post-deploy pending, blocked by {len(old)} old node(s): {nodes.describe(old)}"
    else:
        fix = f"Run `{cli} upgrade --post-deploy`: no node runs older code any more."
        blocked = ""
    return serve(
        State.POST_DEPLOY_PENDING,
        running or fix,
        later,
        blocked,
        _progress_of(run),
        blocked_by=names,
    )


def _progress_of(run: Run | None) -> str:
    """A live online or post-deploy run, for administrators."""
    if run is None:
        return ""
    return (
        f"run #{run.id} ({run.phase}) is applying them with the site up, started by "
        f"{run.actor or 'unknown'} on {run.host} (pid {run.pid}): {_progress(run) or 'starting'}"
    )


def run_status(run: Run, d: Diagnosis) -> str:
    """A journal entry's status by the liveness rules decide() applies: "running" only for
    the run whose process the diagnosis found alive (its lock held, else its lease live).
    An entry still open in the journal that nobody runs any more was interrupted."""
    if run.status != "running":
        return run.status
    alive = d.state is State.UPGRADE_RUNNING and d.run is not None and d.run.id == run.id
    return "running" if alive else "interrupted"


def run_time(run: Run, status: str, now: dt.datetime) -> str:
    """How long a run took, in words that mean something: a run that was cut off ran until
    its last sign of life (its heartbeat), not until whoever closed its entry."""
    from upgrader.core.times import took

    if status == "running":
        return f"{took(run.started_at, now)} so far"
    if status == "interrupted" and run.kind in ("upgrade", "install"):
        last = run.heartbeat_at or run.started_at
        return f"cut off after {took(run.started_at, last)} (last sign of life)"
    return took(run.started_at, run.finished_at)


def _outside_change(run: Run | None, revisions: Sequence[str]) -> tuple[str, str] | None:
    """Revisions that moved since upgrader last wrote them down (`flask db upgrade` run by
    hand): the last journal entry that closed well says which revisions it left."""
    if run is None or run.status != "succeeded" or run.to_revisions is None:
        return None
    recorded = records.split_revisions(run.to_revisions)
    if sorted(recorded) == sorted(revisions):
        return None
    return ", ".join(recorded) or "none", ", ".join(revisions) or "none"


def _progress(run: Run | None) -> str:
    if run is None or not run.steps:
        return ""
    current = f" ({run.revision}: {run.message})" if run.revision else ""
    return f"step {run.step} of {run.steps}{current}"


def _attempt(
    db: DatabaseFacts, graph: RevisionGraph, cli: str, upgrade: str, now: dt.datetime
) -> tuple[Any, ...] | None:
    """An upgrade that was killed or failed after it began migrating: what is known, and
    the fix that works. None when there is none (or it stopped before changing anything).

    The fix depends on where the cut fell. PostgreSQL rolls a cut-off revision back; on
    MariaDB/MySQL (schema changes commit as they run) and SQLite (many env.py files run
    DDL outside a transaction, and batch mode copies tables) it may be half done. Then the
    clean backup is the way back: the one taken before this upgrade's first attempt, not a
    rerun's, which may hold the half-done revision.
    """
    run = db.last_run
    if run is None or run.status not in ("running", "interrupted", "failed", "aborted"):
        return None  # (aborted: closed by `unlock`, perhaps in the middle of a step)
    if run.kind != "upgrade":
        return None
    alive = db.lock_held if db.lock_held is not None else run.lease_live(now)
    if run.status == "running" and alive:
        return None
    if _stopped_early(run):
        return None  # nothing was migrated: the upgrade is simply pending
    revs = ", ".join(db.revisions) or "none"
    progress = _progress(run)
    state = State.UPGRADE_FAILED if run.status == "failed" else State.UPGRADE_INTERRUPTED
    clean = _clean_backup(db.recent_runs)
    applied = graph.ancestry(db.revisions)
    cut = None
    if run.step and run.revision and run.revision not in applied:
        cut = run.revision
    elif run.step:  # the journal's progress may lag a moment behind: the next one, then
        following = graph.pending(db.revisions)
        cut = following[0].id if following else None
    partial_possible = db.dialect in ("sqlite", "mysql", "mariadb")
    leftovers = sorted(t for t in db.tables if t.startswith("_alembic_tmp_"))
    repairable = [t for t in leftovers if t[len("_alembic_tmp_") :] in db.tables]
    details: list[str] = []
    if state is State.UPGRADE_INTERRUPTED:
        how = (
            run.note or "it was stopped"
            if run.status in ("interrupted", "aborted")
            else "no process holds its upgrade lock any more"
            if db.lock_held is False
            else f"its lease expired at {times.iso(run.lease_expires_at)}"
        )
        details.append(
            f"run #{run.id} ({run.from_version or '-'} to {run.to_version}) stopped at "
            f"{progress or 'its start'}; {how} (it ran on {run.host}, pid {run.pid})"
        )
    else:
        details.append(
            f"run #{run.id} ({run.from_version or '-'} to {run.to_version}) failed at "
            f"{progress or 'its start'}"
        )
        details.append(f"error: {run.error or 'not recorded'}")
    committed = _committed(run, graph, db)
    if committed:
        details.append(committed)
    if cut and partial_possible:
        why = (
            "MariaDB/MySQL commits each schema change as it runs"
            if db.dialect != "sqlite"
            else "SQLite runs many migrations' schema changes outside a transaction"
        )
        details.append(f"revision {cut} was cut off and may be partly applied ({why})")
    if leftovers:
        details.append(
            f"tables left by an interrupted batch migration: {', '.join(leftovers)}"
            + ("" if len(repairable) == len(leftovers) else " (some without their original)")
        )
    if db.lingering:
        details.append(f"a session of the dead run is still working in the server: {db.lingering}")
    if clean:
        details.append(f"the backup taken before this upgrade's first attempt: {clean}")

    steps: list[str] = []
    if db.lingering:
        steps.append(f"end the dead run's database session with `{cli} unlock`")
    if state is State.UPGRADE_FAILED:
        steps.append("read the error and fix its cause")
    risky = (cut and partial_possible) or (leftovers and len(repairable) < len(leftovers))
    if risky and clean:
        steps.append(
            f"restore the backup taken before this upgrade with `{cli} restore {clean} --yes` "
            f"(the rerun's backups may hold the half-done revision), then run the upgrade "
            f"again ({upgrade})"
        )
        if leftovers and len(repairable) == len(leftovers) and not (cut and db.dialect != "sqlite"):
            steps[-1] += f"; or remove the leftover tables with `{cli} repair` and run it again"
    elif risky:
        steps.append(
            f"no backup was taken: compare the tables revision {cut or 'of the cut step'} "
            "touches with its migration file and undo what it did"
            + (f" (`{cli} repair` removes the leftover copies)" if repairable else "")
            + f", then run the upgrade again ({upgrade}): it resumes from revision {revs}"
        )
    else:
        if repairable:
            steps.append(f"remove the leftover tables with `{cli} repair`")
        steps.append(f"run the upgrade again ({upgrade}): it resumes from revision {revs}")
        if clean:
            steps.append(f"to go back instead, run `{cli} restore {clean} --yes`")
    fix = "; ".join(steps)
    return (state, fix[0].upper() + fix[1:] + ".", *details)


def _upgrade_stop(
    code: CodeFacts, stored: ParsedVersion, unknown: Sequence[str]
) -> tuple[str, str] | None:
    """(fix, detail) when this release cannot upgrade the database: it is older than the
    release the code declares it upgrades from, or it holds the revisions of a release
    (UPGRADER_RELEASES) that the code's chain no longer has (a squash: an upgrade stop)."""
    floor = parse_version(code.upgrade_from) if code.upgrade_from else None
    below = floor is not None and (compare(stored, floor) or 0) < 0
    dropped = [
        version
        for version, revision in code.releases.items()
        if revision in unknown and (compare(parse_version(version), code.version) or 0) < 0
    ]
    if not below and not dropped:
        return None
    version = code.version.raw
    if floor is not None and below:
        series = ".".join(str(p) for p in floor.public.release[:2]) + ".x" if floor.public else ""
        fix = (
            f"This release upgrades databases from {floor.raw} on; this database is at "
            f"{stored.raw}. Upgrade it with release {series or floor.raw} first (deploy it, "
            f"upgrade, check the site), then deploy {version} again and upgrade. Nothing was "
            "changed."
        )
        detail = (
            f"the database is at {stored.raw}, older than {floor.raw}, the oldest release "
            f"{version} upgrades from"
        )
    else:
        fix = (
            f"This release no longer carries the migrations of {', '.join(sorted(dropped))} "
            f"(its chain starts later). Upgrade the database with a release that still has "
            f"them first, then deploy {version} again and upgrade. Nothing was changed."
        )
        detail = (
            f"the database holds revision(s) {', '.join(unknown)} of release(s) "
            f"{', '.join(sorted(dropped))}, which this release's chain no longer has"
        )
    return fix, detail


def _committed(run: Run, graph: RevisionGraph, db: DatabaseFacts) -> str:
    """What of a cut-off run the database holds now, when that is less than the journal's
    progress suggests: a transaction that held several steps was rolled back with them
    (PostgreSQL, where env.py runs the whole pass in one)."""
    if not run.step or run.from_revisions is None:
        return ""
    before = graph.ancestry(records.split_revisions(run.from_revisions))
    now = len(graph.ancestry(db.revisions) - before)
    finished = run.step - 1  # the journal's step k is the one that was running
    if now >= finished:
        return ""
    where = f"the database is at revision {', '.join(db.revisions) or 'none'}"
    if now == 0:
        return (
            f"{where}, as before the run: none of its {finished} finished step(s) was "
            "committed (the database rolled back the transaction that held them; step 0 of "
            f"{run.steps})"
        )
    return (
        f"{where}: {now} of its {finished} finished step(s) are committed (step {now} of "
        f"{run.steps}); the database rolled back the rest with their transaction"
    )


def _stopped_early(run: Run | None) -> str | None:
    """A run that ended before migrating anything (its backup failed, or it was stopped
    while backing up) leaves the upgrade pending: say why, without calling it a failure."""
    if run is None or run.kind != "upgrade" or run.step or run.status == "succeeded":
        return None
    if run.status == "failed":
        return f"the last attempt (run #{run.id}) changed nothing: {run.error or 'no error'}"
    # interrupted or aborted; or still "running" in the journal, which the caller asks only
    # once it knows the run is dead (killed while it was backing up)
    return f"the last attempt (run #{run.id}) stopped before migrating anything"


def _clean_backup(runs: Sequence[Run]) -> str | None:
    """The backup of this upgrade's first attempt: the runs since the last one that
    finished well (or a restore) are its attempts, newest first."""
    clean = None
    for run in runs:
        if run.status == "succeeded" or run.kind != "upgrade":
            break
        if run.backup_path:
            clean = run.backup_path
    return clean


def _last_backup(runs: Sequence[Run]) -> str | None:
    return next((r.backup_path for r in runs if r.backup_path), None)


def _stopped(
    host: str | None, pid: int | None, process: str | None, upgrade: str, *, sqlite: bool
) -> tuple[str, str] | None:
    """(detail, fix) for a run whose process, on this host, is stopped: it holds the upgrade
    lock (on SQLite perhaps the write lock too) and does nothing until it is resumed."""
    if process != processes.STOPPED or pid is None:
        return None
    holds = "the upgrade lock and SQLite's write lock" if sqlite else "the upgrade lock"
    detail = (
        f"process {pid} on {host} is stopped (Ctrl-Z, SIGSTOP or a debugger): it holds {holds} "
        "and does nothing until it is resumed"
    )
    fix = (
        f"Process {pid} on {host} is stopped: resume it with `kill -CONT {pid}` and it "
        f"finishes the upgrade; or end it with `kill -TERM {pid} && kill -CONT {pid}` (it "
        f"records where it stopped), then {upgrade}."
    )
    return detail, fix


def _silent(
    run: Run, now: dt.datetime, db: DatabaseFacts, cli: str, upgrade: str
) -> tuple[str, str] | None:
    """(detail, fix) for a run on a server database that holds the lock but has not renewed
    its lease: stopped or hung, on a host this one cannot look into (else _stopped says)."""
    if db.dialect == "sqlite" or run.lease_live(now) or not db.lock_held:
        return None
    if db.process == processes.RUNNING:
        silent = int((now - (run.heartbeat_at or run.started_at)).total_seconds())
        return (
            f"no heartbeat for {silent} s, yet process {run.pid} on {run.host} runs and holds "
            "the lock: a long statement, or a wait on the disk or the network",
            f"Wait for it; `{cli} doctor` shows the database sessions it waits behind. To end "
            f"it, run `kill -TERM {run.pid}` on {run.host}, then {upgrade}.",
        )
    silent = int((now - (run.heartbeat_at or run.started_at)).total_seconds())
    pid, host = run.pid, run.host
    return (
        f"no heartbeat for {silent} s from {host} pid {pid}, yet it holds the upgrade lock",
        f"On {host}, see whether process {pid} is stopped (`ps -o stat= -p {pid}` shows T): "
        f"resume it with `kill -CONT {pid}`, or end it with `kill -TERM {pid} && kill -CONT "
        f"{pid}`, then {upgrade}. If {host} itself is gone, `{cli} unlock --force --yes` ends "
        "the run's database sessions and closes it.",
    )


def _release_for(code: CodeFacts, revisions: Sequence[str]) -> str | None:
    """The newest release whose schema is exactly these revisions, when releases are known."""
    if len(revisions) != 1:
        return None
    matches = [v for v, rev in code.releases.items() if rev == revisions[0]]
    parsed = [(p.version, p.raw) for p in map(parse_version, matches) if p.version is not None]
    return max(parsed)[1] if parsed else None


# ---------------------------------------------------------------- gathering facts


def load_code_facts(settings: Settings) -> CodeFacts:
    """Read the code's version and migration graph. Slow (imports revision files): cache it."""
    version = parse_version(settings.resolved_code_version())
    migrations = Path(settings.migrations)
    facts = CodeFacts(
        version,
        None,
        releases=settings.releases,
        guard_tables=table_names(settings.table_prefix),
        upgrade_from=settings.upgrade_from,
    )
    if not migrations.is_dir():
        return replace(facts, error=f"{migrations} is not a directory")
    try:
        return replace(facts, graph=load_graph(migrations))
    except Exception as exc:  # revision files are the application's code: anything can fail
        return replace(facts, error=f"{type(exc).__name__}: {exc}")


def read_database(
    engine: Engine, settings: Settings, deadline: float | None = None
) -> DatabaseFacts:
    """Read the database's facts; an unreachable or vanishing database is a fact too.

    With `deadline` (seconds), a database server that does not answer in time is
    unavailable, whatever its driver's own timeouts do (PyMySQL reads the handshake with
    its read timeout, libpq retries every address): the read goes on in a thread of its
    own, which those timeouts end. Not for SQLite: a local file, whose "busy" while an
    upgrade writes is an answer of its own.
    """
    if deadline is None or engine.url.get_backend_name() == "sqlite":
        return _read_database(engine, settings)
    try:
        return within(deadline, lambda: _read_database(engine, settings))
    except NoAnswer as exc:
        return DatabaseFacts(reachable=False, error=f"{safe_url(engine.url)}: {exc}")


def _read_database(engine: Engine, settings: Settings) -> DatabaseFacts:
    url = engine.url
    missing = missing_sqlite_file(url)
    if missing is not None:
        return DatabaseFacts(missing_file=str(missing))
    tables = define_tables(settings.table_prefix)
    held = lockfile.lock_held(url.database) if url.get_backend_name() == "sqlite" else None
    for attempt in (1, 2):
        try:
            conn = engine.connect()
        except SQLAlchemyError as exc:
            return DatabaseFacts(reachable=False, error=_where(engine) + describe_error(exc, url))
        try:
            with conn:
                facts = storage.read_facts(conn, tables, settings.version_table)
                return _with_run_facts(conn, facts, held)
        except (SQLAlchemyError, ValueError, TypeError, KeyError) as exc:
            reason = describe_error(exc, url)
            forget_columns(engine)  # a restore may have changed upgrader's tables
            if held and "database is locked" in reason:
                # SQLite: a long migration holds the write lock, and its process is alive.
                who = lockfile.holder(url.database)
                state = processes.of_run(who[1], who[0]) if who else None
                return DatabaseFacts(
                    busy=reason, lock_held=True, dialect="sqlite", holder=who, process=state
                )
            if attempt == 1 and _column_error(reason):
                continue
            break
    # Connected, then failed: the server went away or the database itself is unreadable
    # (listing its tables fails too), or only our tables are damaged.
    try:
        with engine.connect() as probe:
            inspect(probe).get_table_names()
    except SQLAlchemyError as exc:
        return DatabaseFacts(reachable=False, error=_where(engine) + describe_error(exc, url))
    return DatabaseFacts(unreadable=reason)


def _column_error(reason: str) -> bool:
    lowered = reason.lower()
    return "column" in lowered and any(
        word in lowered for word in ("no such column", "unknown column", "does not exist")
    )


def _with_run_facts(conn: Connection, facts: DatabaseFacts, held: bool | None) -> DatabaseFacts:
    """For a run the journal says is running: does a process hold its lock? For one that
    is over: does its statement still run in the server? (Only then: no query otherwise.)"""
    run = facts.last_run
    if run is None or run.status != "running":
        return replace(facts, lock_held=held)
    facts = replace(facts, process=processes.of_run(run.host, run.pid))
    if held is None:
        try:
            held = lockfile.server_lock_held(conn)
        except SQLAlchemyError:
            held = None  # cannot be asked (permissions): the lease decides
    lingering = None
    if held is False and run.db_session:
        lingering = lingering_statement(conn, run.db_session)
    return replace(facts, lock_held=held, lingering=lingering)


def lingering_statement(conn: Connection, session: str) -> str | None:
    """The statement a server session is still running, or None when it is idle or gone."""
    try:
        if conn.dialect.name == "postgresql":
            row = conn.execute(
                text(
                    "SELECT state, EXTRACT(EPOCH FROM now() - query_start)::int, "
                    "left(query, 160) FROM pg_stat_activity "
                    "WHERE pid = :p AND state NOT IN ('idle')"
                ),
                {"p": int(session)},
            ).first()
        elif conn.dialect.name in ("mysql", "mariadb"):
            row = conn.execute(
                text(
                    "SELECT COMMAND, TIME, LEFT(INFO, 160) FROM information_schema.PROCESSLIST "
                    "WHERE ID = :p AND COMMAND <> 'Sleep'"
                ),
                {"p": int(session)},
            ).first()
        else:
            return None
    except (SQLAlchemyError, ValueError):
        return None
    if row is None:
        return None
    query = " ".join(str(row[2] or "").split())
    return f"session {session} ({row[0]}, {row[1]} s): {query}"


def provisional(settings: Settings, why: str) -> Diagnosis:
    """Err1 without asking the database: for requests that cannot wait for an answer
    (a process that has none yet, or a refresh that is taking too long)."""
    version = parse_version(settings.code_version or "0")
    facts = DatabaseFacts(reachable=False, error=why)
    return decide(CodeFacts(version, None), facts, now=utcnow(), cli=settings.cli)


def _where(engine: Engine) -> str:
    return f"{safe_url(engine.url)}: "


def diagnose(
    settings: Settings,
    *,
    code: CodeFacts | None = None,
    engine: Engine | None = None,
    record: bool = True,
    now: dt.datetime | None = None,
) -> Diagnosis:
    """Diagnose the installation described by `settings`.

    With `record`, a release that adds no migrations is recorded on the spot
    (once, whichever process sees it first) and the diagnosis says ok.
    """
    code = code or load_code_facts(settings)
    own_engine = engine is None
    engine = engine or guard_engine(settings)
    try:
        facts = read_database(engine, settings, deadline=settings.connect_timeout)
        directory = settings.installer_dir
        at = now or utcnow()

        def decided(facts: DatabaseFacts) -> Diagnosis:
            return decide(
                code,
                facts,
                now=at,
                cli=settings.cli,
                installer_present=directory is not None and Path(directory).is_dir(),
                installer_dir=str(directory) if directory else None,
            )

        diagnosis = decided(facts)
        if diagnosis.state is State.POST_DEPLOY_PENDING:
            # which nodes still run older code: read only in this state, which needs it
            diagnosis = decided(replace(facts, nodes=_live_nodes(engine, settings)))
        if record and diagnosis.version_to_record and diagnosis.state_row_id is not None:
            diagnosis = _record(engine, settings, diagnosis)
        return diagnosis
    finally:
        if own_engine:
            engine.dispose()


def _live_nodes(engine: Engine, settings: Settings) -> tuple[nodes.Node, ...] | None:
    try:
        with engine.connect() as conn:
            tables = define_tables(settings.table_prefix)
            return tuple(nodes.live(conn, tables, beat=settings.node_beat))
    except SQLAlchemyError:
        return None  # the decision says what it can without them


def _record(engine: Engine, settings: Settings, diagnosis: Diagnosis) -> Diagnosis:
    assert diagnosis.version_to_record is not None and diagnosis.state_row_id is not None
    tables = define_tables(settings.table_prefix)
    version, outside = diagnosis.version_to_record, diagnosis.outside_change
    if outside is None:
        note = f"release {version} adds no migrations: version recorded on its own"
    else:
        note = (
            f"the schema was changed outside upgrader, from revision {outside[0]} to "
            f"{outside[1]}, with no backup: version {version} recorded"
        )
    try:
        journal.record_version(
            engine,
            tables,
            diagnosis.state_row_id,
            diagnosis.schema_version,
            version,
            diagnosis.database_revisions,
            note=note,
            kind="version" if outside is None else "external",
        )
    except SQLAlchemyError as exc:
        reason = describe_error(exc, engine.url)
        failed = f"could not record version {version}: {reason}"
        return replace(diagnosis, details=(*diagnosis.details, failed))
    recorded = note.replace(" on its own", "")
    details = tuple(d for d in diagnosis.details if "is to be recorded" not in d)
    return replace(
        diagnosis,
        schema_version=diagnosis.version_to_record,
        version_to_record=None,
        details=(*details, recorded),
    )


__all__ = [
    "CodeFacts",
    "Diagnosis",
    "State",
    "decide",
    "diagnose",
    "load_code_facts",
]
