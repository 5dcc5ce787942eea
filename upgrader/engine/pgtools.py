"""Which PostgreSQL client program a backup runs.

Debian and Ubuntu install pg_dump and pg_restore as links to pg_wrapper, a Perl script
that picks a PostgreSQL version and runs /usr/lib/postgresql/<version>/bin/<program>.
Told a host (`--host`), it always picks the newest version installed (pg_wrapper(1)).
Starting Perl to learn that costs about 25 ms a call, as long as dumping a small database
takes, and a verified backup makes three calls. So when the wrapper would be told a host,
upgrader runs the program it would pick; without one the wrapper decides by the local
clusters, and upgrader leaves it to decide.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

WRAPPER = "pg_wrapper"
BINROOT = Path("/usr/lib/postgresql")


def program(name: str, host_given: bool) -> str:
    """The program to run for client tool `name`: what PATH finds, or, where that is
    Debian's pg_wrapper and a host is given, the binary the wrapper would run."""
    found = shutil.which(name)
    if not host_given or not found or Path(found).resolve().name != WRAPPER:
        return name
    return newest(name) or name


def newest(name: str) -> str | None:
    """`name` of the newest version under BINROOT, as pg_wrapper's get_newest_version
    picks it: directories named like 15 or 9.6, compared as numbers. Looked up each time:
    a long-running server sees client tools installed after it started."""
    try:
        entries = list(BINROOT.iterdir())
    except OSError:
        return None
    versions = [
        (float(entry.name), path)
        for entry in entries
        if re.fullmatch(r"\d+\.?\d+", entry.name)
        and os.access(path := entry / "bin" / name, os.X_OK)
    ]
    return str(max(versions)[1]) if versions else None
