"""The `doctor` report: the status plus everything support staff ask for next.

Built as plain data (rendered as text or JSON by the CLI). It never holds a
secret: URLs are shown with the password masked, and every error message passes
through `describe_error()`.
"""

from __future__ import annotations

import dataclasses
import getpass
import importlib.metadata
import json
import os
import platform
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select, text
from sqlalchemy.exc import SQLAlchemyError

from upgrader.core import nodes, storage, times
from upgrader.core.database import (
    describe_error,
    guard_engine,
    missing_sqlite_file,
    redact,
    safe_url,
)
from upgrader.core.diagnosis import (
    Diagnosis,
    as_read,
    diagnose,
    load_code_facts,
    run_status,
    run_time,
)
from upgrader.core.tables import Tables, define_tables
from upgrader.core.versions import parse_version
from upgrader.engine.backup import credential_leftovers, preflight
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


def made() -> dict[str, Any]:
    """When, where and by whom the report was made: a pasted report says whose it is."""
    now = times.utcnow()
    try:
        user: str | None = getpass.getuser()
    except Exception:
        user = None
    return {
        "at": times.iso(now),
        "local_time": times.local(now),
        "time_zone": times.zone_name(),
        "host": socket.gethostname(),
        "user": user,
    }


_HIDDEN = ("app_object", "sources", "flags", "via_flask", "secret_key", "engine_options")


def configuration(settings: Settings) -> dict[str, dict[str, Any]]:
    """Every setting, with where its value came from; never a secret (the URL's password is
    masked, the secret key only said to be set, engine options named, not shown)."""
    values: dict[str, Any] = {"app": settings.app_ref}
    for field in dataclasses.fields(settings):
        if field.name in _HIDDEN or field.name == "app":
            continue
        value = getattr(settings, field.name)
        if field.name == "database_url":
            value = safe_url(value)
        elif isinstance(value, Path):
            value = str(value)
        elif isinstance(value, tuple):
            value = ", ".join(value) or None
        elif isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items()) or None
        values[field.name] = value
    values["secret_key"] = "set (not shown)" if settings.secret_key else None
    # option names only: connect_args may hold credentials
    values["engine_options"] = ", ".join(sorted(settings.engine_options)) or None
    return {
        name: {"value": value, "source": settings.sources.get(name, "default")}
        for name, value in values.items()
    }


TOOLS = ("pg_dump", "pg_restore", "psql", "mariadb-dump", "mysqldump", "mariadb", "mysql")


def tools(names: Sequence[str] = TOOLS) -> dict[str, dict[str, Any]]:
    """The dump and restore tools backups need: where they are, and their versions."""
    found: dict[str, dict[str, Any]] = {}
    for name in names:
        path = shutil.which(name)
        version = None
        if path:
            try:
                done = subprocess.run(
                    [path, "--version"], capture_output=True, text=True, timeout=5, check=False
                )
                version = (done.stdout or done.stderr).strip().splitlines()[0][:200] or None
            except (OSError, subprocess.SubprocessError, IndexError):
                version = None
        found[name] = {"path": path, "version": version}
    return found


def disk(directory: Path) -> dict[str, Any]:
    """Free space where backups go (measured at the nearest directory that exists)."""
    where = Path(directory).resolve()
    while not where.exists() and where != where.parent:
        where = where.parent
    try:
        usage = shutil.disk_usage(where)
    except OSError as exc:
        return {"path": str(directory), "error": exc.strerror or str(exc)}
    return {
        "path": str(directory),
        "exists": Path(directory).is_dir(),
        "measured_at": str(where),
        "free_bytes": usage.free,
        "total_bytes": usage.total,
        "free": f"{usage.free / 2**30:.1f} GiB of {usage.total / 2**30:.1f} GiB",
    }


