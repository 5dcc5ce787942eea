"""A run: what an upgrade and an install have in common, once the lock is held.

open a run holding a lease → back up and verify → one Alembic pass through the
application's env.py, journalled step by step → in one transaction, record the version
and close the run. While the lease is live every node's guard shows "upgrade running"
(Err2), so an upgrade blocks visitors for exactly its duration without touching the
maintenance settings an administrator made: nothing needs switching back.

A failure closes the run as failed with its step and error; the lock is freed by leaving
its `with`. A killed process leaves the lock free: the next diagnosis says
"interrupted", and a rerun resumes from the database's revision.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from upgrader.core import journal, records, storage
from upgrader.core.diagnosis import Diagnosis
from upgrader.core.revisions import Revision
from upgrader.core.tables import ensure_tables
from upgrader.engine.backup import Backup, create_backup
from upgrader.engine.backuptools import BackupError
from upgrader.engine.exits import MigrationFailed, PreflightFailed, Stopped
from upgrader.engine.heartbeat import Heartbeat
from upgrader.engine.locks import UpgradeLock
from upgrader.engine.migrate import Target, migration_config, plan_upgrade, run_upgrade
from upgrader.engine.site import Installation
from upgrader.engine.steps import StepJournal

log = logging.getLogger("upgrader")


@dataclass
class Outcome:
    kind: str  # upgrade | install | nothing | recorded
    message: str
    run_id: int | None = None
    from_version: str | None = None
    to_version: str | None = None
    applied: list[str] = field(default_factory=list)
    backup: Backup | None = None


@dataclass(frozen=True)
class Plan:
    """What a run applies, and how it is journalled."""

    pending: list[Revision]
    target: Target = "heads"
    kind: str = "upgrade"  # upgrade | install
    to_version: str | None = None  # the code's, unless an older release is installed
    backup: bool = True
    trigger: str = "cli"
    phase: str | None = None  # online | post-deploy: the site stays up
    note: str | None = None


def execute(
    site: Installation, engine: Engine, lock: UpgradeLock, d: Diagnosis, plan: Plan
) -> Outcome:
    """Run `plan` on the database `d` describes (diagnosed under the lock)."""
    to_version = plan.to_version or d.code_version
    # An online run that leaves revisions pending keeps the version: the release is
    # complete once `--post-deploy` has applied the rest.
    complete = plan.phase != "online" or len(plan.pending) == len(d.pending_revisions)
    recorded = to_version if complete else d.schema_version or to_version
    run_id = _open(site, engine, d, plan, to_version)
    saved: Backup | None = None
    sqlite = engine.url.get_backend_name() == "sqlite"
    lease = site.settings.lease_seconds
    beat = None if sqlite else Heartbeat(engine, site.tables, run_id, lease)
    with beat or contextlib.nullcontext(), _stopped_by_signals(), _journalled(site, engine, run_id):
        if plan.backup:
            saved = _back_up(site, engine, d, run_id, to_version)
        applied = _apply(site, engine, lock, run_id, plan, beat)
        _close(site, engine, run_id, recorded)
    message = _said(site, d, plan, to_version, complete)
    log.warning("run #%d succeeded: %s", run_id, message)
    return Outcome(plan.kind, message, run_id, d.schema_version, recorded, applied, saved)


def _open(site: Installation, engine: Engine, d: Diagnosis, plan: Plan, to_version: str) -> int:
    """The run's journal entry, holding a lease; the compatibility it declares first."""
    ensure_tables(engine, site.tables)
    _declare_compatible(site, engine, d, plan.phase)
    run_id = journal.start_run(
        engine,
        site.tables,
        kind=plan.kind,
        trigger=plan.trigger,
        lease_seconds=site.settings.lease_seconds,
        from_version=d.schema_version,
        to_version=to_version,
        from_revisions=d.database_revisions,
        steps=len(plan.pending),
        client=site.client,
        phase=plan.phase,
        note=plan.note,
    )
    steps = len(plan.pending)
    site.progress(
        "run", {"run_id": run_id, "steps": steps, "from": d.schema_version, "to": to_version}
    )
    who = records.identity()
    log.warning(
        "run #%d (%s, %s) started by %s@%s pid %s: %s to %s, %d revision(s)%s",
        run_id,
        f"{plan.kind} --{plan.phase}" if plan.phase else plan.kind,
        plan.trigger,
        who["actor"],
        who["host"],
        who["pid"],
        d.schema_version or "-",
        to_version,
        steps,
        "" if plan.backup else ", no backup",
    )
    return run_id


@contextlib.contextmanager
def _journalled(site: Installation, engine: Engine, run_id: int) -> Iterator[None]:
    """How the run ended, in the journal, whatever stopped it."""
    tables = site.tables
    try:
        yield
    except BackupError as exc:
        log.error("run #%d: the backup failed, nothing was migrated: %s", run_id, exc)
        error = f"backup failed, nothing was migrated: {exc}"
        journal.finish_run(engine, tables, run_id, "failed", error=error)
        raise PreflightFailed(f"the backup failed, so nothing was migrated: {exc}") from exc
    except MigrationFailed as exc:
        log.error("run #%d failed: %s", run_id, exc)
        journal.finish_run(engine, tables, run_id, "failed", error=str(exc))
        raise
    except (Stopped, KeyboardInterrupt) as exc:
        stopped = _as_stop(exc)
        log.error("run #%d stopped by %s", run_id, stopped)
        journal.finish_run(engine, tables, run_id, "interrupted", note=f"stopped by {stopped}")
        if stopped is exc:
            raise
        raise stopped from exc


