"""Runs: upgrade, install, backup and restore, one at a time, journalled step by step.

An upgrade goes: diagnose → pre-flight (backup tool, directory, disk) → take
the lock → diagnose again under it → open a run holding a lease → back up and
verify → apply each pending revision through the application's env.py,
journalling step k of n → record the new version → close the run.

While the lease is live every node's guard shows "upgrade running" (Err2), so
an upgrade blocks visitors for exactly its duration without touching the
maintenance settings an administrator made: nothing needs switching back.

A failure closes the run as failed with its step and error; the lock is freed
by leaving its `with`. A killed process leaves its lease to expire: the next
diagnosis says "interrupted", and a rerun resumes from the database's revision.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, event, inspect, text

from upgrader.core import journal, lockfile, nodes, phases, processes, records, storage, times
from upgrader.core.database import (
    answers,
    describe_error,
    missing_sqlite_file,
    redact,
    run_engine,
)
from upgrader.core.diagnosis import (
    CodeFacts,
    Diagnosis,
    State,
    diagnose,
    load_code_facts,
)
from upgrader.core.gather import lingering_statement
from upgrader.core.revisions import Revision
from upgrader.core.tables import define_tables, ensure_tables
from upgrader.core.versions import compare, parse_version
from upgrader.engine.backup import Backup, BackupError, create_backup, preflight, restore_backup
from upgrader.engine.heartbeat import Heartbeat
from upgrader.engine.locks import LockBusy, LockLost, upgrade_lock
from upgrader.engine.migrate import (
    Target,
    migration_config,
    plan_upgrade,
    run_upgrade,
    stamp_revisions,
)
from upgrader.settings import Settings, load_app

Progress = Callable[[str, dict[str, Any]], None]
log = logging.getLogger("upgrader")

# Exit statuses of the commands that run (docs/cli.md).
EXIT_FAILED = 1
EXIT_REFUSED_AHEAD = 3
EXIT_NOT_INSTALLED = 4
EXIT_UNAVAILABLE = 69
EXIT_PREFLIGHT = 73
EXIT_BUSY = 75


class EngineError(Exception):
    exit_code = EXIT_FAILED


class Refused(EngineError):
    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class AlreadyRunning(EngineError):
    exit_code = EXIT_BUSY


class PreflightFailed(EngineError):
    exit_code = EXIT_PREFLIGHT


class MigrationFailed(EngineError):
    exit_code = EXIT_FAILED


@dataclass
class Outcome:
    kind: str  # upgrade | install | nothing | recorded
    message: str
    run_id: int | None = None
    from_version: str | None = None
    to_version: str | None = None
    applied: list[str] = field(default_factory=list)
    backup: Backup | None = None


def _quiet(event: str, data: dict[str, Any]) -> None:
    pass


class Runner:
    """One installation's engine: its settings, code facts, engine and tables."""

    def __init__(
        self,
        settings: Settings,
        code: CodeFacts | None = None,
        progress: Progress | None = None,
        client: str | None = None,
    ) -> None:
        self.settings = settings
        self.client = client  # the browser's address, for runs started from the web
        self.code = code or load_code_facts(settings)
        self.progress = progress or _quiet
        self.tables = define_tables(settings.table_prefix)
        self._app: Any = settings.app_object

    @contextlib.contextmanager
    def _engine(self) -> Iterator[Engine]:
        """The engine for a run; refused at once (69) when the server does not answer within
        the connect timeout, since a dump or a migration against it would wait without end."""
        engine = run_engine(self.settings)
        try:
            silent = answers(engine, self.settings.connect_timeout)
            if silent:
                raise Refused(f"the database cannot be reached: {silent}", EXIT_UNAVAILABLE)
            yield engine
        finally:
            engine.dispose()

    def diagnose(self, engine: Engine | None = None) -> Diagnosis:
        return diagnose(self.settings, code=self.code, engine=engine, record=False)

    def app(self) -> Any:
        """The application object, for env.py files that need its context (Flask-Migrate)."""
        if self._app is None and self.settings.app_ref:
            self._app = load_app(self.settings.app_ref)
        return self._app

    # ------------------------------------------------------------- upgrade

    def upgrade(
        self,
        *,
        backup: bool = True,
        trigger: str = "cli",
        before: Diagnosis | None = None,
        phase: str | None = None,
        force: bool = False,
    ) -> Outcome:
        """Upgrade. `before` may be a diagnosis the caller just made; under the lock it is
        made again, since another run may have finished meanwhile.

        `phase` "online" applies only what may be applied with the site up; "post-deploy"
        applies the rest once no node runs older code (or with `force`, said in the
        journal). Either way the site stays up while it runs (core/phases.py)."""
        before = before or self.diagnose()
        self._refuse_unless_upgradable(before)
        if not before.pending_revisions and before.state.settled:
            if before.version_to_record:  # a release without migrations: no run needed
                diagnose(self.settings, code=self.code, record=True)
                return Outcome(
                    "recorded",
                    f"release {before.version_to_record} adds no migrations: version recorded",
                    from_version=before.schema_version,
                    to_version=before.version_to_record,
                )
            return Outcome(
                "nothing",
                "already up to date: nothing to do",
                from_version=before.schema_version,
                to_version=before.schema_version,
            )
        with self._engine() as engine:
            if backup:
                problems = preflight(engine, Path(self.settings.backup_dir))
                if problems:
                    raise PreflightFailed(
                        "the backup cannot be made, so nothing was changed: " + "; ".join(problems)
                    )
            with self._locked(engine) as lock:
                now = self.diagnose(engine)  # again, under the lock: another run may have finished
                self._refuse_unless_upgradable(now, under_lock=True)
                pending = list(now.pending_revisions)
                if not pending and now.state.settled:
                    return Outcome("nothing", "already up to date: another run finished first")
                target: Target = "heads"
                note = None
                if phase is not None:
                    pending, target, note = self._phase_plan(engine, now, phase, force)
                return self._run(
                    engine,
                    lock,
                    now,
                    pending,
                    target,
                    backup=backup,
                    trigger=trigger,
                    phase=phase,
                    note=note,
                )

    def _phase_plan(
        self, engine: Engine, d: Diagnosis, phase: str, force: bool
    ) -> tuple[list[Revision], Target, str | None]:
        """What `--online` or `--post-deploy` applies, or why it may not (decided under the
        lock, on the diagnosis made there): the revisions, Alembic's target, a journal note."""
        cli, version = self.settings.cli, d.code_version
        split = phases.split(d.pending_revisions)
        if d.state_row_id is None:
            raise Refused(
                f"upgrader has recorded no version for this database yet: run `{cli} upgrade` "
                "once (the site waits for it)"
            )
        if phase == "online":
            if not split.online:
                first = split.rest[0]
                why = (
                    f"the next pending revision, {first.id}, is post-deploy: run "
                    f"`{cli} upgrade --post-deploy` once every node runs {version}"
                    if split.serving
                    else f"the next pending revision, {first.id}, declares no phase, so the "
                    f"site must wait for it: run `{cli} upgrade`"
                )
                raise Refused(f"nothing can be applied online: {why}. Nothing was changed.")
            return list(split.online), phases.targets(split.online), None
        if split.blocking:
            ids = ", ".join(r.id for r in split.blocking)
            raise Refused(
                f"revision(s) {ids} declare no phase, so the site must wait for them: run "
                f"`{cli} upgrade` instead. Nothing was changed."
            )
        with engine.connect() as conn:
            live = nodes.live(conn, self.tables, beat=self.settings.node_beat)
        old = nodes.older(live, version)
        if old and not force:
            raise Refused(
                f"post-deploy revisions would break the nodes still on older code: "
                f"{nodes.describe(old)}. Deploy {version} on them and restart them, or stop "
                f"them, then run this again (`{cli} nodes` lists them; a node that stopped "
                "without a word drops out of the list after a minute). Nothing was changed.",
                EXIT_BUSY,
            )
        note = None
        if old:
            note = f"--force: applied while {nodes.describe(old)}"
            log.warning("post-deploy run forced past old nodes: %s", nodes.describe(old))
        return list(d.pending_revisions), "heads", note

    def _refuse_unless_upgradable(self, d: Diagnosis, under_lock: bool = False) -> None:
        if d.state is State.DATABASE_UNAVAILABLE:
            raise Refused(
                f"the database cannot be reached: {'; '.join(d.details)}", EXIT_UNAVAILABLE
            )
        if d.state is State.NOT_INSTALLED:
            raise Refused(
                f"nothing is installed yet: run `{self.settings.cli} install`", EXIT_NOT_INSTALLED
            )
        if d.code == "Err3":
            raise Refused(
                f"{d.headline}: {'; '.join(d.details)}. {d.fix} Nothing was changed.",
                EXIT_REFUSED_AHEAD,
            )
        if d.state is State.COMPATIBLE_AHEAD:
            raise Refused(
                f"this code ({d.code_version}) is older than the database, which a newer "
                f"release upgraded online: {d.fix} Nothing was changed.",
                EXIT_REFUSED_AHEAD,
            )
        if d.state is State.UPGRADE_RUNNING and not under_lock:
            raise AlreadyRunning(self._busy_message(d))
        # Under the lock, a live lease belongs to a process that died holding it: take over.

    def _busy_message(self, d: Diagnosis | None) -> str:
        run = d.run if d else None
        if run is None or run.status != "running":
            return "an upgrade is already running (the upgrade lock is held)"
        where = f"on {run.host} (pid {run.pid})" if run.host else ""
        progress = (
            f", at step {run.step} of {run.steps}"
            if run.step
            else ", backing up the database"
            if run.steps
            else ""
        )
        return (
            f"an upgrade is already running: run #{run.id} ({run.kind}) started by "
            f"{run.actor or 'unknown'} {where} at {times.iso(run.started_at)}{progress}"
        )

    @contextlib.contextmanager
    def _locked(self, engine: Engine) -> Iterator[Any]:
        try:
            with upgrade_lock(engine) as lock:
                yield lock
        except LockBusy as exc:
            raise AlreadyRunning(self._busy_message(self._safe_diagnosis()) + f" [{exc}]") from exc

    def _safe_diagnosis(self) -> Diagnosis | None:
        try:
            return self.diagnose()
        except Exception:
            return None

    def _run(
        self,
        engine: Engine,
        lock: Any,
        d: Diagnosis,
        pending: list[Revision],
        target: Target,
        *,
        backup: bool,
        trigger: str,
        kind: str = "upgrade",
        to_version: str | None = None,
        phase: str | None = None,
        note: str | None = None,
    ) -> Outcome:
        settings = self.settings
        to_version = to_version or d.code_version
        # An online run that leaves revisions pending keeps the version: the release is
        # complete once `--post-deploy` has applied the rest.
        complete = phase != "online" or len(pending) == len(d.pending_revisions)
        recorded = to_version if complete else d.schema_version or to_version
        ensure_tables(engine, self.tables)
        self._declare_compatible(engine, d, phase)
        run_id = journal.start_run(
            engine,
            self.tables,
            kind=kind,
            trigger=trigger,
            lease_seconds=settings.lease_seconds,
            from_version=d.schema_version,
            to_version=to_version,
            from_revisions=d.database_revisions,
            steps=len(pending),
            client=self.client,
            phase=phase,
            note=note,
        )
        self.progress(
            "run",
            {"run_id": run_id, "steps": len(pending), "from": d.schema_version, "to": to_version},
        )
        who = records.identity()
        log.warning(
            "run #%d (%s, %s) started by %s@%s pid %s: %s to %s, %d revision(s)%s",
            run_id,
            f"{kind} --{phase}" if phase else kind,
            trigger,
            who["actor"],
            who["host"],
            who["pid"],
            d.schema_version or "-",
            to_version,
            len(pending),
            "" if backup else ", no backup",
        )
        saved: Backup | None = None
        sqlite = engine.url.get_backend_name() == "sqlite"
        beat = (
            contextlib.nullcontext()
            if sqlite
            else Heartbeat(engine, self.tables, run_id, settings.lease_seconds)
        )
        with beat, _stopped_by_signals():
            try:
                if backup:
                    self.progress("backup", {})
                    saved = create_backup(
                        engine,
                        Path(settings.backup_dir),
                        label=f"before-{to_version}",
                        schema_version=d.schema_version,
                        revisions=list(d.database_revisions),
                        checked=True,  # upgrade() ran the pre-flight before taking the lock
                    )
                    journal.update_run(
                        engine,
                        self.tables,
                        run_id,
                        backup_path=saved.path,
                        backup_checksum=saved.sha256,
                        backup_size=saved.size,
                    )
                    self.progress("backup_done", {"path": saved.path, "size": saved.size})
                applied = self._apply(engine, lock, run_id, target, pending, beat)
                self._close(engine, run_id, recorded)
            except BackupError as exc:
                log.error("run #%d: the backup failed, nothing was migrated: %s", run_id, exc)
                journal.finish_run(
                    engine,
                    self.tables,
                    run_id,
                    "failed",
                    error=f"backup failed, nothing was migrated: {exc}",
                )
                raise PreflightFailed(f"the backup failed, so nothing was migrated: {exc}") from exc
            except MigrationFailed as exc:
                log.error("run #%d failed: %s", run_id, exc)
                journal.finish_run(engine, self.tables, run_id, "failed", error=str(exc))
                raise
            except Stopped as exc:
                log.error("run #%d stopped by %s", run_id, exc)
                journal.finish_run(
                    engine, self.tables, run_id, "interrupted", note=f"stopped by {exc}"
                )
                raise
        verb = "installed" if kind == "install" else "upgraded"
        message = f"{verb} to {to_version}"
        if not complete:
            left = len(d.pending_revisions) - len(pending)
            message = (
                f"applied {len(pending)} revision(s) online; {left} post-deploy revision(s) "
                f"wait until every node runs {to_version}: then run "
                f"`{settings.cli} upgrade --post-deploy`"
            )
        log.warning("run #%d succeeded: %s", run_id, message)
        return Outcome(kind, message, run_id, d.schema_version, recorded, applied, saved)

    def _declare_compatible(self, engine: Engine, d: Diagnosis, phase: str | None) -> None:
        """Before an online run: the code that matches the database now keeps working on
        the schema it makes (and code declared so before it, too). Before any other run:
        nothing older is declared to work any more."""
        if d.state_row_id is None:
            return
        heads = (
            records.join_revisions(set(d.compatible_heads) | set(d.database_revisions))
            if phase == "online"
            else None
        )
        if heads == (records.join_revisions(d.compatible_heads) or None):
            return
        state = self.tables.state
        with engine.begin() as conn:
            conn.execute(
                state.update().where(state.c.id == d.state_row_id).values(compatible_heads=heads)
            )
        log.warning("compatible heads of the schema: %s", heads or "none (cleared)")

    def _apply(
        self,
        engine: Engine,
        lock: Any,
        run_id: int,
        target: Target,
        pending: list[Revision],
        beat: Any,
    ) -> list[str]:
        """One Alembic pass to `target`, journalled step by step as Alembic applies them."""
        cfg = migration_config(Path(self.settings.migrations), engine.url)
        graph = self.code.graph
        script = graph.script if graph and graph.script else ScriptDirectory.from_config(cfg)
        plan = plan_upgrade(script, target, self._current_revisions(engine))
        steps = _Steps(self, engine, lock, run_id, plan, len(pending))
        if isinstance(beat, Heartbeat):
            beat.tick = steps.tick  # the progress, written from the heartbeat's thread
        try:
            run_upgrade(cfg, target, steps, self.app(), script)
        except Stopped:
            raise
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt):
                raise Stopped("Ctrl-C (SIGINT)") from exc
            raise MigrationFailed(steps.failed(exc)) from exc
        finally:
            if isinstance(beat, Heartbeat):
                beat.tick = None
        steps.finished()
        steps.flush()  # the last steps' rows, on a server
        wanted = (
            (graph.heads if graph else ())
            if target == "heads"
            else (target,)
            if isinstance(target, str)
            else target
        )
        if graph and graph.ancestry(wanted) - graph.ancestry(self._current_revisions(engine)):
            raise MigrationFailed(
                steps.failed(
                    RuntimeError(
                        "the migrations ran but alembic_version does not show them: the "
                        "application's env.py did not commit (is its connection already in a "
                        "transaction?)"
                    )
                )
            )
        return steps.done

    def _failure(
        self, engine: Engine, position: int, total: int, revision: str | None, exc: BaseException
    ) -> str:
        graph = self.code.graph
        node = graph.revisions.get(revision) if graph and revision else None
        where = (
            f"step {position} of {total} ({revision}: {node.message if node else ''})"
            if revision
            else "before the first revision ran"
        )
        message = f"{where} failed: {describe_error(exc, engine.url)}"
        if revision and engine.url.get_backend_name() in ("mysql", "mariadb"):
            message += (
                f". MariaDB/MySQL commits schema changes as they run, so revision {revision} "
                "may be partly applied"
            )
        return redact(message, engine.url)

    def _current_revisions(self, engine: Engine) -> tuple[str, ...]:
        table = self.settings.version_table
        with engine.connect() as conn:
            return storage.read_revisions(conn, table) if inspect(conn).has_table(table) else ()

    def _close(self, engine: Engine, run_id: int, version: str) -> None:
        """Record the version and close the run, in one transaction: never one without the other."""
        with engine.begin() as conn:
            facts = storage.read_facts(conn, self.tables, self.settings.version_table)
            keep = facts.states[0] if len(facts.states) == 1 else None
            storage.write_single_state(conn, self.tables, version, keep)
            conn.execute(
                self.tables.runs.update()
                .where(self.tables.runs.c.id == run_id)
                .values(
                    status="succeeded",
                    finished_at=times.utcnow(),
                    lease_expires_at=None,
                    to_revisions=records.join_revisions(facts.revisions),
                )
            )

    # ------------------------------------------------------------- install

    def install(self, *, release: str | None = None, trigger: str = "cli") -> Outcome:
        code = self.code
        if code.graph is None or not code.graph.revisions or code.graph.splits:
            problem = code.error or (
                f"heads {', '.join(code.heads)} split one branch"
                if code.graph and code.graph.splits
                else "no revisions"
            )
            raise Refused(f"the code's migrations cannot be used: {problem}", EXIT_REFUSED_AHEAD)
        version, target = self._release_target(release)
        with self._engine() as engine:
            self._refuse_non_empty(engine)
            with self._locked(engine) as lock:
                self._refuse_non_empty(engine)
                d = self.diagnose(engine)
                wanted = code.graph.ancestry(code.heads if target == "heads" else [target])
                pending = [r for r in code.graph.pending(()) if r.id in wanted]
                harmful = [r.id for r in pending if r.drops & code.guard_tables]
                if harmful:
                    raise Refused(
                        f"revision(s) {', '.join(harmful)} would drop or alter upgrader's own "
                        "tables: this release cannot be installed (see `status`)",
                        EXIT_REFUSED_AHEAD,
                    )
                return self._run(
                    engine,
                    lock,
                    d,
                    pending,
                    target,
                    backup=False,
                    trigger=trigger,
                    kind="install",
                    to_version=version,
                )

    def _release_target(self, release: str | None) -> tuple[str, str]:
        code_version = self.code.version.raw
        if release is None or release == code_version:
            return code_version, "heads"
        parsed = parse_version(release)
        if not parsed.valid:
            raise Refused(f"--release: {parsed.error}")
        if (compare(parsed, self.code.version) or 0) > 0:
            raise Refused(f"release {release} is newer than this code ({code_version})")
        target = self.settings.releases.get(release)
        if target is None:
            known = ", ".join(self.settings.releases) or "none configured (UPGRADER_RELEASES)"
            raise Refused(f"release {release} is not known; known releases: {known}")
        return release, target

    def _refuse_non_empty(self, engine: Engine) -> None:
        d = self.diagnose(engine)
        if d.state is State.DATABASE_UNAVAILABLE:
            raise Refused(
                f"the database cannot be reached: {'; '.join(d.details)}", EXIT_UNAVAILABLE
            )
        if d.state is State.UPGRADE_RUNNING:
            raise AlreadyRunning(self._busy_message(d))
        if d.state is not State.NOT_INSTALLED:
            raise Refused(
                f"this database is already installed ({d.state.value}); install never "
                f"writes over existing data. {d.fix}".strip()
            )
        data = foreign_tables(engine, self.settings)
        if data:
            raise Refused(
                f"this database already holds tables ({', '.join(data)}); install "
                "writes only into an empty database"
            )

    # -------------------------------------------------------- backup, restore

    def backup(self, trigger: str = "cli") -> Backup:
        with self._engine() as engine:
            problems = preflight(engine, Path(self.settings.backup_dir))
            if problems:
                raise PreflightFailed("; ".join(problems))
            with self._locked(engine):
                d = self.diagnose(engine)
                try:
                    saved = create_backup(
                        engine,
                        Path(self.settings.backup_dir),
                        label="manual",
                        schema_version=d.schema_version,
                        revisions=list(d.database_revisions),
                        checked=True,
                    )
                except BackupError as exc:
                    raise EngineError(str(exc)) from exc
                with engine.begin() as conn:
                    self._journal(
                        conn,
                        d,
                        "backup",
                        trigger,
                        "backup verified",
                        backup_path=saved.path,
                        backup_checksum=saved.sha256,
                        backup_size=saved.size,
                    )
                return saved

    def restore(self, path: Path, trigger: str = "cli") -> Backup:
        """Make the database what the backup holds, except its journal: what happened
        since the backup was taken stays in the history, and the restore is an entry of
        its own."""
        with self._engine() as engine, self._locked(engine):
            history = journal.save(engine, self.tables)
            try:
                restored = restore_backup(engine, path)
            except BackupError as exc:
                raise EngineError(str(exc)) from exc
            ensure_tables(engine, self.tables)
            with engine.begin() as conn:
                if history is not None:
                    journal.put_back(
                        conn, self.tables, history, "its process was gone when the database "
                        "was restored",
                    )  # fmt: skip
                else:  # no journal before: the backup's runs that were open are over
                    conn.execute(
                        self.tables.runs.update()
                        .where(self.tables.runs.c.status == "running")
                        .values(
                            status="aborted",
                            finished_at=times.utcnow(),
                            note=f"the database was restored from {restored.path}",
                        )
                    )
                journal.journal_entry(
                    conn,
                    self.tables,
                    kind="restore",
                    trigger=trigger,
                    from_version=None,
                    to_version=restored.schema_version or "-",
                    revisions=restored.revisions or [],
                    note=f"restored from {restored.path} (taken {restored.created_at})",
                )
            log.warning("database restored from %s (taken %s)", restored.path, restored.created_at)
            return restored

    # ----------------------------------------------------------------- stamp

    def stamp(self, revisions: list[str], *, purge: bool = False, trigger: str = "cli") -> str:
        """Record revisions in Alembic's version table without migrating (the repair the
        diagnosis names for a lost or overlapping alembic_version), under the lock."""
        graph = self.code.graph
        unknown = [r for r in revisions if graph is None or not graph.known(r)]
        if unknown and not set(unknown) <= {"head", "heads", "base"}:
            raise Refused(f"revision(s) {', '.join(unknown)} are not part of this code")
        with self._engine() as engine, self._locked(engine):
            d = self.diagnose(engine)
            if d.state is State.DATABASE_UNAVAILABLE:
                raise Refused(
                    f"the database cannot be reached: {'; '.join(d.details)}", EXIT_UNAVAILABLE
                )
            cfg = migration_config(Path(self.settings.migrations), engine.url)
            stamp_revisions(cfg, revisions, purge, self.app())
            after = self._current_revisions(engine)
            with engine.begin() as conn:
                self._journal(
                    conn,
                    d,
                    "stamp",
                    trigger,
                    f"alembic_version set to {', '.join(after) or 'nothing'} "
                    f"(was {', '.join(d.database_revisions) or 'nothing'}); no migration ran",
                    to_revisions=after,
                )
            return f"alembic_version now holds {', '.join(after) or 'nothing'}"

    def _journal(
        self, conn: Connection, d: Diagnosis, kind: str, trigger: str, note: str, **extra: Any
    ) -> None:
        """A journal entry for work done at once on the database `d` describes (where
        upgrader's tables exist: a backup of a database never installed has none)."""
        if inspect(conn).has_table(self.tables.runs.name):
            journal.journal_entry(
                conn,
                self.tables,
                kind=kind,
                trigger=trigger,
                from_version=d.schema_version,
                to_version=d.schema_version or "-",
                revisions=d.database_revisions,
                note=note,
                **extra,
            )

    # ---------------------------------------------------------------- repair

    def repair(self, trigger: str = "cli") -> str:
        """Drop the copies an interrupted batch migration left (`_alembic_tmp_<table>`),
        only where `<table>` itself is still there: then the copy holds nothing the
        database lacks. Under the lock, so never beside a running migration."""
        with self._engine() as engine, self._locked(engine):
            d = self.diagnose(engine)
            names = set(inspect(engine).get_table_names())
            leftovers = sorted(t for t in names if t.startswith(LEFTOVER))
            safe = [t for t in leftovers if t[len(LEFTOVER) :] in names]
            unsafe = sorted(set(leftovers) - set(safe))
            if unsafe:
                raise Refused(
                    f"{', '.join(unsafe)} may hold the only copy of its table's rows (the "
                    "original is gone): restore the backup taken before the upgrade instead"
                )
            if not safe:
                return "nothing to repair: no table left by an interrupted batch migration"
            with engine.begin() as conn:
                for table in safe:
                    name = conn.dialect.identifier_preparer.quote(table)
                    conn.execute(text(f"DROP TABLE {name}"))
                self._journal(
                    conn,
                    d,
                    "repair",
                    trigger,
                    f"dropped {', '.join(safe)}, left by an interrupted batch migration",
                )
            return f"dropped {', '.join(safe)}; run the upgrade again"

    # ---------------------------------------------------------------- unlock

    def unlock(self, *, force: bool = False) -> str:
        """Close a run whose process is gone. With `force`, also one whose process lives
        (stopped, hung, or on a host that is gone): its database sessions are ended (on
        SQLite, where the process itself holds the lock, the process is killed), so it can
        change nothing more; PostgreSQL rolls back what it had not committed."""
        with self._engine() as engine:
            d = self.diagnose(engine)
            alive = d.state is State.UPGRADE_RUNNING
            if alive and not force:
                raise Refused(
                    self._busy_message(d) + "; it is alive (its process holds the lock). "
                    f"{d.fix} `unlock --force` ends it from here instead"
                )
            ended = self._end_live_run(engine, d) if alive else []
            if ended:
                d = self.diagnose(engine)
            run = d.run
            if run is None or run.status != "running":
                return "nothing to unlock: no run is open" if not ended else "; ".join(ended)
            with self._locked(engine):  # never while another process really holds the lock
                lingering = self._end_session(engine, run.db_session)
            note = "cleared by `upgrader unlock`" + (" --force" if force else "")
            if ended:
                note += ": " + "; ".join(ended)
            journal.finish_run(engine, self.tables, run.id, "aborted", note=note)
            log.warning("run #%d closed by unlock%s", run.id, f" ({note})" if ended else "")
            done = f"run #{run.id} is closed{lingering}"
            if ended:
                done += " (" + "; ".join(ended) + ")"
            return f"{done}; run the upgrade again to finish it"

    def _end_live_run(self, engine: Engine, d: Diagnosis) -> list[str]:
        """End what keeps a live run's lock: its process (SQLite, this host: the lock is
        the process's own) or its database sessions. Says what was done."""
        run = d.run
        if engine.url.get_backend_name() == "sqlite":
            pid, host = (run.pid, run.host) if run else (lockfile.holder(engine.url.database)
                                                         or (None, None))  # fmt: skip
            state = processes.of_run(host, pid)
            if pid is None or state is None or pid == os.getpid():
                raise Refused(
                    f"the run's process (pid {pid} on {host}) holds the SQLite database's "
                    "lock, and this host cannot end it: end it on its host"
                )
            if state in (processes.RUNNING, processes.STOPPED):
                os.kill(pid, signal.SIGKILL)
                _wait_gone(pid)
                return [f"its process {pid} ({state}) was killed"]
            return []
        ended = []
        with engine.connect() as conn:
            sessions = [lockfile.server_lock_holder(conn), run.db_session if run else None]
            for session in dict.fromkeys(s for s in sessions if s):
                if conn.dialect.name == "postgresql":
                    conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": int(session)})
                else:
                    with contextlib.suppress(Exception):
                        conn.execute(text(f"KILL {int(session)}"))
                ended.append(session)
            conn.commit()
        if not ended:
            return []
        who = f" (pid {run.pid} on {run.host})" if run else ""
        return [
            f"its database session(s) {', '.join(ended)} were ended: its process{who} can "
            "change nothing more, and stops with an error if it resumes"
        ]

    def _end_session(self, engine: Engine, session: str | None) -> str:
        """End the dead run's statement still running in the server (it would hold its
        locks, and the next run's backup would wait behind it)."""
        if not session:
            return ""
        with engine.connect() as conn:
            if lingering_statement(conn, session) is None:
                return ""
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": int(session)})
            else:
                conn.execute(text(f"KILL {int(session)}"))
            conn.commit()
        return f", and its database session {session} was ended"


