"""The SQLite upgrade lock file, and asking it whether an upgrade is alive.

On one host the OS lock is the exact truth: it dies with its process, so a
killed upgrade shows as interrupted at once, without waiting for its lease.
(The engine takes this lock; the diagnosis only probes it.)
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


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