def _back_up(
    site: Installation, engine: Engine, d: Diagnosis, run_id: int, to_version: str
) -> Backup:
    site.progress("backup", {})
    saved = create_backup(
        engine,
        Path(site.settings.backup_dir),
        label=f"before-{to_version}",
        schema_version=d.schema_version,
        revisions=list(d.database_revisions),
        checked=True,  # the command ran the pre-flight before taking the lock
    )
    journal.update_run(
        engine,
        site.tables,
        run_id,
        backup_path=saved.path,
        backup_checksum=saved.sha256,
        backup_size=saved.size,
    )
    site.progress("backup_done", {"path": saved.path, "size": saved.size})
    return saved


def _declare_compatible(
    site: Installation, engine: Engine, d: Diagnosis, phase: str | None
) -> None:
    """Before an online run: the code that matches the database now keeps working on the
    schema it makes (and code declared so before it, too). Before any other run: nothing
    older is declared to work any more."""
    if d.state_row_id is None:
        return
    heads = (
        records.join_revisions(set(d.compatible_heads) | set(d.database_revisions))
        if phase == "online"
        else None
    )
    if heads == (records.join_revisions(d.compatible_heads) or None):
        return
    state = site.tables.state
    with engine.begin() as conn:
        conn.execute(
            state.update().where(state.c.id == d.state_row_id).values(compatible_heads=heads)
        )
    log.warning("compatible heads of the schema: %s", heads or "none (cleared)")


def _apply(
    site: Installation,
    engine: Engine,
    lock: UpgradeLock,
    run_id: int,
    plan: Plan,
    beat: Heartbeat | None,
) -> list[str]:
    """One Alembic pass to the plan's target, journalled step by step as Alembic applies
    the revisions."""
    cfg = migration_config(site.settings, engine.url)
    graph = site.code.graph
    script = graph.script if graph and graph.script else ScriptDirectory.from_config(cfg)
    order = plan_upgrade(script, plan.target, site.revisions(engine))
    steps = StepJournal(site, engine, lock, run_id, order, len(plan.pending))
    if beat is not None:
        beat.tick = steps.tick  # the progress, written from the heartbeat's thread
    try:
        run_upgrade(cfg, plan.target, steps, site.app(), script)
    except BaseException as exc:
        stop = _stop_behind(exc)
        if stop is None:
            raise MigrationFailed(steps.failed(exc)) from exc
        steps.stopped()
        if stop is exc:
            raise
        raise Stopped(str(stop)) from exc  # a new one: `stop` may be in exc's context
    finally:
        if beat is not None:
            beat.tick = None
    steps.finished()
    steps.flush()  # the last steps' rows, on a server
    _check_reached(site, engine, plan.target, steps)
    return steps.done


class _Signalled(KeyboardInterrupt):
    """SIGTERM, raised as Ctrl-C is: psycopg cancels the statement that runs on a
    KeyboardInterrupt, where any other exception leaves its connection mid-answer."""


def _as_stop(exc: Stopped | KeyboardInterrupt) -> Stopped:
    if isinstance(exc, Stopped):
        return exc
    return Stopped(str(exc) if isinstance(exc, _Signalled) else "Ctrl-C (SIGINT)")


def _stop_behind(exc: BaseException) -> Stopped | None:
    """The stop (SIGTERM, Ctrl-C) behind an error, if any. A signal inside a database call
    can leave the driver mid-answer, and what the cleanup then raises (PyMySQL's
    `InterfaceError(0, '')`) hides the stop it came from."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, Stopped | KeyboardInterrupt):
            return _as_stop(cause)
        cause = cause.__cause__ or cause.__context__
    return None


def _check_reached(site: Installation, engine: Engine, target: Target, steps: StepJournal) -> None:
    """An env.py whose transaction never commits leaves the version table as it was."""
    graph = site.code.graph
    if graph is None:
        return
    wanted = graph.heads if target == "heads" else (target,) if isinstance(target, str) else target
    if graph.ancestry(wanted) - graph.ancestry(site.revisions(engine)):
        raise MigrationFailed(
            steps.failed(
                RuntimeError(
                    "the migrations ran but alembic_version does not show them: the "
                    "application's env.py did not commit (is its connection already in a "
                    "transaction?)"
                )
            )
        )


def _close(site: Installation, engine: Engine, run_id: int, version: str) -> None:
    """Record the version and close the run, in one transaction: never one without the other."""
    with engine.begin() as conn:
        facts = storage.read_facts(conn, site.tables, site.settings.version_table)
        keep = facts.states[0] if len(facts.states) == 1 else None
        storage.write_single_state(conn, site.tables, version, keep)
        journal.close_succeeded(conn, site.tables, run_id, facts.revisions)


def _said(site: Installation, d: Diagnosis, plan: Plan, to_version: str, complete: bool) -> str:
    if complete:
        return f"{'installed' if plan.kind == 'install' else 'upgraded'} to {to_version}"
    applied, left = len(plan.pending), len(d.pending_revisions) - len(plan.pending)
    return (
        f"applied {applied} revision(s) online; {left} post-deploy revision(s) wait until "
        f"every node runs {to_version}: then run `{site.cli} upgrade --post-deploy`"
    )


@contextlib.contextmanager
def _stopped_by_signals() -> Iterator[None]:
    """While a run is open, SIGTERM (a service stop, `kill`) stops it as Ctrl-C does, so
    the journal says "interrupted" before the process ends. Only the main thread can."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise _Signalled(signal.Signals(signum).name)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    except KeyboardInterrupt as exc:
        raise _as_stop(exc) from exc
    finally:
        signal.signal(signal.SIGTERM, previous)
