"""The guard's own tables in the application's database, and reading them back.

Four tables, named with a configurable prefix (default `upgrader_`):

- `state`: one row: the application version the schema was last brought to,
  when it was installed, and the maintenance settings;
- `runs`: the journal: one row per install, upgrade or version record, with
  who started it, from where, from -> to, status, step k of n, lease, error,
  backup;
- `steps`: one row per migration a run applied, with its duration;
- `nodes`: one row per process that runs the guard, and the code it runs
  (core/nodes.py).

Alembic's `alembic_version` stays Alembic's: it is read, never written here.
Every timestamp is naive UTC.
"""

from __future__ import annotations

import datetime as dt
import functools
import getpass
import os
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    DateTime,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    inspect,
    select,
    text,
)

if TYPE_CHECKING:
    from upgrader.core.nodes import Node

MAINTENANCE_MODES = ("off", "block", "banner")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0)


def iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.replace(microsecond=0).isoformat() + "Z"


@dataclass(frozen=True)
class Tables:
    metadata: MetaData
    state: Table
    runs: Table
    steps: Table
    nodes: Table

    @property
    def all(self) -> tuple[Table, ...]:
        return (self.state, self.runs, self.steps, self.nodes)


@functools.cache
def define_tables(prefix: str = "upgrader_") -> Tables:
    """upgrader's tables, made once per prefix (every caller shares the same objects)."""
    md = MetaData()
    state = Table(
        f"{prefix}state",
        md,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("schema_version", String(64)),
        Column("installed_at", DateTime),
        Column("updated_at", DateTime),
        Column("maintenance_mode", String(16), nullable=False, server_default="off"),
        Column("maintenance_message", Text),
        Column("maintenance_until", DateTime),
        Column("maintenance_start", DateTime),
        Column("maintenance_end", DateTime),
        Column("maintenance_allow", Text),
        Column("maintenance_secret", String(255)),
        Column("maintenance_set_by", String(255)),
        Column("maintenance_set_at", DateTime),
        # added in 0.3: the revisions whose code still works on this schema, while an
        # online upgrade's release rolls out (core/phases.py); empty otherwise
        Column("compatible_heads", String(255)),
    )
    runs = Table(
        f"{prefix}runs",
        md,
        Column("id", Integer, primary_key=True),
        Column("kind", String(16), nullable=False),  # install | upgrade | version | adopt
        Column("status", String(16), nullable=False),  # running | succeeded | failed
        Column("trigger", String(16), nullable=False),  # cli | web | auto
        Column("actor", String(255)),
        Column("host", String(255)),
        Column("pid", Integer),
        Column("started_at", DateTime, nullable=False),
        Column("finished_at", DateTime),
        Column("heartbeat_at", DateTime),
        Column("lease_expires_at", DateTime),
        Column("from_version", String(64)),
        Column("to_version", String(64)),
        Column("from_revisions", String(255)),
        Column("to_revisions", String(255)),
        Column("step", Integer, nullable=False, server_default="0"),
        Column("steps", Integer, nullable=False, server_default="0"),
        Column("revision", String(64)),
        Column("message", Text),
        Column("error", Text),
        Column("backup_path", Text),
        Column("backup_checksum", String(128)),
        Column("backup_size", BigInteger),
        Column("note", Text),
        # added in 0.2: the migration connection's server session (PostgreSQL backend pid,
        # MySQL connection id), so a killed run's statement can be found and ended
        Column("db_session", String(64)),
        # added in 0.3: the browser's address, for a run started from the web installer
        Column("client", String(64)),
        # added in 0.3: "online" or "post-deploy" for `upgrade --online/--post-deploy`, which
        # leave the site up; empty for an ordinary run, which takes it down while it runs
        Column("phase", String(16)),
    )
    steps = Table(
        f"{prefix}steps",
        md,
        Column("id", Integer, primary_key=True),
        Column("run_id", Integer, nullable=False, index=True),
        Column("position", Integer, nullable=False),
        Column("revision", String(64), nullable=False),
        Column("message", Text),
        Column("status", String(16), nullable=False),  # running | succeeded | failed
        Column("started_at", DateTime, nullable=False),
        Column("finished_at", DateTime),
        Column("duration", Float),
    )
    nodes = Table(
        f"{prefix}nodes",
        md,
        # added in 0.3: every process that runs the guard, as it last said (core/nodes.py)
        Column("id", String(160), primary_key=True),  # host:pid:start, one per process
        Column("host", String(255), nullable=False),
        Column("pid", Integer, nullable=False),
        Column("kind", String(16), nullable=False),  # web | worker
        Column("code_version", String(64)),
        Column("heads", String(255)),
        Column("started_at", DateTime, nullable=False),
        Column("last_seen", DateTime, nullable=False),
    )
    return Tables(md, state, runs, steps, nodes)


