"""Reading upgrader's tables and Alembic's version table back: the database's facts, read
in one go (core/gather.py adds the deadline and the run's liveness). And the one write of
the state row that adoption and upgrades share.
"""

from __future__ import annotations

import functools
from dataclasses import replace
from typing import Any

from sqlalchemy import Connection, Select, inspect, select, text

from upgrader.core.facts import DatabaseFacts
from upgrader.core.records import (
    MAINTENANCE_MODES,
    Maintenance,
    Run,
    StateRow,
    split_revisions,
    typed,
)
from upgrader.core.tables import (
    Tables,
    columns,
    listed_tables,
    quote,
    remembered_tables,
    tables_in,
)
from upgrader.core.times import utcnow


def read_facts(
    conn: Connection,
    tables: Tables,
    version_table: str = "alembic_version",
    *,
    remember: bool = False,
) -> DatabaseFacts:
    """Read alembic_version, the state rows and the last run. A few cheap queries.

    With `remember` (the guard's refreshes), the list of tables is the one this process
    found last time, while it held the three tables read here: listing them cost a refresh
    a sixth of its CPU. A table gone since makes a read fail, and the caller forgets the
    list and reads again (core/gather.py). Only "not installed" and a cut-off upgrade read
    the list, so where the facts say neither can be, it is not listed again."""
    if not remember:
        return _read_facts(conn, tables, version_table, tuple(tables_in(conn)))
    known = remembered_tables(conn)
    if known is None or not {version_table, tables.state.name, tables.runs.name} <= set(known):
        return _read_facts(conn, tables, version_table, listed_tables(conn))
    facts = _read_facts(conn, tables, version_table, known)
    return facts if _settled(facts) else replace(facts, tables=listed_tables(conn))


def _settled(facts: DatabaseFacts) -> bool:
    """Installed, and the last run ended well: no decision reads the list of tables."""
    run = facts.last_run
    return bool(facts.revisions and facts.states) and (run is None or run.status == "succeeded")


def _read_facts(
    conn: Connection, tables: Tables, version_table: str, names: tuple[str, ...]
) -> DatabaseFacts:
    problems: list[str] = []
    revisions = read_revisions(conn, version_table) if version_table in names else ()
    states: list[StateRow] = []
    if tables.state.name in names:
        # only the columns the table has: an older upgrader made it (see recent_runs)
        query = _states_query(tables, columns(conn, tables.state.name))
        for row in conn.execute(query).mappings():
            states.append(_state_row(typed(tables.state, row, problems), problems))
    runs: list[Run] = []
    if tables.runs.name in names:
        runs = recent_runs(conn, tables, RECENT, checked=True, problems=problems, runs_only=True)
    return DatabaseFacts(
        tables=names,
        has_version_table=version_table in names,
        revisions=revisions,
        has_state_table=tables.state.name in names,
        states=tuple(states),
        recent_runs=tuple(runs),
        problems=tuple(problems),
        dialect=conn.dialect.name,
    )


RECENT = 8
"""Journal rows read with every diagnosis: enough to find this upgrade's first attempt."""

SETTINGS_KINDS = ("maintenance",)
"""Journal entries that record a change of settings, not work on the schema: `history` and
the console show them, the diagnosis never reads them (a few maintenance switches must not
push a failed upgrade out of its sight)."""


def read_revisions(conn: Connection, version_table: str = "alembic_version") -> tuple[str, ...]:
    """The rows of Alembic's version table, sorted; the caller knows the table exists."""
    rows = conn.execute(text(f"SELECT version_num FROM {quote(conn, version_table)}")).scalars()
    return tuple(
        sorted(
            r.decode("utf-8", "replace") if isinstance(r, bytes) else str(r)
            for r in rows
            if r is not None
        )
    )


def _state_row(row: Any, problems: list[str]) -> StateRow:
    mode = (row["maintenance_mode"] or "off").strip().lower()
    problem = None
    if mode not in MAINTENANCE_MODES:
        problem = f"unknown maintenance mode {mode!r} in state row {row['id']}: treated as 'block'"
        problems.append(problem)
        mode = "block"
    allow = tuple(a.strip() for a in (row["maintenance_allow"] or "").split(",") if a.strip())
    maintenance = Maintenance(
        mode=mode,
        message=row["maintenance_message"],
        until=row["maintenance_until"],
        start=row["maintenance_start"],
        end=row["maintenance_end"],
        allow=allow,
        has_secret=bool(row["maintenance_secret"]),
        secret_hash=row["maintenance_secret"],
        set_by=row["maintenance_set_by"],
        set_at=row["maintenance_set_at"],
        problem=problem,
    )
    return StateRow(
        id=row["id"],
        schema_version=row["schema_version"],
        installed_at=row["installed_at"],
        updated_at=row["updated_at"],
        maintenance=maintenance,
        compatible_heads=tuple(split_revisions(row.get("compatible_heads"))),
    )


def recent_runs(
    conn: Connection,
    tables: Tables,
    limit: int = 10,
    *,
    checked: bool = False,
    problems: list[str] | None = None,
    runs_only: bool = False,
) -> list[Run]:
    """The newest entries first; with `runs_only`, no changes of settings (SETTINGS_KINDS).
    Reads only the columns the table has: an older upgrader made it, and only a writer adds
    the columns added since (`ensure_tables`)."""
    if not checked and not inspect(conn).has_table(tables.runs.name):
        return []
    query = _runs_query(tables, columns(conn, tables.runs.name), limit, runs_only)
    rows = conn.execute(query).mappings()
    found = problems if problems is not None else []
    return [Run(**typed(tables.runs, r, found)) for r in rows]


# The reads' statements, built once per set of columns: building a select costs more CPU
# than SQLAlchemy then spends on running it from its compiled cache.


@functools.lru_cache(maxsize=32)
def _states_query(tables: Tables, have: frozenset[str]) -> Select[Any]:
    present = [c for c in tables.state.c if c.name in have]
    return select(*present).order_by(tables.state.c.id)


@functools.lru_cache(maxsize=32)
def _runs_query(tables: Tables, have: frozenset[str], limit: int, runs_only: bool) -> Select[Any]:
    present = [c for c in tables.runs.c if c.name in have]
    query = select(*present).order_by(tables.runs.c.id.desc()).limit(limit)
    if runs_only:
        query = query.where(tables.runs.c.kind.not_in(SETTINGS_KINDS))
    return query


def write_single_state(
    conn: Connection,
    tables: Tables,
    schema_version: str,
    keep: StateRow | None = None,
) -> None:
    """Leave exactly one state row, holding `schema_version`.

    The row `keep` survives with its install date and maintenance settings;
    every other row goes. Used by adoption and repair, inside the caller's
    transaction.
    """
    now = utcnow()
    if keep is None:
        conn.execute(tables.state.delete())
        conn.execute(
            tables.state.insert().values(
                id=1,
                schema_version=schema_version,
                installed_at=now,
                updated_at=now,
                maintenance_mode="off",
            )
        )
        return
    conn.execute(tables.state.delete().where(tables.state.c.id != keep.id))
    conn.execute(
        tables.state.update()
        .where(tables.state.c.id == keep.id)
        .values(
            schema_version=schema_version, updated_at=now, installed_at=keep.installed_at or now
        )
    )
