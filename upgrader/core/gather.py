"""Gathering the database's facts: every read bounded by one deadline, and every failure a
fact too (a server that does not answer, a file that is not there, tables that cannot be
read, the SQLite file locked by a running upgrade), never an exception."""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy import Connection, Engine, inspect, text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from upgrader.core import lockfile, processes, storage
from upgrader.core.database import (
    describe_error,
    missing_sqlite_file,
    safe_url,
    statement_connection,
)
from upgrader.core.deadline import NoAnswer, within
from upgrader.core.facts import DatabaseFacts
from upgrader.core.tables import define_tables, forget_layout
from upgrader.settings import Settings


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
            conn = statement_connection(engine)
        except SQLAlchemyError as exc:
            return DatabaseFacts(reachable=False, error=_where(engine) + describe_error(exc, url))
        try:
            with conn:
                facts = storage.read_facts(conn, tables, settings.version_table, remember=True)
                facts = _with_run_facts(conn, facts, held)
                if _ended_meanwhile(facts):
                    conn.rollback()  # a fresh snapshot (MariaDB reads repeatably by default)
                    again = storage.read_facts(conn, tables, settings.version_table, remember=True)
                    facts = _with_run_facts(conn, again, held)
                return facts
        except (SQLAlchemyError, ValueError, TypeError, KeyError) as exc:
            reason = describe_error(exc, url)
            forget_layout(engine)  # a restore may have changed the tables
            if held and "database is locked" in reason:
                # SQLite: a long migration holds the write lock, and its process is alive.
                who = lockfile.holder(url.database)
                state = processes.of_run(who[1], who[0]) if who else None
                return DatabaseFacts(
                    busy=reason, lock_held=True, dialect="sqlite", holder=who, process=state
                )
            if attempt == 1 and (_layout_error(reason) or _stale(exc)):
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


def _stale(exc: Exception) -> bool:
    """A pooled connection the server had closed (a restart): the pool has dropped it and
    every connection as old, so the read is made again on a new one."""
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def _layout_error(reason: str) -> bool:
    """A table or column this process remembered is not there (any longer)."""
    lowered = reason.lower()
    return any(
        words in lowered
        for words in ("no such table", "no such column", "unknown column", "does not exist")
    ) or ("table" in lowered and "doesn't exist" in lowered)


def _ended_meanwhile(facts: DatabaseFacts) -> bool:
    """A run read as running whose server lock nobody holds: it may have ended between the
    two reads (a run commits its close, then lets the lock go), so its row is read again
    after the lock's answer; only a run still open then is one that was cut off."""
    run = facts.last_run
    return facts.lock_held is False and run is not None and run.status == "running"


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


def _where(engine: Engine) -> str:
    return f"{safe_url(engine.url)}: "