@functools.cache
def table_names(prefix: str = "upgrader_") -> frozenset[str]:
    """The names of upgrader's own tables: the application's migrations must leave them be."""
    tables = define_tables(prefix)
    return frozenset(t.name for t in tables.all)


@dataclass(frozen=True)
class Maintenance:
    """Maintenance as an administrator set it (the web layer interprets allow/secret)."""

    mode: str = "off"
    message: str | None = None
    until: dt.datetime | None = None
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    allow: tuple[str, ...] = ()
    has_secret: bool = False
    secret_hash: str | None = field(default=None, repr=False)  # never rendered anywhere
    set_by: str | None = None
    set_at: dt.datetime | None = None
    problem: str | None = None  # a stored mode we do not know; treated as "block"

    def active(self, now: dt.datetime) -> bool:
        if self.mode == "off":
            return False
        return (self.start is None or self.start <= now) and (self.end is None or now < self.end)

    def upcoming(self, now: dt.datetime) -> bool:
        return self.mode != "off" and self.start is not None and now < self.start

    def to_dict(self, now: dt.datetime) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "active": self.active(now),
            "upcoming": self.upcoming(now),
            "message": self.message,
            "until": iso(self.until),
            "start": iso(self.start),
            "end": iso(self.end),
        }


@dataclass(frozen=True)
class StateRow:
    id: int
    schema_version: str | None
    installed_at: dt.datetime | None
    updated_at: dt.datetime | None
    maintenance: Maintenance
    compatible_heads: tuple[str, ...] = ()  # older code still works on this schema


@dataclass(frozen=True)
class Run:
    id: int
    kind: str
    status: str
    trigger: str
    actor: str | None
    host: str | None
    pid: int | None
    started_at: dt.datetime
    finished_at: dt.datetime | None
    heartbeat_at: dt.datetime | None
    lease_expires_at: dt.datetime | None
    from_version: str | None
    to_version: str | None
    from_revisions: str | None
    to_revisions: str | None
    step: int
    steps: int
    revision: str | None
    message: str | None
    error: str | None
    backup_path: str | None
    backup_checksum: str | None
    backup_size: int | None
    note: str | None
    db_session: str | None = None
    client: str | None = None
    phase: str | None = None  # online | post-deploy: the site stays up while it runs

    def lease_live(self, now: dt.datetime) -> bool:
        return (
            self.status == "running"
            and self.lease_expires_at is not None
            and self.lease_expires_at > now
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "status": self.status,
            "trigger": self.trigger,
            "actor": self.actor,
            "host": self.host,
            "pid": self.pid,
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "heartbeat_at": iso(self.heartbeat_at),
            "lease_expires_at": iso(self.lease_expires_at),
            "from_version": self.from_version,
            "to_version": self.to_version,
            "from_revisions": split_revisions(self.from_revisions),
            "to_revisions": split_revisions(self.to_revisions),
            "step": self.step,
            "steps": self.steps,
            "revision": self.revision,
            "message": self.message,
            "error": self.error,
            "backup_path": self.backup_path,
            "backup_checksum": self.backup_checksum,
            "backup_size": self.backup_size,
            "note": self.note,
            "db_session": self.db_session,
            "client": self.client,
            "phase": self.phase,
        }


def split_revisions(value: str | None) -> list[str]:
    return [r for r in (value or "").split(",") if r]


def join_revisions(revs: Iterable[str]) -> str:
    return ",".join(sorted(revs))


@dataclass(frozen=True)
class DatabaseFacts:
    """What the database says, read in one go. Nothing here is interpreted yet."""

    reachable: bool = True
    error: str | None = None
    missing_file: str | None = None  # SQLite: the database file does not exist
    unreadable: str | None = None  # connected, but upgrader's tables could not be read
    lock_held: bool | None = None  # SQLite: whether a process holds the upgrade lock now
    tables: tuple[str, ...] = ()
    has_version_table: bool = False
    revisions: tuple[str, ...] = ()
    has_state_table: bool = False
    states: tuple[StateRow, ...] = ()
    recent_runs: tuple[Run, ...] = ()  # newest first: the current upgrade's attempts
    problems: tuple[str, ...] = field(default=())  # rows we could not read
    dialect: str = ""
    lingering: str | None = None  # a dead run's statement still running in the server
    busy: str | None = None  # SQLite: locked by the live upgrade, so not readable now
    holder: tuple[int, str] | None = None  # SQLite, busy: the lock holder's pid and host
    process: str | None = None  # the open run's process, on this host (core/processes.py)
    nodes: tuple[Node, ...] | None = None  # the live nodes, read only when the decision needs them

    @property
    def last_run(self) -> Run | None:
        return self.recent_runs[0] if self.recent_runs else None


