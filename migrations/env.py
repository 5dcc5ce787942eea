"""Alembic environment of the sample application.

An ordinary application-owned env.py, as `alembic init` writes one: upgrader
runs migrations through it and does not rely on anything special in it. The
URL comes from `sqlalchemy.url`, else from UPGRADER_DATABASE_URL, else the
sample application's SQLite file; a caller may also share a connection through
`config.attributes["connection"]` (Alembic cookbook).
"""

import os
from logging.config import fileConfig
from pathlib import Path

from alembic import context
from sqlalchemy import create_engine, event, pool

from upgrader.alembic import include_name
from upgrader.sample.config import DATABASE_ENV
from upgrader.sample.schema import metadata

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def database_url() -> str:
    url = config.get_main_option("sqlalchemy.url") or os.environ.get(DATABASE_ENV)
    if not url:
        raise SystemExit(f"Set {DATABASE_ENV} (or sqlalchemy.url) to the database to migrate.")
    return url


def run_migrations_offline() -> None:
    context.configure(
        url=database_url(),
        target_metadata=metadata,
        include_name=include_name,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            include_name=include_name,
            transaction_per_migration=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(database_url(), poolclass=pool.NullPool)
    if engine.dialect.name == "sqlite":
        if engine.url.database not in (None, "", ":memory:"):
            Path(engine.url.database).parent.mkdir(parents=True, exist_ok=True)

        # pysqlite commits DDL on its own; let SQLAlchemy emit BEGIN so a failed
        # migration rolls back entirely (SQLAlchemy's documented workaround).
        @event.listens_for(engine, "connect")
        def _no_pysqlite_transactions(dbapi_connection, record):  # type: ignore[no-untyped-def]
            dbapi_connection.isolation_level = None

        @event.listens_for(engine, "begin")
        def _begin(conn):  # type: ignore[no-untyped-def]
            conn.exec_driver_sql("BEGIN")

    with engine.connect() as conn:
        context.configure(
            connection=conn,
            target_metadata=metadata,
            include_name=include_name,
            transaction_per_migration=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
