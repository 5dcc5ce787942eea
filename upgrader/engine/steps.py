"""The step journal of a run: step k of n written as Alembic applies each revision, a step
called done only once the database has committed it, and what a failure leaves.

On SQLite the journal is written on the migration's own connection, between two
revisions (another connection could not write while the migration holds the write lock),
inside the migration's transaction when the env.py holds the whole pass in one, at most
every CHECK_EVERY seconds: written with each revision, the run's row added its table's
page to every commit, 2,000 writes beside Alembic's 7,000 on a chain of 500 quick
revisions (issue 21). On a server the heartbeat's thread writes the
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
import datetime as dt
import logging
import threading
import time
from typing import Any

from sqlalchemy import Connection, Engine

from upgrader.core import journal
from upgrader.core.database import describe_error, redact
from upgrader.engine.exits import MigrationFailed
from upgrader.engine.locks import LockLost, UpgradeLock
from upgrader.engine.site import Installation

log = logging.getLogger("upgrader")


class StepJournal:
    """The migration hooks (migrate.Hooks): step k of n journalled as Alembic applies each
    revision, where the module's docstring says.

    One hook per revision (`settled`) notes when the step ended, tells its commit and
    announces the next step; the steps' rows are made from those notes when they are
    written, in batches."""

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
        self.done: list[str] = []  # the revisions applied, in order
        self.ends: list[float] = []  # when each of them ended (time.monotonic())
        self.committed = 0  # how many of them the database has committed
        self.written = 0  # how many have their row written (SQLite: maybe uncommitted)
        self.durable = 0  # how many rows are committed
        self.shown = (0, 0)  # (applied, committed) as the journal last said
        self.env_ran = False  # the application's env.py reached context.configure()
        self.mutex = threading.Lock()  # around writes: the migration's thread, the heartbeat's
        # The run's clock: a step's times are read off it when its row is written. Its
        # start is kept to the microsecond (times.utcnow() drops them); _clock drops them
        # from each time it gives.
        self.began = self.checked = time.monotonic()
        self.began_at = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        # The first step is journalled before Alembic holds any lock, so even on SQLite
        # others see "step 1 of n" while it runs; later ones at the pace the module says.
        with engine.begin() as conn:
            if len(plan) != steps:
                self._set_steps(conn)
            self._write(conn)
        self._announce(0)

    def _set_steps(self, conn: Connection) -> None:
        journal.update_in(conn, self.tables, self.run_id, steps=len(self.plan))

    def _message(self, revision: str) -> str:
        graph = self.site.code.graph
        node = graph.revisions.get(revision) if graph else None
        return node.message if node else ""

    def _clock(self, moment: float) -> dt.datetime:
        """A moment of the run's clock as upgrader stores times (core/times.py utcnow)."""
        since = dt.timedelta(seconds=moment - self.began)
        return (self.began_at + since).replace(microsecond=0)

    def _start(self, k: int) -> float:
        """When step k+1 started: when the one before it ended, or the run's clock began."""
        return self.ends[k - 1] if k else self.began

    def _rows(self, first: int, upto: int) -> list[dict[str, Any]]:
        """The rows of steps first+1 to upto, as they succeeded."""
        rows = []
        for k in range(first, upto):
            started = self._start(k)
            ended, revision = self.ends[k], self.done[k]
            rows.append(
                journal.step_row(
                    self.run_id,
                    k + 1,
                    revision,
                    self._message(revision),
                    "succeeded",
                    self._clock(started),
                    ended - started,
                    self._clock(ended),
                )
            )
        return rows

    def _write(self, conn: Connection) -> None:
        """Write the rows not written yet and where the run is now (holding the mutex, or
        before the run starts): on a server the committed steps' rows, on SQLite (on the
        migration's connection) the applied ones'."""
        applied, committed = len(self.ends), self.committed
        upto = applied if self.sqlite else committed
        journal.record_steps(conn, self.tables, self._rows(self.written, upto))
        self.written, self.shown = max(self.written, upto), (applied, committed)
        if applied < len(self.plan):  # the one running now
            revision, position = self.plan[applied], applied + 1
        elif self.done:  # all done: the last one
            revision, position = self.done[-1], applied
        else:
            return
        message = self._message(revision)
        journal.at_step(conn, self.tables, self.run_id, position, revision, message, self.lease)

    def _announce(self, position: int) -> None:
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

    def settled(self, revision: str, connection: Connection | None) -> None:
        """Alembic asks for its next revision: `revision` has run and left Alembic's
        transaction for it, so it is committed unless the connection is still in a
        transaction (the env.py runs the whole pass in one). Then the next step starts."""
        now = time.monotonic()
        self.done.append(revision)
        self.ends.append(now)
        started = self._start(len(self.ends) - 1)  # the step that just ended
        log.info("run #%d: step %d of %d, %s, applied in %.2fs", self.run_id, len(self.done),
                 len(self.plan), revision, now - started)  # fmt: skip
        if connection is None or not connection.in_transaction():
            self._committed()
        if now - self.checked >= self.CHECK_EVERY:
            self._check(revision, connection)
        self._announce(len(self.done))

    def _check(self, revision: str, connection: Connection | None) -> None:
        """At most every CHECK_EVERY seconds: the upgrade lock is still ours (on SQLite our
        own flock: a no-op), and on SQLite the journal is written, as a server's heartbeat
        writes it."""
        try:
            self.lock.check()
        except LockLost as exc:
            raise MigrationFailed(f"stopped after {revision}: {exc}") from exc
        self.checked = time.monotonic()
        if self.sqlite:
            self.flush(connection)

    def _committed(self) -> None:
        """What was applied is committed: say so (on a server the heartbeat's next tick
        writes its rows; on SQLite the rows written inside the transaction committed)."""
        first, last = self.committed, len(self.ends)
        if first == last:
            return
        self.committed = last
        if self.sqlite:
            self.durable = self.written
        log.info("run #%d: step(s) %d to %d committed", self.run_id, first + 1, last)
        self.site.progress(
            "step_done",
            {
                "position": last,
                "first": first + 1,
                "total": len(self.plan),
                "revision": self.done[-1],
                "duration": self.ends[-1] - self._start(last - 1),
            },
        )

    def finished(self) -> None:
        """Alembic's pass is over: its last commit has been answered."""
        self._committed()

    def tick(self) -> None:
        """From the heartbeat's thread: write what changed since the last tick."""
        if self.shown != (len(self.ends), self.committed):
            self.flush()

    def flush(self, connection: Connection | None = None) -> None:
        """Write the journal: on SQLite on the migration's connection (inside its
        transaction if it is in one), else in a transaction of upgrader's own."""
        with self.mutex:
            if self.sqlite and connection is not None and connection.in_transaction():
                self._write(connection)  # commits with the migration (_committed)
                return
            if self.sqlite and connection is not None:
                with connection.begin():
                    self._write(connection)
            else:
                with self.engine.begin() as conn:
                    self._write(conn)
            self.durable = self.written

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
            started = self._start(len(self.ends))
            ended.append(
                journal.step_row(
                    self.run_id,
                    position,
                    revision,
                    message,
                    "failed",
                    self._clock(started),
                    time.monotonic() - started,
                )
            )
        self._write_ended(ended, values)
        return self._failure(position, revision, exc)

    def stopped(self) -> None:
        """A signal stopped the run: write the steps' rows not written yet."""
        self._write_ended([], {})

    def _write_ended(self, ended: list[dict[str, Any]], values: dict[str, Any]) -> None:
        """The rows not known committed: not written yet, or taken with the migration's
        transaction (undo_steps then marks the steps whose revisions the database lacks)."""
        engine = self.engine
        with contextlib.suppress(Exception), engine.begin() as conn:
            with self.mutex:
                applied = len(self.ends)
                rows = self._rows(self.durable, applied)
                journal.record_steps(conn, self.tables, [*rows, *ended])
                self.written = self.durable = applied
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
