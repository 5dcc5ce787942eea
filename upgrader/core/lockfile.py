"""The upgrade lock's names, and asking it whether an upgrade is alive.

The lock dies with the process (SQLite: an OS file lock) or with its
connection (PostgreSQL's advisory lock, MySQL's GET_LOCK), and a run holds it
from before its journal row says "running" until after it says how it ended.
So a run whose lock is free is over: killed, not "running until its lease
expires". The engine takes the lock (engine/locks.py); the diagnosis only
probes it, read-only.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from pathlib import Path

from sqlalchemy import Connection, text


def lock_file(database: str | None) -> Path | None:
    if not database or database == ":memory:":
        return None
    return Path(os.path.abspath(database) + ".upgrader-lock")


def lock_held(database: str | None) -> bool | None:
    """Whether a live process holds the upgrade lock of this SQLite file; None if unknowable."""
    path = lock_file(database)
    if path is None:
        return None
    try:
        handle = open(path)  # noqa: SIM115 (closed below)
    except FileNotFoundError:
        return False
    except OSError:
        return None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def holder(database: str | None) -> tuple[int, str] | None:
    """The pid and host the lock file names: the process that took the upgrade lock last
    (the engine writes them when it takes it). None when the file says nothing usable."""
    path = lock_file(database)
    if path is None:
        return None
    try:
        pid, host = path.read_text().split()[:2]
        return int(pid), host
    except (OSError, ValueError):
        return None


def lock_name(database: str | None, purpose: str = "upgrader") -> str:
    return f"{purpose}:{database}"


def pg_key(name: str) -> int:
    """PostgreSQL's advisory lock key for a name (a signed 64-bit integer)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def mysql_name(name: str) -> str:
    """MySQL's lock names are server-wide and at most 64 characters."""
    return name if len(name) <= 64 else "upgrader:" + hashlib.sha256(name.encode()).hexdigest()[:40]


def server_lock_holder(conn: Connection) -> str | None:
    """The server session (PostgreSQL backend pid, MySQL connection id) that holds the
    upgrade lock of this database, or None when none does (or it cannot be asked)."""
    name = lock_name(conn.engine.url.database)
    if conn.dialect.name == "postgresql":
        unsigned = pg_key(name) & 0xFFFFFFFFFFFFFFFF
        pid = conn.scalar(
            text(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND database "
                "= (SELECT oid FROM pg_database WHERE datname = current_database()) AND "
                "classid = :high AND objid = :low AND objsubid = 1"
            ),
            {"high": unsigned >> 32, "low": unsigned & 0xFFFFFFFF},
        )
        return None if pid is None else str(pid)
    if conn.dialect.name in ("mysql", "mariadb"):
        holder = conn.scalar(text("SELECT IS_USED_LOCK(:n)"), {"n": mysql_name(name)})
        return None if holder is None else str(holder)
    return None


def server_lock_held(conn: Connection) -> bool | None:
    """Whether a session holds the upgrade lock of this PostgreSQL or MySQL database; None
    where it cannot be asked."""
    name = lock_name(conn.engine.url.database)
    backend = conn.dialect.name
    if backend == "postgresql":
        key = pg_key(name)
        # pg_locks shows a bigint advisory key as classid (high 32 bits) and objid (low).
        query = text(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND classid = :high AND objid = :low AND objsubid = 1"
        )
        unsigned = key & 0xFFFFFFFFFFFFFFFF
        found = conn.scalar(query, {"high": unsigned >> 32, "low": unsigned & 0xFFFFFFFF})
        return bool(found)
    if backend in ("mysql", "mariadb"):
        return conn.scalar(text("SELECT IS_USED_LOCK(:n)"), {"n": mysql_name(name)}) is not None
    return None
