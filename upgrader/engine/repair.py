"""The commands that keep an installation in shape: a backup now, a restore, the repairs
`status` names (stamp, repair), and unlocking a run that holds the upgrade lock. Each
works under the upgrade lock, and is journalled."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from pathlib import Path

from sqlalchemy import Engine, inspect, text

from upgrader.core import journal, lockfile, processes
from upgrader.core.decide import LEFTOVER
from upgrader.core.diagnosis import Diagnosis
from upgrader.core.gather import lingering_statement
from upgrader.core.states import State
from upgrader.core.tables import ensure_tables
from upgrader.engine.backup import Backup, create_backup, preflight, restore_backup
from upgrader.engine.backuptools import BackupError
from upgrader.engine.exits import (
    EXIT_UNAVAILABLE,
    EngineError,
    PreflightFailed,
    Refused,
    busy_message,
)
from upgrader.engine.migrate import migration_config, stamp_revisions
from upgrader.engine.site import Installation

log = logging.getLogger("upgrader")


def backup(site: Installation, trigger: str = "cli") -> Backup:
    with site.engine() as engine:
        problems = preflight(engine, Path(site.settings.backup_dir))
        if problems:
            raise PreflightFailed("; ".join(problems))
        with site.locked(engine):
            d = site.diagnose(engine)
            try:
                saved = create_backup(
                    engine,
                    Path(site.settings.backup_dir),
                    label="manual",
                    schema_version=d.schema_version,
                    revisions=list(d.database_revisions),
                    checked=True,
                )
            except BackupError as exc:
                raise EngineError(str(exc)) from exc
            with engine.begin() as conn:
                site.journal(
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


def restore(site: Installation, path: Path, trigger: str = "cli") -> Backup:
    """Make the database what the backup holds, except its journal: what happened
    since the backup was taken stays in the history, and the restore is an entry of
    its own."""
    with site.engine() as engine, site.locked(engine):
        history = journal.save(engine, site.tables)
        try:
            restored = restore_backup(engine, path)
        except BackupError as exc:
            raise EngineError(str(exc)) from exc
        ensure_tables(engine, site.tables)
        with engine.begin() as conn:
            if history is not None:
                journal.put_back(
                    conn, site.tables, history, "its process was gone when the database "
                    "was restored",
                )  # fmt: skip
            else:  # no journal before: the backup's runs that were open are over
                note = f"the database was restored from {restored.path}"
                journal.abort_open(conn, site.tables, note)
            journal.journal_entry(
                conn,
                site.tables,
                kind="restore",
                trigger=trigger,
                from_version=None,
                to_version=restored.schema_version or "-",
                revisions=restored.revisions or [],
                note=f"restored from {restored.path} (taken {restored.created_at})",
            )
        log.warning("database restored from %s (taken %s)", restored.path, restored.created_at)
        return restored


def stamp(
    site: Installation, revisions: list[str], *, purge: bool = False, trigger: str = "cli"
) -> str:
    """Record revisions in Alembic's version table without migrating (the repair the
    diagnosis names for a lost or overlapping alembic_version), under the lock."""
    graph = site.code.graph
    unknown = [r for r in revisions if graph is None or not graph.known(r)]
    if unknown and not set(unknown) <= {"head", "heads", "base"}:
        raise Refused(f"revision(s) {', '.join(unknown)} are not part of this code")
    with site.engine() as engine, site.locked(engine):
        d = site.diagnose(engine)
        if d.state is State.DATABASE_UNAVAILABLE:
            raise Refused(
                f"the database cannot be reached: {'; '.join(d.details)}", EXIT_UNAVAILABLE
            )
        cfg = migration_config(site.settings, engine.url)
        stamp_revisions(cfg, revisions, purge, site.app())
        after = site.revisions(engine)
        with engine.begin() as conn:
            site.journal(
                conn,
                d,
                "stamp",
                trigger,
                f"alembic_version set to {', '.join(after) or 'nothing'} "
                f"(was {', '.join(d.database_revisions) or 'nothing'}); no migration ran",
                to_revisions=after,
            )
        return f"alembic_version now holds {', '.join(after) or 'nothing'}"


def repair(site: Installation, trigger: str = "cli") -> str:
    """Drop the copies an interrupted batch migration left (`_alembic_tmp_<table>`),
    only where `<table>` itself is still there: then the copy holds nothing the
    database lacks. Under the lock, so never beside a running migration."""
    with site.engine() as engine, site.locked(engine):
        d = site.diagnose(engine)
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
            site.journal(
                conn,
                d,
                "repair",
                trigger,
                f"dropped {', '.join(safe)}, left by an interrupted batch migration",
            )
        return f"dropped {', '.join(safe)}; run the upgrade again"


def unlock(site: Installation, *, force: bool = False) -> str:
    """Close a run whose process is gone. With `force`, also one whose process lives
    (stopped, hung, or on a host that is gone): its database sessions are ended (on
    SQLite, where the process itself holds the lock, the process is killed), so it can
    change nothing more; PostgreSQL rolls back what it had not committed."""
    with site.engine() as engine:
        d = site.diagnose(engine)
        alive = d.state is State.UPGRADE_RUNNING
        if alive and not force:
            raise Refused(
                busy_message(d) + "; it is alive (its process holds the lock). "
                f"{d.fix} `unlock --force` ends it from here instead"
            )
        ended = _end_live_run(site, engine, d) if alive else []
        if ended:
            d = site.diagnose(engine)
        run = d.run
        if run is None or run.status != "running":
            return "nothing to unlock: no run is open" if not ended else "; ".join(ended)
        with site.locked(engine):  # never while another process really holds the lock
            lingering = _end_session(engine, run.db_session)
        note = "cleared by `upgrader unlock`" + (" --force" if force else "")
        if ended:
            note += ": " + "; ".join(ended)
        journal.finish_run(engine, site.tables, run.id, "aborted", note=note)
        log.warning("run #%d closed by unlock%s", run.id, f" ({note})" if ended else "")
        done = f"run #{run.id} is closed{lingering}"
        if ended:
            done += " (" + "; ".join(ended) + ")"
        return f"{done}; run the upgrade again to finish it"


def _end_live_run(site: Installation, engine: Engine, d: Diagnosis) -> list[str]:
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
    _wait_released(engine, ended)
    who = f" (pid {run.pid} on {run.host})" if run else ""
    return [
        f"its database session(s) {', '.join(ended)} were ended: its process{who} can "
        "change nothing more, and stops with an error if it resumes"
    ]


def _end_session(engine: Engine, session: str | None) -> str:
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


def _wait_released(engine: Engine, sessions: list[str], seconds: float = 10.0) -> None:
    """Wait until the ended sessions no longer hold the upgrade lock: the server frees
    it only once the session's process has exited, a moment after it was told to."""
    deadline = time.monotonic() + seconds
    with engine.connect() as conn:
        while lockfile.server_lock_holder(conn) in sessions and time.monotonic() < deadline:
            conn.rollback()
            time.sleep(0.05)


def _wait_gone(pid: int, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and processes.state_of(pid) == processes.RUNNING:
        time.sleep(0.05)
