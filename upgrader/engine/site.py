"""One installation as the engine's commands use it: its settings, its code (read once),
its tables, the application (for env.py files that need its context), the way progress is
reported, and the engine and lock a command works under."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy import Connection, Engine, inspect

from upgrader.core import journal, storage
from upgrader.core.database import answers, run_engine
from upgrader.core.diagnosis import CodeFacts, Diagnosis, diagnose, load_code_facts
from upgrader.core.tables import define_tables
from upgrader.engine.exits import EXIT_UNAVAILABLE, AlreadyRunning, Refused, busy_message
from upgrader.engine.locks import LockBusy, UpgradeLock, upgrade_lock
from upgrader.settings import Settings, load_app

Progress = Callable[[str, dict[str, Any]], None]
"""What a run reports as it goes ("run", "backup", "step", "step_done"…), for the CLI."""


def _quiet(event: str, data: dict[str, Any]) -> None:
    pass


class Installation:
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
        self._shared: Engine | None = None  # within session()

    @property
    def cli(self) -> str:
        return self.settings.cli

    def app(self) -> Any:
        """The application object, for env.py files that need its context (Flask-Migrate)."""
        if self._app is None and self.settings.app_ref:
            self._app = load_app(self.settings.app_ref)
        return self._app

    def diagnose(self, engine: Engine | None = None) -> Diagnosis:
        engine = engine or self._shared
        return diagnose(self.settings, code=self.code, engine=engine, record=False)

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """One engine for a whole command: its first diagnosis, the lock and the run share
        its pooled connections. A connection is a cost of its own (PyMySQL builds a TLS
        context for each: some 20 ms of CPU)."""
        self._shared = run_engine(self.settings)
        try:
            yield
        finally:
            self._shared.dispose()
            self._shared = None

    @contextlib.contextmanager
    def engine(self) -> Iterator[Engine]:
        """The engine for a command (the session's, within one); refused at once (69) when
        the server does not answer within the connect timeout: a dump or a migration
        against it would wait without end."""
        engine = self._shared or run_engine(self.settings)
        try:
            silent = answers(engine, self.settings.connect_timeout)
            if silent:
                raise Refused(f"the database cannot be reached: {silent}", EXIT_UNAVAILABLE)
            yield engine
        finally:
            if engine is not self._shared:
                engine.dispose()

    @contextlib.contextmanager
    def locked(self, engine: Engine) -> Iterator[UpgradeLock]:
        """The upgrade lock, or AlreadyRunning saying who holds it."""
        try:
            with upgrade_lock(engine) as lock:
                yield lock
        except LockBusy as exc:
            try:
                d: Diagnosis | None = self.diagnose()
            except Exception:
                d = None
            raise AlreadyRunning(busy_message(d) + f" [{exc}]") from exc

    def revisions(self, engine: Engine) -> tuple[str, ...]:
        """What alembic_version holds now."""
        table = self.settings.version_table
        with engine.connect() as conn:
            return storage.read_revisions(conn, table) if inspect(conn).has_table(table) else ()

    def journal(
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
