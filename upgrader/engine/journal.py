"""Writing the journal of a run: its row, its lease and heartbeat, its steps.

Every write commits at once on its own connection: the journal must say what
happened even when the process dies a moment later.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Connection, Engine, inspect, select, text, true

from upgrader.core import storage
from upgrader.core.storage import Tables, utcnow


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
                from_revisions=storage.join_revisions(from_revisions),
                step=0,
                steps=steps,
                note=note,
                client=client,
                phase=phase,
                **storage.identity(),
            )
        )
        run_id = result.inserted_primary_key[0] if result.inserted_primary_key else None
    assert run_id is not None
    return int(run_id)


def update_run(engine: Engine, tables: Tables, run_id: int, **values: Any) -> None:
    with engine.begin() as conn:
        conn.execute(tables.runs.update().where(tables.runs.c.id == run_id).values(**values))


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
    """The run is now at step `position`; with `lease_seconds`, renew the lease too."""
    now = utcnow()
    lease = {}
    if lease_seconds is not None:
        lease = {
            "heartbeat_at": now,
            "lease_expires_at": now + dt.timedelta(seconds=lease_seconds),
        }
    conn.execute(
        tables.runs.update()
        .where(tables.runs.c.id == run_id)
        .values(step=position, revision=revision, message=message, **lease)
    )


def step_row(
    run_id: int,
    position: int,
    revision: str,
    message: str,
    status: str,
    started_at: dt.datetime,
    duration: float,
) -> dict[str, Any]:
    """One row of `steps`: a step once it ended (succeeded or failed), with its duration."""
    return {
        "run_id": run_id,
        "position": position,
        "revision": revision,
        "message": message,
        "status": status,
        "started_at": started_at,
        "finished_at": utcnow(),
        "duration": round(duration, 3),
    }


def record_steps(conn: Connection, tables: Tables, rows: list[dict[str, Any]]) -> None:
    if rows:
        conn.execute(tables.steps.insert(), rows)


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


class Heartbeat:
    """Renews the run's lease while long steps run, so others see it alive, and writes
    the run's progress (`tick`, set by the migration's hooks) at most every TICK seconds.

    Not on SQLite: a write from another connection while a migration holds the
    database's write lock fails that migration ("database is locked"). There the
    OS lock file tells liveness instead (core/lockfile.py), and no lease is written
    during a run at all."""

    TICK = 0.5

    def __init__(self, engine: Engine, tables: Tables, run_id: int, lease_seconds: float) -> None:
        self._engine, self._tables, self._run_id = engine, tables, run_id
        self._lease = lease_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="upgrader-heartbeat", daemon=True)
        self.tick: Callable[[], None] | None = None
        self.failures = 0

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        renew_every = max(self.TICK, self._lease / 3)
        renewed = time.monotonic()
        while not self._stop.wait(self.TICK):
            try:
                if self.tick is not None:
                    self.tick()
                if time.monotonic() - renewed >= renew_every:
                    now = utcnow()
                    update_run(
                        self._engine,
                        self._tables,
                        self._run_id,
                        heartbeat_at=now,
                        lease_expires_at=now + dt.timedelta(seconds=self._lease),
                    )
                    renewed = time.monotonic()
            except Exception:
                # The database may be briefly away; if it stays away the lease
                # expires and others see the run as interrupted, which is true.
                self.failures += 1


Saved = dict[str, list[dict[str, Any]]]
"""The journal's rows (runs and steps), by table name, as `save` read them."""


def save(engine: Engine, tables: Tables) -> Saved | None:
    """Every row of the journal, to outlive a restore: the journal is the history of the
    database, not part of its content. None when the database has no journal yet."""
    with engine.connect() as conn:
        names = set(inspect(conn).get_table_names())
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
