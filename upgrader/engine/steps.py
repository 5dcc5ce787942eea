"""The step journal of a run: step k of n written as Alembic applies each revision, a step
called done only once the database has committed it, and what a failure leaves.

On SQLite the journal is written on the migration's own connection, inside its
transaction (another connection could not write while the migration holds the write
lock), at most every CHECK_EVERY seconds: written with each revision, the run's row
added its table's page to every commit, 2,000 writes beside Alembic's 7,000 on a chain of
500 quick revisions (issue 21). On a server the heartbeat's thread writes the
progress and the finished steps' rows on upgrader's own connection, at most every
Heartbeat.TICK seconds, and checks the upgrade lock at the same pace: a chain of quick
revisions costs the migration no round trip per revision.

Readers see "step k of n" at once all the same, also while one long revision runs: the
version table commits with every revision, and the decision counts the run's revisions
it holds (core/decide.py, `_caught_up`). A run that fails or is stopped writes the rows
not written yet; a SIGKILL loses at most those of the last half second (the version
table, not the rows, is what a rerun resumes from).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any

from sqlalchemy import Connection, Engine

from upgrader.core import journal
from upgrader.core.database import describe_error, redact
from upgrader.core.times import utcnow
from upgrader.engine.exits import MigrationFailed
from upgrader.engine.locks import LockLost, UpgradeLock
from upgrader.engine.site import Installation

log = logging.getLogger("upgrader")


class StepJournal:
    """The migration hooks (migrate.Hooks): step k of n journalled as Alembic applies each
    revision, where the module's docstring says."""

    CHECK_EVERY = 0.5

    def __init__(
        self,
        site: Installation,
        engine: Engine,
        lock: UpgradeLock,
        run_id: int,
        plan: list[str],
        steps: int,
    ) -> None:
        self.site, self.engine, self.lock, self.run_id = site, engine, lock, run_id
        self.tables = site.tables
        self.sqlite = engine.url.get_backend_name() == "sqlite"
        self.lease = None if self.sqlite else site.settings.lease_seconds
        self.plan = plan
        self.done: list[str] = []
        self.rows: list[dict[str, Any]] = []  # finished steps not written yet
        # SQLite: rows written inside the migration's transaction, until it commits
        self.in_flight: list[dict[str, Any]] = []
        # applied by Alembic, not known to be committed yet: (position, revision, duration, row)
        self.pending: list[tuple[int, str, float, dict[str, Any]]] = []
        self.dirty = False
        self.env_ran = False  # the application's env.py reached context.configure()
        self.mutex = threading.Lock()  # the migration's thread and the heartbeat's
        self.started = self.checked = self.rows_written = time.monotonic()
        self.started_at = utcnow()
        # The first step is journalled before Alembic holds any lock, so even on SQLite
        # others see "step 1 of n" while it runs; later steps commit with the one before.
        with engine.begin() as conn:
            if len(plan) != steps:
                self._set_steps(conn)
            self._at_step(conn)
        self._announce()

    def _set_steps(self, conn: Connection) -> None:
        journal.update_in(conn, self.tables, self.run_id, steps=len(self.plan))

    def _message(self, revision: str) -> str:
        graph = self.site.code.graph
        node = graph.revisions.get(revision) if graph else None
        return node.message if node else ""

    def _at_step(self, conn: Connection) -> None:
        """Write the finished steps' rows and where the run is now (holding the mutex)."""
        journal.record_steps(conn, self.tables, self.rows)
        self.rows, self.rows_written = [], time.monotonic()
        self.dirty = False
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
            self.site.progress(
                "step",
                {
                    "position": position + 1,
                    "total": len(self.plan),
                    "revision": revision,
                    "message": self._message(revision),
                },
            )

    def configured(self, connection: Connection | None) -> None:
        """Note the migration connection's server session (if this process dies, its
        statement may live on in the server, and `status` can then name it), and bound how
        long its statements wait for a table lock: a migration stuck behind the
        application's traffic fails with a clear error rather than hold the site down
        without end. (No event listeners on it: they would tax each of the migrations' own
        statements.)"""
        self.env_ran = True
        if connection is None or self.sqlite:
            return
        seconds = self.site.settings.lock_timeout
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
        transaction: done once that commits (`settled`), which may be right after this
        (one transaction per revision) or with the last one (one for the whole run)."""
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
            self.pending.append((position, revision, duration, row))
            self.dirty = True
        log.info("run #%d: step %d of %d, %s, applied in %.2fs", self.run_id, position,
                 len(self.plan), revision, duration)  # fmt: skip
        if time.monotonic() - self.checked >= self.CHECK_EVERY:  # SQLite: our own flock, no-op
            try:
                self.lock.check()
            except LockLost as exc:
                raise MigrationFailed(f"stopped after {revision}: {exc}") from exc
            self.checked = time.monotonic()
        if self.sqlite and time.monotonic() - self.rows_written >= self.CHECK_EVERY:
            self.flush(connection)  # at the heartbeat's pace, as on a server

    def settled(self, connection: Connection | None) -> None:
        """Alembic asks for its next revision: the one before has left Alembic's
        transaction for it. Unless the connection is still in a transaction (the env.py
        runs the whole pass in one), what was applied is committed. Then the next step
        starts."""
        if connection is None or not connection.in_transaction():
            self._committed()
        self.started, self.started_at = time.monotonic(), utcnow()
        self._announce()

    def _committed(self) -> None:
        """What was applied is committed: say so, and (on a server) hand its rows to the
        heartbeat."""
        with self.mutex:
            committed, self.pending, self.in_flight = self.pending, [], []
            if not self.sqlite and committed:  # for the heartbeat's next tick
                self.rows.extend(row for *_, row in committed)
                self.dirty = True
        if not committed:
            return
        first, last = committed[0], committed[-1]
        log.info("run #%d: step(s) %d to %d committed", self.run_id, first[0], last[0])
        self.site.progress(
            "step_done",
            {
                "position": last[0],
                "first": first[0],
                "total": len(self.plan),
                "revision": last[1],
                "duration": last[2],
            },
        )

    def finished(self) -> None:
        """Alembic's pass is over: its last commit has been answered."""
        self._committed()

    def tick(self) -> None:
        """From the heartbeat's thread: write what changed since the last tick."""
        if self.dirty:
            self.flush()

    def flush(self, connection: Connection | None = None) -> None:
        """Write the journal: inside the migration's transaction on SQLite (`connection`),
        else in a transaction of upgrader's own."""
        with self.mutex:
            if self.sqlite and connection is not None:
                written = self.rows
                self._at_step(connection)
                self.in_flight.extend(written)
            else:
                with self.engine.begin() as conn:
                    self._at_step(conn)

    def failed(self, exc: BaseException) -> str:
        """Journal the failed step (the migration's transaction is gone: on our own
        connection now), mark steps a rollback undid, and say what happened."""
        position = len(self.done) + 1
        revision = self.plan[position - 1] if position <= len(self.plan) else None
        values: dict[str, Any] = {"step": position if revision else len(self.done)}
        ended = []
        if revision:
            message = self._message(revision)
            values.update(revision=revision, message=message)
            duration = time.monotonic() - self.started
            ended.append(
                journal.step_row(
                    self.run_id, position, revision, message, "failed", self.started_at, duration
                )
            )
        self._write_ended(ended, values)
        return self._failure(position, revision, exc)

    def stopped(self) -> None:
        """A signal stopped the run: write the steps' rows not written yet."""
        self._write_ended([], {})

    def _write_ended(self, ended: list[dict[str, Any]], values: dict[str, Any]) -> None:
        """The rows not written yet, and those the migration's transaction took with it
        (undo_steps then marks the steps whose revisions the database lacks)."""
        engine = self.engine
        with contextlib.suppress(Exception), engine.begin() as conn:
            with self.mutex:
                unsettled = self.in_flight if self.sqlite else [row for *_, row in self.pending]
                journal.record_steps(conn, self.tables, [*self.rows, *unsettled, *ended])
                self.rows, self.pending, self.in_flight = [], [], []
            if values:
                journal.update_in(conn, self.tables, self.run_id, **values)
        with contextlib.suppress(Exception):
            graph = self.site.code.graph
            kept = graph.ancestry(self.site.revisions(engine)) if graph else set()
            journal.undo_steps(engine, self.tables, self.run_id, kept)

    def _env_failed(self) -> str:
        """The application's env.py stopped before it reached its migrations: often for
        want of the alembic.ini it reads (config.config_file_name, fileConfig)."""
        settings = self.site.settings
        said = ". The application's env.py failed before it configured Alembic"
        if settings.alembic_config is None:
            said += (
                f"; upgrader found no alembic.ini naming {settings.migrations} as its "
                "script_location: if the env.py reads its config file, name it with "
                "--alembic-config (UPGRADER_ALEMBIC_CONFIG), as `alembic -c` would"
            )
        else:
            said += f" (with {settings.alembic_config})"
        return said

    def _failure(self, position: int, revision: str | None, exc: BaseException) -> str:
        """What went wrong, where, redacted."""
        engine, total = self.engine, len(self.plan)
        graph = self.site.code.graph
        node = graph.revisions.get(revision) if graph and revision else None
        where = (
            f"step {position} of {total} ({revision}: {node.message if node else ''})"
            if revision
            else "before the first revision ran"
        )
        message = f"{where} failed: {describe_error(exc, engine.url)}"
        if not self.env_ran:
            message += self._env_failed()
        if revision and engine.url.get_backend_name() in ("mysql", "mariadb"):
            message += (
                f". MariaDB/MySQL commits schema changes as they run, so revision {revision} "
                "may be partly applied"
            )
        return redact(message, engine.url)