def read_facts(
    conn: Connection, tables: Tables, version_table: str = "alembic_version"
) -> DatabaseFacts:
    """Read alembic_version, the state rows and the last run. A few cheap queries."""
    names = tuple(sorted(inspect(conn).get_table_names()))
    problems: list[str] = []
    revisions = read_revisions(conn, version_table) if version_table in names else ()
    states: list[StateRow] = []
    if tables.state.name in names:
        # only the columns the table has: an older upgrader made it (see recent_runs)
        have = _columns(conn, tables.state.name)
        columns = [c for c in tables.state.c if c.name in have]
        for row in conn.execute(select(*columns).order_by(tables.state.c.id)).mappings():
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
    rows = conn.execute(text(f"SELECT version_num FROM {_quote(conn, version_table)}")).scalars()
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


def _quote(conn: Connection, name: str) -> str:
    return conn.dialect.identifier_preparer.quote(name)


def ensure_tables(engine: Engine, tables: Tables) -> None:
    """Create upgrader's tables, and add the columns a newer upgrader added to them."""
    tables.metadata.create_all(engine, checkfirst=True)
    with engine.begin() as conn:
        inspector = inspect(conn)
        for table in tables.all:
            have = {c["name"] for c in inspector.get_columns(table.name)}
            for column in table.c:
                if column.name not in have and column.nullable:
                    kind = column.type.compile(dialect=conn.dialect)
                    name = conn.dialect.identifier_preparer.quote(column.name)
                    table_name = conn.dialect.identifier_preparer.quote(table.name)
                    conn.execute(text(f"ALTER TABLE {table_name} ADD COLUMN {name} {kind}"))
    forget_columns(engine)


def forget_columns(engine: Engine) -> None:
    """Look the columns up again (after a restore, or when a read failed)."""
    url = engine.url.render_as_string(hide_password=True)
    for key in [k for k in _COLUMNS if k[0] == url]:
        del _COLUMNS[key]


def identity() -> dict[str, Any]:
    """Who and where, for the journal: the OS user, host and process."""
    try:
        user = getpass.getuser()
    except Exception:
        user = None
    return {"actor": user, "host": socket.gethostname(), "pid": os.getpid()}


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
    columns = [c for c in tables.runs.c if c.name in _columns(conn, tables.runs.name)]
    query = select(*columns).order_by(tables.runs.c.id.desc()).limit(limit)
    if runs_only:
        query = query.where(tables.runs.c.kind.not_in(SETTINGS_KINDS))
    rows = conn.execute(query).mappings()
    found = problems if problems is not None else []
    return [Run(**typed(tables.runs, r, found)) for r in rows]


_EPOCH = dt.datetime(1970, 1, 1)


def typed(table: Table, row: Any, problems: list[str]) -> dict[str, Any]:
    """A row as the model expects it, whatever was written into the database by hand, by
    a broken tool or by a restore: a value that is not of its column's type becomes None
    (or a neutral value where the column may not be empty) and a named problem, never an
    exception further on. Text that is not text is decoded."""
    values: dict[str, Any] = {}
    for key, value in dict(row).items():
        column = table.c.get(key)
        if column is None or value is None:
            values[key] = value
            continue
        good, fixed = _coerce(column.type.python_type, value)
        if not good:
            shown = repr(value)[:40]
            problems.append(
                f"{table.name} row {row.get('id')}: {key} holds {shown}, which is not a "
                f"{column.type.python_type.__name__}: ignored"
            )
            if fixed is None and not column.nullable:
                fixed = _EPOCH if column.type.python_type is dt.datetime else 0
        values[key] = fixed
    return values


def _coerce(kind: type, value: Any) -> tuple[bool, Any]:
    if kind is str:
        if isinstance(value, str):
            return True, value
        if isinstance(value, bytes | bytearray | memoryview):
            return True, bytes(value).decode("utf-8", "replace")
        return True, str(value)
    if kind is dt.datetime:
        if isinstance(value, dt.datetime):
            if value.tzinfo is not None:
                value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
            return True, value
        try:
            text = value.decode() if isinstance(value, bytes) else str(value)
            return True, dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00")).replace(
                tzinfo=None
            )
        except (ValueError, UnicodeError):
            return False, None
    if kind is int:
        if isinstance(value, bool):
            return False, None
        if isinstance(value, int):
            return True, value
        try:
            return True, int(str(value).strip())
        except ValueError:
            return False, None
    if kind is float:
        try:
            return True, float(value)
        except (TypeError, ValueError):
            return False, None
    return True, value


_COLUMNS: dict[tuple[str, str], frozenset[str]] = {}


def _columns(conn: Connection, table: str) -> frozenset[str]:
    """The table's columns, looked up once per process and database."""
    key = (conn.engine.url.render_as_string(hide_password=True), table)
    if key not in _COLUMNS:
        _COLUMNS[key] = frozenset(c["name"] for c in inspect(conn).get_columns(table))
    return _COLUMNS[key]


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
