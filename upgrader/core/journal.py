"""The journal: every write of upgrader's run and step rows is here.

A run's row is written as it goes (opened holding a lease, its step, closed with how it
ended); work that is done at once (a version recorded, a backup, a stamp, a restore, a
change of maintenance) is one row. Each write commits at once on its own connection
(or in the caller's transaction where it says so): the journal must say what happened
even when the process dies a moment later.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Dialect, Engine, Table, bindparam, inspect, select, text, true
from sqlalchemy.exc import DBAPIError

from upgrader.core.prepared import Prepared, prepare
from upgrader.core.records import identity, join_revisions
from upgrader.core.tables import Tables, tables_in
from upgrader.core.times import utcnow


def journal_entry(
    conn: Connection,
    tables: Tables,
    *,
    kind: str,
    trigger: str,
    from_version: str | None,
    to_version: str,
    revisions: Sequence[str],
    note: str,
    to_revisions: Sequence[str] | None = None,
    **extra: Any,
) -> None:
    """A journal row for work that finished at once (the revisions may have moved)."""
    now = utcnow()
    conn.execute(
        tables.runs.insert().values(
            kind=kind,
            status="succeeded",
            trigger=trigger,
            started_at=now,
            finished_at=now,
            from_version=from_version,
            to_version=to_version,
            from_revisions=join_revisions(revisions),
            to_revisions=join_revisions(revisions if to_revisions is None else to_revisions),
            note=note,
            **identity(),
            **extra,
        )
    )


def record_version(
    engine: Engine,
    tables: Tables,
    state_id: int,
    from_version: str | None,
    to_version: str,
    revisions: Sequence[str],
    trigger: str = "auto",
    note: str | None = None,
    kind: str = "version",
) -> bool:
    """Record a release that brings no migration: the state row moves from -> to, once.

    The UPDATE is conditional on the old version, so when several processes
    notice the new release at once exactly one of them writes the journal row.
    """
    now = utcnow()
    with engine.begin() as conn:
        result = conn.execute(
            tables.state.update()
            .where(tables.state.c.id == state_id)
            .where(tables.state.c.schema_version == from_version)
            .values(schema_version=to_version, updated_at=now)
        )
        if result.rowcount != 1:
            return False
        journal_entry(
            conn,
            tables,
            kind=kind,
            trigger=trigger,
            from_version=from_version,
            to_version=to_version,
            revisions=revisions,
            note=note or f"release {to_version} adds no migrations: version recorded on its own",
        )
    return True


def start_run(
    engine: Engine,
    tables: Tables,
    *,
    kind: str,
    trigger: str,
    lease_seconds: float,
    from_version: str | None,
    to_version: str,
    from_revisions: Sequence[str],
    steps: int,
    note: str | None = None,
    client: str | None = None,
    phase: str | None = None,
) -> int:
    """Close runs a dead process left open, and open a new one holding the lease."""
    now = utcnow()
    with engine.begin() as conn:
        conn.execute(
            tables.runs.update()
            .where(tables.runs.c.status == "running")
            .values(
                status="interrupted",
                finished_at=now,
                note="the process running it stopped; a later run took over",
            )
        )
        result = conn.execute(
            tables.runs.insert().values(
                kind=kind,
                status="running",
                trigger=trigger,
                started_at=now,
                heartbeat_at=now,
                lease_expires_at=now + dt.timedelta(seconds=lease_seconds),
                from_version=from_version,
                to_version=to_version,
                from_revisions=join_revisions(from_revisions),
                step=0,
                steps=steps,
                note=note,
                client=client,
                phase=phase,
                **identity(),
            )
        )
        run_id = result.inserted_primary_key[0] if result.inserted_primary_key else None
    assert run_id is not None
    return int(run_id)


def update_run(engine: Engine, tables: Tables, run_id: int, **values: Any) -> None:
    with engine.begin() as conn:
        conn.execute(tables.runs.update().where(tables.runs.c.id == run_id).values(**values))


def update_in(conn: Connection, tables: Tables, run_id: int, **values: Any) -> None:
    """The run's row, in the caller's transaction."""
    conn.execute(tables.runs.update().where(tables.runs.c.id == run_id).values(**values))


def close_succeeded(
    conn: Connection, tables: Tables, run_id: int, revisions: Sequence[str]
) -> None:
    """The run ended well, leaving `revisions` (in the transaction that records its version)."""
    conn.execute(
        tables.runs.update()
        .where(tables.runs.c.id == run_id)
        .values(
            status="succeeded",
            finished_at=utcnow(),
            lease_expires_at=None,
            to_revisions=join_revisions(revisions),
        )
    )


def abort_open(conn: Connection, tables: Tables, note: str) -> None:
    """Runs the journal still calls running are over (a restore brought them back)."""
    conn.execute(
        tables.runs.update()
        .where(tables.runs.c.status == "running")
        .values(status="aborted", finished_at=utcnow(), note=note)
    )


def finish_run(engine: Engine, tables: Tables, run_id: int, status: str, **values: Any) -> None:
    """Close the run, unless someone closed it already (`unlock --force` while its process
    was stopped): their account of it stands."""
    runs = tables.runs
    with engine.begin() as conn:
        conn.execute(
            runs.update()
            .where(runs.c.id == run_id, runs.c.status == "running")
            .values(status=status, finished_at=utcnow(), lease_expires_at=None, **values)
        )


def at_step(
    conn: Connection,
    tables: Tables,
    run_id: int,
    position: int,
    revision: str,
    message: str,
    lease_seconds: float | None,
) -> None:
    """The run is now at step `position`; with `lease_seconds`, renew the lease too. Once
    per revision: one statement, prepared once (core/prepared.py)."""
    plain, leased = _step_statements(tables, conn.dialect)
    values: dict[str, Any] = {"run": run_id, "at": position, "rev": revision, "text": message}
    if lease_seconds is None:
        plain.run(conn, [values])
        return
    now = utcnow()
    values.update(beat=now, until=now + dt.timedelta(seconds=lease_seconds))
    leased.run(conn, [values])


@functools.lru_cache(maxsize=8)
def _step_statements(tables: Tables, dialect: Dialect) -> tuple[Prepared, Prepared]:
    runs = tables.runs
    plain = (
        runs.update()
        .where(runs.c.id == bindparam("run"))
        .values(step=bindparam("at"), revision=bindparam("rev"), message=bindparam("text"))
    )
    leased = plain.values(heartbeat_at=bindparam("beat"), lease_expires_at=bindparam("until"))
    return prepare(plain, dialect), prepare(leased, dialect)


def step_row(
    run_id: int,
    position: int,
    revision: str,
    message: str,
    status: str,
    started_at: dt.datetime,
    duration: float,
    finished_at: dt.datetime | None = None,
) -> dict[str, Any]:
    """One row of `steps`: a step once it ended (succeeded or failed, now unless
    `finished_at` says when), with its duration."""
    return {
        "run_id": run_id,
        "position": position,
        "revision": revision,
        "message": message,
        "status": status,
        "started_at": started_at,
        "finished_at": finished_at or utcnow(),
        "duration": round(duration, 3),
    }


def record_steps(conn: Connection, tables: Tables, rows: list[dict[str, Any]]) -> None:
    """Finished steps' rows (step_row), in the caller's transaction, prepared once
    (core/prepared.py). Through psycopg several rows go in one COPY: its executemany
    spent 10 µs a row, 56 million instructions of a 500-revision run (issue 21)."""
    if len(rows) > 1 and conn.dialect.driver == "psycopg":
        _copy(conn, tables.steps, rows)
    elif rows:
        _steps_insert(tables, conn.dialect, tuple(rows[0])).run(conn, rows)


def _copy(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """`rows` into `table` with PostgreSQL's COPY, in the connection's transaction; its
    errors raised as SQLAlchemy's, as `execute` raises them."""
    columns = tuple(rows[0])
    quote = conn.dialect.identifier_preparer
    sql = (
        f"COPY {quote.format_table(table)} ({', '.join(quote.quote(c) for c in columns)}) "
        "FROM STDIN"
    )
    dbapi = conn.dialect.loaded_dbapi
    try:
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        with cursor, cursor.copy(sql) as copy:
            for row in rows:
                copy.write_row(tuple(row[c] for c in columns))
    except dbapi.Error as exc:
        raise DBAPIError.instance(sql, None, exc, dbapi.Error) from exc


