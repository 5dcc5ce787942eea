"""upgrader's own tables in the application's database: their definitions, and adding the
columns a newer upgrader added to tables an older one made.

Four tables, named with a configurable prefix (default `upgrader_`):

- `state`: one row: the application version the schema was last brought to, when it
  was installed, and the maintenance settings;
- `runs`: the journal: one row per install, upgrade, version record, restore or change
  of maintenance, with who, from where, from -> to, status, step k of n, lease, error,
  backup (written by core/journal.py only);
- `steps`: one row per migration a run applied, with its duration;
- `nodes`: one row per process that runs the guard, and the code it runs (core/nodes.py).

Alembic's `alembic_version` stays Alembic's: it is read, never written here. Every
timestamp is naive UTC.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

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
    text,
)


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


def ensure_tables(engine: Engine, tables: Tables) -> None:
    """Create upgrader's tables, and add the columns a newer upgrader added to them. Asks
    the database afresh, whatever this process saw before (a restore may have brought
    back older tables)."""
    with engine.begin() as conn:
        names = set(tables_in(conn))
        if any(table.name not in names for table in tables.all):
            tables.metadata.create_all(conn, checkfirst=True)
        for table in tables.all:
            have = _read_columns(conn, table.name)
            for column in table.c:
                if column.name not in have and column.nullable:
                    kind = column.type.compile(dialect=conn.dialect)
                    name = quote(conn, column.name)
                    conn.execute(
                        text(f"ALTER TABLE {quote(conn, table.name)} ADD COLUMN {name} {kind}")
                    )
    forget_layout(engine)


def forget_layout(engine: Engine) -> None:
    """Look the tables and their columns up again (after a restore, or when a read
    failed)."""
    url = _key(engine)
    for key in [k for k in _COLUMNS if k[0] == url]:
        del _COLUMNS[key]
    _TABLES.pop(url, None)


_COLUMNS: dict[tuple[str, str], frozenset[str]] = {}
_TABLES: dict[str, tuple[str, ...]] = {}


def _key(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def columns(conn: Connection, table: str) -> frozenset[str]:
    """The columns of a table that exists, looked up once per process and database."""
    key = (_key(conn.engine), table)
    if key not in _COLUMNS:
        _COLUMNS[key] = _read_columns(conn, table)
    return _COLUMNS[key]


def listed_tables(conn: Connection) -> tuple[str, ...]:
    """`tables_in`, and kept for `remembered_tables`."""
    names = _TABLES[_key(conn.engine)] = tuple(tables_in(conn))
    return names


def remembered_tables(conn: Connection) -> tuple[str, ...] | None:
    """The tables `listed_tables` last found in this database, or None."""
    return _TABLES.get(_key(conn.engine))


def _read_columns(conn: Connection, table: str) -> frozenset[str]:
    """The names a query of every column returns: one cheap statement on every database
    (reflection's catalog queries cost PostgreSQL some 3 ms a table)."""
    found = conn.execute(text(f"SELECT * FROM {quote(conn, table)} WHERE 1 = 0"))
    names = frozenset(found.keys())
    found.close()
    return names


_PG_TABLES = text(
    "SELECT c.relname FROM pg_catalog.pg_class c "
    "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind IN ('r', 'p') AND c.relpersistence <> 't' "
    "AND pg_catalog.pg_table_is_visible(c.oid) AND n.nspname <> 'pg_catalog'"
)
"""The tables SQLAlchemy's inspector lists on PostgreSQL (its own query's conditions)."""


def tables_in(conn: Connection) -> list[str]:
    """The database's tables, sorted, as SQLAlchemy's inspector lists them. On PostgreSQL
    its query is sent as one prepared text: the inspector builds its select anew each
    time, a sixth of a refresh's CPU (0.33 against 0.08 ms)."""
    if conn.dialect.name == "postgresql":
        return sorted(str(name) for name in conn.execute(_PG_TABLES).scalars())
    return sorted(inspect(conn).get_table_names())


def quote(conn: Connection, name: str) -> str:
    return conn.dialect.identifier_preparer.quote(name)