def preflight_report(engine: Engine, backup_dir: Path) -> dict[str, Any]:
    """What would stop a backup now (the check an upgrade makes before it starts). Read
    only: where the backup directory does not exist yet, it is not created."""

    if not Path(backup_dir).is_dir():
        parent = Path(backup_dir).resolve().parent
        problems = [] if os.access(parent, os.W_OK) else [f"{parent} is not writable"]
        note = f"{backup_dir} does not exist yet: the first backup creates it"
        return {"ok": not problems, "problems": problems, "note": note}
    try:
        problems = preflight(engine, Path(backup_dir))
    except (SQLAlchemyError, OSError) as exc:
        problems = [f"the check itself failed: {describe_error(exc, engine.url)}"]
    return {"ok": not problems, "problems": problems}


def maintenance(d: Diagnosis) -> dict[str, Any] | None:
    m = d.maintenance
    if m is None:
        return None
    return {
        **m.to_dict(d.checked_at),
        "allow": list(m.allow),
        "bypass_secret": "set (not shown)" if m.has_secret else None,
        "set_by": m.set_by,
        "set_at": times.iso(m.set_at),
        "problem": m.problem,
    }


LOG_LINES = 60


def log_tail(backup_dir: Path, url: str, lines: int = LOG_LINES) -> dict[str, Any]:
    """The end of the log detached runs (the web installer's) write beside the backups."""
    path = Path(backup_dir) / "upgrade.log"
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 256 * 1024))
            tail = handle.read().decode("utf-8", "replace").splitlines()[-lines:]
    except FileNotFoundError:
        return {"path": str(path), "lines": [], "note": "no run was started from the web yet"}
    except OSError as exc:
        return {"path": str(path), "lines": [], "error": exc.strerror or str(exc)}
    return {"path": str(path), "lines": [redact(line, url) for line in tail]}


def step_times(conn: Any, tables: Tables, run_ids: Sequence[int]) -> dict[int, list[Any]]:
    """Each run's steps: revision, outcome and seconds, from the journal's steps table."""
    if not run_ids:
        return {}
    steps = tables.steps
    rows = conn.execute(
        select(steps.c.run_id, steps.c.position, steps.c.revision, steps.c.status, steps.c.duration)
        .where(steps.c.run_id.in_(list(run_ids)))
        .order_by(steps.c.run_id, steps.c.position)
    )
    found: dict[int, list[Any]] = {}
    for run_id, position, revision, status, duration in rows:
        found.setdefault(int(run_id), []).append(
            {
                "position": position,
                "revision": revision,
                "status": status,
                "seconds": None if duration is None else round(float(duration), 3),
            }
        )
    return found


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
                    history = journal(conn, settings, diagnosis, runs)
            except (SQLAlchemyError, ValueError, TypeError) as exc:
                history = [{"error": describe_error(exc, engine.url)}]
        unavailable = diagnosis.state.value == "database_unavailable"
        checks = (
            {"ok": False, "problems": ["the database cannot be reached"]}
            if unavailable
            else preflight_report(engine, Path(settings.backup_dir))
        )
        database = (
            {"url": safe_url(engine.url), "dialect": engine.dialect.name}
            if unavailable
            else database_info(engine)
        )
        others = [] if unavailable else sessions(engine)
    finally:
        engine.dispose()
    installer = settings.installer_dir
    dialect = engine.dialect.name
    needed = (
        ("pg_dump", "pg_restore", "psql")
        if dialect == "postgresql"
        else ("mariadb-dump", "mysqldump", "mariadb", "mysql")
        if dialect in ("mysql", "mariadb")
        else ()
    )
    report = {
        "report": made(),
        "status": diagnosis.to_dict(),
        "environment": environment(),
        "configuration": configuration(settings),
        "database": database,
        "code": {
            "version": diagnosis.code_version,
            "heads": list(diagnosis.code_heads),
            "revisions": len(code.graph.revisions) if code.graph else 0,
            "migrations": str(settings.migrations),
            "alembic_ini": str(settings.alembic_config) if settings.alembic_config else None,
        },
        "pending_revisions": [
            {"revision": r.id, "message": r.message} for r in diagnosis.pending_revisions
        ],
        "runs": history,
        "run_log": log_tail(Path(settings.backup_dir), settings.database_url),
        "nodes": _nodes(settings, diagnosis, unavailable),
        "maintenance": maintenance(diagnosis),
        "backups": {
            "directory": disk(Path(settings.backup_dir)),
            "tools": tools(needed),
            "preflight": checks,
            "credential_leftovers": [str(p) for p in credential_leftovers()],
        },
        "sessions": others,
        "installer": {
            "present": diagnosis.installer_present,
            "path": None if installer is None else str(installer),
        },
    }
    return diagnosis, report