@functools.lru_cache(maxsize=8)  # a dialect per engine: each run's env.py may make one
def _steps_insert(tables: Tables, dialect: Dialect, columns: tuple[str, ...]) -> Prepared:
    return prepare(tables.steps.insert(), dialect, columns)


def undo_steps(engine: Engine, tables: Tables, run_id: int, kept: set[str]) -> None:
    """Steps the journal saw applied that the database no longer has: a failure later in the
    same transaction rolled them back (PostgreSQL, with an env.py that runs all in one)."""
    with engine.begin() as conn:
        conn.execute(
            tables.steps.update()
            .where(tables.steps.c.run_id == run_id)
            .where(tables.steps.c.status == "succeeded")
            .where(tables.steps.c.revision.not_in(kept) if kept else true())
            .values(status="rolled back")
        )


def steps_of(engine: Engine, tables: Tables, run_id: int) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(tables.steps)
            .where(tables.steps.c.run_id == run_id)
            .order_by(tables.steps.c.position)
        ).mappings()
        return [dict(r) for r in rows]


Saved = dict[str, list[dict[str, Any]]]
"""The journal's rows (runs and steps), by table name, as `save` read them."""


def save(engine: Engine, tables: Tables) -> Saved | None:
    """Every row of the journal, to outlive a restore: the journal is the history of the
    database, not part of its content. None when the database has no journal yet."""
    with engine.connect() as conn:
        names = set(tables_in(conn))
        if tables.runs.name not in names:
            return None
        saved: Saved = {}
        for table in (tables.runs, tables.steps):
            if table.name not in names:
                saved[table.name] = []
                continue
            have = {c["name"] for c in inspect(conn).get_columns(table.name)}
            columns = [c for c in table.c if c.name in have]
            rows = conn.execute(select(*columns).order_by(table.c.id)).mappings()
            saved[table.name] = [dict(r) for r in rows]
    return saved


def put_back(conn: Connection, tables: Tables, saved: Saved, note: str) -> None:
    """Replace the journal a restore brought back (the backup's, as old as the backup) with
    the one `save` read before it, ids and all; a run the saved journal still calls
    running had no process any more (the restore held the upgrade lock)."""
    for table in (tables.steps, tables.runs):
        conn.execute(table.delete())
    for table in (tables.runs, tables.steps):
        rows = saved.get(table.name) or []
        if table is tables.runs:
            rows = [_closed(r, note) for r in rows]
        if rows:
            conn.execute(table.insert(), rows)
        if conn.dialect.name == "postgresql":  # the restored sequence lags the ids put back
            conn.execute(
                text(
                    f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                    f"COALESCE((SELECT MAX(id) FROM {table.name}), 0) + 1, false)"
                )
            )


def _closed(row: dict[str, Any], note: str) -> dict[str, Any]:
    if row.get("status") != "running":
        return row
    return {**row, "status": "interrupted", "finished_at": utcnow(), "note": note}