def _wait_gone(pid: int, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and processes.state_of(pid) == processes.RUNNING:
        time.sleep(0.05)


LEFTOVER = "_alembic_tmp_"
"""The prefix of the copies Alembic's batch mode makes (SQLite's move-and-copy)."""


class Stopped(EngineError):
    """The run was stopped from outside (Ctrl-C, SIGTERM): it is journalled as interrupted."""

    exit_code = 130  # as a shell reports a command ended by SIGINT


@contextlib.contextmanager
def _stopped_by_signals() -> Iterator[None]:
    """While a run is open, SIGTERM (a service stop, `kill`) raises Stopped like Ctrl-C, so
    the journal says "interrupted" before the process ends. Only the main thread can."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise Stopped(signal.Signals(signum).name)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    except KeyboardInterrupt as exc:
        raise Stopped("Ctrl-C (SIGINT)") from exc
    finally:
        signal.signal(signal.SIGTERM, previous)


class _Steps:
    """The migration hooks: step k of n journalled as Alembic applies each revision.

    On SQLite the journal is written on the migration's own connection, inside its
    transaction: another connection could not write while the migration holds the write
    lock; and there a statement costs no round trip. On a server the heartbeat's thread
    writes the progress and the finished steps' rows on upgrader's own connection, at
    most every Heartbeat.TICK seconds: every node sees "step k of n" within that, also
    while one long revision runs, and a chain of quick revisions costs the migration no
    round trip per revision. The upgrade lock is checked at the same pace.
    """

    CHECK_EVERY = 0.5

    def __init__(
        self, runner: Runner, engine: Engine, lock: Any, run_id: int, plan: list[str], steps: int
    ) -> None:
        self.runner, self.engine, self.lock, self.run_id = runner, engine, lock, run_id
        self.tables = runner.tables
        self.sqlite = engine.url.get_backend_name() == "sqlite"
        self.lease = None if self.sqlite else runner.settings.lease_seconds
        self.plan = plan
        self.done: list[str] = []
        self.rows: list[dict[str, Any]] = []  # finished steps not written yet
        # applied by Alembic, not committed yet: (position, revision, duration, row)
        self.uncommitted: list[tuple[int, str, float, dict[str, Any]]] = []
        self.committing: list[tuple[int, str, float, dict[str, Any]]] = []
        self.dirty = False
        self.mutex = threading.Lock()  # the migration's thread and the heartbeat's
        self.started = self.checked = time.monotonic()
        self.started_at = times.utcnow()
        # The first step is journalled before Alembic holds any lock, so even on SQLite
        # others see "step 1 of n" while it runs; later steps commit with the one before.
        with engine.begin() as conn:
            if len(plan) != steps:
                self._set_steps(conn)
            self._at_step(conn)
        self._announce()

    def _set_steps(self, conn: Connection) -> None:
        runs = self.tables.runs
        conn.execute(runs.update().where(runs.c.id == self.run_id).values(steps=len(self.plan)))

    def _message(self, revision: str) -> str:
        graph = self.runner.code.graph
        node = graph.revisions.get(revision) if graph else None
        return node.message if node else ""

    def _at_step(self, conn: Connection) -> None:
        """Write the finished steps' rows and where the run is now (holding the mutex)."""
        journal.record_steps(conn, self.tables, self.rows)
        self.rows, self.dirty = [], False
        position = len(self.done)
        if position < len(self.plan):  # the one running now
            revision, position = self.plan[position], position + 1
        elif self.done:  # all done: the last one
            revision = self.done[-1]
        else:
            return
        journal.at_step(
            conn, self.tables, self.run_id, position, revision, self._message(revision), self.lease
        )

    def _announce(self) -> None:
        position = len(self.done)
        if position < len(self.plan):
            revision = self.plan[position]
            self.runner.progress(
                "step",
                {
                    "position": position + 1,
                    "total": len(self.plan),
                    "revision": revision,
                    "message": self._message(revision),
                },
            )

    def configured(self, connection: Connection | None) -> None:
        """Follow the migration connection's transactions (a step is done once committed),
        note its server session (if this process dies, its statement may live on in the
        server, and `status` can then name it), and bound how long its statements wait for a
        table lock: a migration stuck behind the application's traffic fails with a clear
        error rather than hold the site down without end."""
        if connection is None:
            return
        event.listen(connection, "commit", self._commit_asked)
        event.listen(connection, "begin", self._commit_over)
        event.listen(connection, "rollback", self._rolled_back)
        if self.sqlite:
            return
        seconds = self.runner.settings.lock_timeout
        if self.engine.dialect.name == "postgresql":
            query = "SELECT pg_backend_pid()"
            limit = f"SET lock_timeout = {int(seconds * 1000)}"
        else:
            query = "SELECT CONNECTION_ID()"
            limit = f"SET SESSION lock_wait_timeout = {max(1, int(seconds))}"
        with contextlib.suppress(Exception):
            connection.exec_driver_sql(limit)
        with contextlib.suppress(Exception):
            session = connection.exec_driver_sql(query).scalar()
            journal.update_run(self.engine, self.tables, self.run_id, db_session=str(session))

    def planned(self, revisions: list[str], connection: Connection | None) -> None:
        """Alembic's plan, from the version table it just read: ours unless another process
        moved the database in between (it cannot while we hold the lock, but say so if so)."""
        if revisions == self.plan:
            return
        with self.mutex:
            self.plan = revisions
        self.flush(connection)

    def applied(self, revision: str, connection: Connection | None) -> None:
        """Alembic has run `revision` and moved its version table, inside the migration's
        transaction: done once that commits (`_commit_over`), which may be now (one
        transaction per revision) or with the last one (one for the whole run)."""
        duration = time.monotonic() - self.started
        position = len(self.done) + 1
        message = self._message(revision)
        row = journal.step_row(
            self.run_id, position, revision, message, "succeeded", self.started_at, duration
        )
        with self.mutex:
            self.done.append(revision)
            if self.sqlite:  # written inside the migration's transaction: it commits with it
                self.rows.append(row)
            self.uncommitted.append((position, revision, duration, row))
            self.dirty = True
        log.info("run #%d: step %d of %d, %s, applied in %.2fs", self.run_id, position,
                 len(self.plan), revision, duration)  # fmt: skip
        if self.sqlite or time.monotonic() - self.checked >= self.CHECK_EVERY:
            try:
                self.lock.check()
            except LockLost as exc:
                raise MigrationFailed(f"stopped after {revision}: {exc}") from exc
            self.checked = time.monotonic()
        if self.sqlite:
            self.flush(connection)
        self.started, self.started_at = time.monotonic(), times.utcnow()
        self._announce()

    def _commit_asked(self, connection: Connection) -> None:
        """The migration's transaction is about to commit (SQLAlchemy's event comes before
        the database has answered): what it holds is done once the next transaction
        begins, or the run ends."""
        with self.mutex:
            self.committing, self.uncommitted = self.committing + self.uncommitted, []

    def _commit_over(self, connection: Connection | None = None) -> None:
        with self.mutex:
            committed, self.committing = self.committing, []
            if not self.sqlite:
                self.rows.extend(row for *_, row in committed)
        if not committed:
            return
        first, last = committed[0], committed[-1]
        log.info("run #%d: step(s) %d to %d committed", self.run_id, first[0], last[0])
        self.runner.progress(
            "step_done",
            {
                "position": last[0],
                "first": first[0],
                "total": len(self.plan),
                "revision": last[1],
                "duration": last[2],
            },
        )

    def _rolled_back(self, connection: Connection) -> None:
        with self.mutex:
            self.committing = []

    def finished(self) -> None:
        """Alembic's pass is over: its last commit has been answered."""
        self._commit_over()

    def tick(self) -> None:
        """From the heartbeat's thread: write what changed since the last tick."""
        if self.dirty:
            self.flush()

    def flush(self, connection: Connection | None = None) -> None:
        with self.mutex:
            if self.sqlite and connection is not None:
                self._at_step(connection)
            else:
                with self.engine.begin() as conn:
                    self._at_step(conn)

    def failed(self, exc: BaseException) -> str:
        """Journal the failed step (the migration's transaction is gone: on our own
        connection now), mark steps a rollback undid, and say what happened."""
        engine, position = self.engine, len(self.done) + 1
        revision = self.plan[position - 1] if position <= len(self.plan) else None
        with contextlib.suppress(Exception), engine.begin() as conn:
            values: dict[str, Any] = {"step": position if revision else len(self.done)}
            if revision:
                values.update(revision=revision, message=self._message(revision))
                duration = time.monotonic() - self.started
                self.rows.append(
                    journal.step_row(
                        self.run_id,
                        position,
                        revision,
                        self._message(revision),
                        "failed",
                        self.started_at,
                        duration,
                    )
                )
            with self.mutex:
                # what the run applied but had not committed, for undo_steps to judge
                uncommitted = [row for *_, row in self.committing + self.uncommitted]
                if not self.sqlite:
                    self.rows.extend(uncommitted)
                journal.record_steps(conn, self.tables, self.rows)
                self.rows, self.committing, self.uncommitted = [], [], []
            runs = self.tables.runs
            conn.execute(runs.update().where(runs.c.id == self.run_id).values(**values))
        with contextlib.suppress(Exception):
            graph = self.runner.code.graph
            kept = graph.ancestry(self.runner._current_revisions(engine)) if graph else set()
            journal.undo_steps(engine, self.tables, self.run_id, kept)
        return self.runner._failure(engine, position, len(self.plan), revision, exc)


def foreign_tables(engine: Engine, settings: Settings) -> list[str]:
    """Tables a fresh install would write over (upgrader's own and Alembic's do not count)."""
    if missing_sqlite_file(engine.url) is not None:
        return []
    tables = define_tables(settings.table_prefix)
    ours = {*(t.name for t in tables.all), settings.version_table}
    return sorted(set(inspect(engine).get_table_names()) - ours)


# ------------------------------------------------------------- detached runs


def settings_environment(settings: Settings) -> dict[str, str]:
    """The settings as UPGRADER_* variables, so a child process resolves the same ones.

    Passed through the environment, not the command line, because the database
    URL may hold a password.
    """
    env = {
        "UPGRADER_DATABASE_URL": settings.database_url,
        "UPGRADER_MIGRATIONS": str(settings.migrations),
        "UPGRADER_VERSION_TABLE": settings.version_table,
        "UPGRADER_TABLE_PREFIX": settings.table_prefix,
        "UPGRADER_BACKUP_DIR": str(Path(settings.backup_dir).resolve()),
        "UPGRADER_CONNECT_TIMEOUT": str(settings.connect_timeout),
        "UPGRADER_LEASE_SECONDS": str(settings.lease_seconds),
        "UPGRADER_LOCK_TIMEOUT": str(settings.lock_timeout),
    }
    if settings.code_version:
        env["UPGRADER_CODE_VERSION"] = settings.code_version
    if settings.distribution:
        env["UPGRADER_DISTRIBUTION"] = settings.distribution
    if settings.app_ref:
        env["UPGRADER_APP"] = settings.app_ref
    if settings.installer_dir:
        env["UPGRADER_INSTALLER_DIR"] = str(settings.installer_dir)
    if settings.upgrade_from:
        env["UPGRADER_UPGRADE_FROM"] = settings.upgrade_from
    if settings.releases:
        env["UPGRADER_RELEASES"] = ",".join(f"{k}={v}" for k, v in settings.releases.items())
    return env


def start_detached(
    settings: Settings,
    *,
    command: str = "upgrade",
    backup: bool = True,
    trigger: str = "web",
    log_dir: Path | None = None,
    client: str | None = None,
    extra: tuple[str, ...] = (),
) -> subprocess.Popen[bytes]:
    """Start `upgrader upgrade` (or `install`) in a process of its own, in a new session.

    No HTTP request, worker timeout or closed terminal can interrupt it; the
    caller follows its progress in the journal.
    """
    log_dir = Path(log_dir or settings.backup_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    log = open(log_dir / "upgrade.log", "ab")  # noqa: SIM115 (the child owns it)
    argv = [sys.executable, "-m", "upgrader", command, "--yes", "--trigger", trigger]
    if command == "upgrade" and not backup:
        argv.append("--no-backup")
    if client:
        argv += ["--client", client]
    argv += extra  # --online, --post-deploy, --force
    env = {k: v for k, v in os.environ.items() if not k.startswith("UPGRADER_")}
    env.update(settings_environment(settings))
    env["UPGRADER_LOG_LEVEL"] = "INFO"  # the run's log, in upgrade.log beside its output
    try:
        process = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            close_fds=True,
        )
    finally:
        log.close()
    # Reap it when it ends (a web server lives on: no zombie left behind per run).
    threading.Thread(target=process.wait, name="upgrader-reaper", daemon=True).start()
    return process