def _nodes(settings: Settings, d: Diagnosis, unavailable: bool) -> dict[str, Any] | None:
    live = None if unavailable else nodes.read(settings)
    if live is None:
        return None
    return {
        "seen": [n.to_dict(d.checked_at) for n in live],
        "behind": nodes.summary(live, d.code_version),
        "verdict": nodes.verdict(live, d.schema_version, settings.cli, settings.node_beat),
    }


def journal(conn: Any, settings: Settings, d: Diagnosis, limit: int) -> list[dict[str, Any]]:
    """The journal as support reads it: each run's status by the diagnosis's liveness rules
    (`journal_status` as written), what it took, and its steps with their durations."""
    tables = define_tables(settings.table_prefix)
    runs = storage.recent_runs(conn, tables, limit)
    steps = step_times(conn, tables, [r.id for r in runs if r.steps])
    entries = []
    for run in (as_read(r, d) for r in runs):
        data = run.to_dict()
        status = run_status(run, d)
        data.update(
            journal_status=run.status,
            status=status,
            took=run_time(run, status, d.checked_at),
            step_times=steps.get(run.id, []),
        )
        entries.append(data)
    return entries


def estimate(conn: Any, tables: Tables, steps: int, size: int | None) -> dict[str, Any]:
    """How long an upgrade of `steps` revisions should take here, from this database's own
    past runs: the median step, and the backup at the median rate past backups were written
    (bytes, over the time from a run's start to its first step). None without a past."""
    durations = [
        float(d)
        for (d,) in conn.execute(
            select(tables.steps.c.duration)
            .where(tables.steps.c.status == "succeeded", tables.steps.c.duration.is_not(None))
            .order_by(tables.steps.c.id.desc())
            .limit(200)
        )
    ]
    rates: list[float] = []
    runs = conn.execute(
        select(tables.runs.c.id, tables.runs.c.started_at, tables.runs.c.backup_size)
        .where(tables.runs.c.backup_size.is_not(None), tables.runs.c.kind == "upgrade")
        .order_by(tables.runs.c.id.desc())
        .limit(10)
    ).all()
    for run_id, started, backup_size in runs:
        first = conn.execute(
            select(tables.steps.c.started_at)
            .where(tables.steps.c.run_id == run_id)
            .order_by(tables.steps.c.position)
            .limit(1)
        ).scalar()
        if first is not None and started is not None:
            seconds = (first - started).total_seconds()
            if seconds > 0 and backup_size:
                rates.append(backup_size / seconds)
    if not durations:
        return {"size_bytes": size, "seconds": None, "steps_seen": 0, "backups_seen": 0}
    seconds = statistics.median(durations) * steps
    if size and rates:
        seconds += size / statistics.median(rates)
    return {
        "size_bytes": size,
        "seconds": round(seconds, 1),
        "steps_seen": len(durations),
        "backups_seen": len(rates),
    }


def release_notes(path: Path, after: str | None, upto: str | None) -> list[tuple[str, str]]:
    """The notes of each release in (after, upto], from a JSON file the application ships
    ({"2.0.0": "What changed…"}), oldest first. Versions that do not parse are skipped."""
    try:
        notes = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(notes, dict):
        return []
    low, high = parse_version(after).public, parse_version(upto).public
    found = []
    for version, text_ in notes.items():
        parsed = parse_version(str(version)).public
        if parsed is None or high is None or parsed > high:
            continue
        if low is not None and parsed <= low:
            continue
        found.append((parsed, str(version), str(text_)))
    return [(v, t) for _, v, t in sorted(found)]
