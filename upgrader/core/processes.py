"""What became of a run's process, when it ran on this host.

A run holds the upgrade lock for as long as its process lives, so the lock alone cannot
tell a working run from one stopped with Ctrl-Z (SIGSTOP), frozen on a hung mount, or
traced by a debugger. The kernel can: Linux shows each process's state in
/proc/PID/stat. Elsewhere only "alive or gone" is known.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

RUNNING = "running"
STOPPED = "stopped"  # SIGSTOP, Ctrl-Z, a debugger: holds its locks, does nothing
ZOMBIE = "zombie"  # exited; its parent has not collected it (its locks are gone)
GONE = "gone"


def this_host() -> str:
    return socket.gethostname()


def state_of(pid: int) -> str:
    """RUNNING, STOPPED, ZOMBIE or GONE for a process of this host."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return GONE
    except OSError:
        return _signal_probe(pid)
    code = stat[stat.rindex(")") + 2 :][:1]  # the field after the command's name
    if code in ("T", "t"):
        return STOPPED
    if code in ("Z", "X"):
        return ZOMBIE
    return RUNNING


def _signal_probe(pid: int) -> str:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return GONE
    except PermissionError:
        return RUNNING
    return RUNNING


def of_run(host: str | None, pid: int | None) -> str | None:
    """The state of a run's process, or None where this host cannot know (another host)."""
    if pid is None or not host or host != this_host() or pid <= 0:
        return None
    return state_of(pid)
