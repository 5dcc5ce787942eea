"""One upgrade at a time, across every process and node.

The database's own lock, held on a dedicated AUTOCOMMIT connection for the
whole run, so no migration connection is ever inside a foreign transaction
(technical notes §1.7) and a crashed holder frees it with its connection:

- PostgreSQL: a session advisory lock (`pg_try_advisory_lock`), per database;
- MariaDB/MySQL: `GET_LOCK`, whose names are server-wide, so the name carries
  the database's name (hashed to stay under MySQL's 64 characters);
- SQLite: `flock` on a file beside the database (one host only, as SQLite is).

The lease in the journal (runs.lease_expires_at) is what other processes read
to tell "running" from "interrupted"; this lock is what makes a second starter
fail fast.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import threading
import time
from collections.abc import Iterator

from sqlalchemy import Connection, Engine, text

from upgrader.core.lockfile import lock_file, lock_name, mysql_name, pg_key

# Two threads of one process must not run Alembic at once: alembic.context and
# alembic.op are module-global proxies (technical notes §1.2).
_PROCESS_LOCK = threading.Lock()


class LockBusy(Exception):
    """Another process holds the upgrade lock."""


class LockLost(Exception):
    """The connection holding the lock went away: the lock may be gone with it."""


class UpgradeLock:
    """The held lock. `check()` between steps tells whether it is still held."""

    def __init__(self, conn: Connection | None) -> None:
        self._conn = conn

    def check(self) -> None:
        if self._conn is None:
            return
        try:
            self._conn.execute(text("SELECT 1"))
        except Exception as exc:
            raise LockLost(f"the connection holding the upgrade lock was lost: {exc}") from exc


@contextlib.contextmanager
def upgrade_lock(engine: Engine) -> Iterator[UpgradeLock]:
    """Take the lock without waiting, or raise LockBusy at once."""
    if not _PROCESS_LOCK.acquire(blocking=False):
        raise LockBusy("another thread of this process is running an upgrade")
    try:
        backend = engine.url.get_backend_name()
        if backend == "sqlite":
            with _sqlite_lock(engine) as held:
                yield held
        elif backend == "postgresql":
            with _pg_lock(engine) as held:
                yield held
        elif backend in ("mysql", "mariadb"):
            with _mysql_lock(engine) as held:
                yield held
        else:
            raise LockBusy(f"no upgrade lock is implemented for {backend}")
    finally:
        _PROCESS_LOCK.release()


@contextlib.contextmanager
def _sqlite_lock(engine: Engine) -> Iterator[UpgradeLock]:
    path = lock_file(engine.url.database)
    if path is None:
        yield UpgradeLock(None)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        # A guard probing the lock (sqlite_lock_held) holds it shared for microseconds:
        # retry briefly so such a probe is never mistaken for a running upgrade.
        for attempt in range(20):
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError as exc:
                if attempt == 19:
                    raise LockBusy(f"{path} is locked by another process") from exc
                time.sleep(0.05)
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()} {socket.gethostname()}\n")  # who holds it (lockfile.holder)
        handle.flush()
        try:
            yield UpgradeLock(None)
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _pg_lock(engine: Engine) -> Iterator[UpgradeLock]:
    key = pg_key(lock_name(engine.url.database))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        if not conn.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}):
            raise LockBusy(f"PostgreSQL advisory lock {key} is held by another session")
        try:
            yield UpgradeLock(conn)
        finally:
            with contextlib.suppress(Exception):
                conn.scalar(text("SELECT pg_advisory_unlock(:k)"), {"k": key})


@contextlib.contextmanager
def _mysql_lock(engine: Engine) -> Iterator[UpgradeLock]:
    name = mysql_name(lock_name(engine.url.database))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        if conn.scalar(text("SELECT GET_LOCK(:n, 0)"), {"n": name}) != 1:
            raise LockBusy(f"lock {name!r} is held by another session")
        try:
            yield UpgradeLock(conn)
        finally:
            with contextlib.suppress(Exception):
                conn.scalar(text("SELECT RELEASE_LOCK(:n)"), {"n": name})
