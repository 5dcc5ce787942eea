"""The `doctor` report: the status plus everything support staff ask for next.

Built as plain data (rendered as text or JSON by the CLI). It never holds a
secret: URLs are shown with the password masked, and every error message passes
through `describe_error()`.
"""

from __future__ import annotations

import importlib.metadata
import platform
import sys
from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from upgrader.core import storage
from upgrader.core.database import (
    describe_error,
    guard_engine,
    missing_sqlite_file,
    redact,
    safe_url,
)
from upgrader.core.diagnosis import Diagnosis, diagnose, load_code_facts
from upgrader.settings import Settings

_DRIVERS = {
    "psycopg": "psycopg",
    "psycopg2": "psycopg2",
    "pymysql": "PyMySQL",
    "mysqldb": "mysqlclient",
    "pysqlite": None,
}


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment() -> dict[str, Any]:
    return {
        "upgrader": package_version("upgrader"),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "executable": sys.executable,
        "sqlalchemy": package_version("SQLAlchemy"),
        "alembic": package_version("alembic"),
        "packaging": package_version("packaging"),
        "flask": package_version("Flask"),
    }


def configuration(settings: Settings) -> dict[str, dict[str, Any]]:
    values: dict[str, Any] = {
        "app": settings.app_ref,
        "database_url": safe_url(settings.database_url),
        "migrations": str(settings.migrations),
        "code_version": settings.code_version,
        "distribution": settings.distribution,
        "version_table": settings.version_table,
        "table_prefix": settings.table_prefix,
        "installer_dir": None if settings.installer_dir is None else str(settings.installer_dir),
        "backup_dir": str(settings.backup_dir),
        "connect_timeout": settings.connect_timeout,
        "lease_seconds": settings.lease_seconds,
        # option names only: connect_args may hold credentials
        "engine_options": ", ".join(sorted(settings.engine_options)) or None,
    }
    return {
        name: {"value": value, "source": settings.sources.get(name, "default")}
        for name, value in values.items()
        if value is not None
    }


def database_info(engine: Engine) -> dict[str, Any]:
    driver = engine.dialect.driver
    package = _DRIVERS.get(driver, driver)
    info: dict[str, Any] = {
        "url": safe_url(engine.url),
        "dialect": engine.dialect.name,
        "driver": driver,
        "driver_version": package_version(package) if package else None,
        "server_version": None,
    }
    if engine.dialect.name == "sqlite":
        import sqlite3

        info["driver_version"] = sqlite3.sqlite_version
        info["server_version"] = f"SQLite {sqlite3.sqlite_version} (embedded)"
        return info
    try:
        with engine.connect() as conn:
            query = (
                "SELECT version()" if engine.dialect.name == "postgresql" else "SELECT VERSION()"
            )
            info["server_version"] = str(conn.execute(text(query)).scalar())
    except SQLAlchemyError as exc:
        info["error"] = describe_error(exc, engine.url)
    return info


def sessions(engine: Engine) -> list[dict[str, Any]]:
    """Other sessions on this database, and the table locks they hold or wait for
    (PostgreSQL): what a stuck upgrade or backup waits behind. Statements are cut to their
    first words, so no data (nor a secret in it) reaches the report."""
    backend = engine.dialect.name
    found: list[dict[str, Any]] = []
    try:
        with engine.connect() as conn:
            if backend == "postgresql":
                rows = conn.execute(
                    text(
                        "SELECT a.pid, a.usename, a.state, a.wait_event_type, "
                        "EXTRACT(EPOCH FROM now() - a.query_start)::int, a.query, "
                        "(SELECT string_agg(c.relname || ' ' || l.mode || "
                        "CASE WHEN l.granted THEN '' ELSE ' (waiting)' END, ', ') "
                        " FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                        " WHERE l.pid = a.pid AND c.relkind = 'r') "
                        "FROM pg_stat_activity a WHERE a.datname = current_database() "
                        "AND a.pid <> pg_backend_pid() ORDER BY a.pid"
                    )
                )
            elif backend in ("mysql", "mariadb"):
                rows = conn.execute(
                    text(
                        "SELECT ID, USER, COMMAND, STATE, TIME, INFO, NULL "
                        "FROM information_schema.PROCESSLIST "
                        "WHERE DB = DATABASE() AND ID <> CONNECTION_ID() ORDER BY ID"
                    )
                )
            else:
                return []
            for session, user, state, waiting, seconds, query, locks in rows:
                found.append(
                    {
                        "session": str(session),
                        "user": user,
                        "state": " ".join(str(x) for x in (state, waiting) if x),
                        "seconds": seconds,
                        "statement": redact(" ".join(str(query or "").split()[:6])),
                        "locks": locks,
                    }
                )
    except SQLAlchemyError as exc:
        return [{"error": describe_error(exc, engine.url)}]
    return found


def doctor(settings: Settings, runs: int = 10) -> tuple[Diagnosis, dict[str, Any]]:
    """Diagnose without writing anything, and gather the whole report."""
    code = load_code_facts(settings)
    engine = guard_engine(settings)
    try:
        diagnosis = diagnose(settings, code=code, engine=engine, record=False)
        history: list[dict[str, Any]] = []
        if diagnosis.state.value != "database_unavailable" and not missing_sqlite_file(engine.url):
            try:
                with engine.connect() as conn:
                    tables = storage.define_tables(settings.table_prefix)
                    history = [r.to_dict() for r in storage.recent_runs(conn, tables, runs)]
            except (SQLAlchemyError, ValueError, TypeError) as exc:
                history = [{"error": describe_error(exc, engine.url)}]
        unavailable = diagnosis.state.value == "database_unavailable"
        database = (
            {"url": safe_url(engine.url), "dialect": engine.dialect.name}
            if unavailable
            else database_info(engine)
        )
        others = [] if unavailable else sessions(engine)
    finally:
        engine.dispose()
    installer = settings.installer_dir
    report = {
        "status": diagnosis.to_dict(),
        "environment": environment(),
        "configuration": configuration(settings),
        "database": database,
        "code": {
            "version": diagnosis.code_version,
            "heads": list(diagnosis.code_heads),
            "revisions": len(code.graph.revisions) if code.graph else 0,
            "migrations": str(settings.migrations),
        },
        "pending_revisions": [
            {"revision": r.id, "message": r.message} for r in diagnosis.pending_revisions
        ],
        "runs": history,
        "sessions": others,
        "installer": {
            "present": diagnosis.installer_present,
            "path": None if installer is None else str(installer),
        },
    }
    return diagnosis, report
