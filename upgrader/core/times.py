"""Times as people read them: every time upgrader prints carries its zone.

upgrader stores naive UTC. A terminal shows it in the zone of whoever runs the command
(the TZ variable, else the system's), with the zone's name and its offset from UTC, so
reports pasted from New York and from Berlin line up; JSON keeps ISO 8601 UTC ("…Z").
"""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path


def utcnow() -> dt.datetime:
    """Now, as upgrader stores every time: naive UTC, to the second."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0)


def iso(value: dt.datetime | None) -> str | None:
    """A stored time in JSON: ISO 8601 UTC, "…Z"."""
    return None if value is None else value.replace(microsecond=0).isoformat() + "Z"


def local(value: dt.datetime | None) -> str:
    """`2026-11-21 22:05:00 EST (UTC-05:00)`, or `2026-11-22 03:05:00 UTC`."""
    if value is None:
        return "-"
    aware = value.replace(tzinfo=dt.timezone.utc).astimezone(zone())
    offset = aware.utcoffset() or dt.timedelta(0)
    if not offset:
        return f"{aware:%Y-%m-%d %H:%M:%S} {aware.tzname() or 'UTC'}"
    return f"{aware:%Y-%m-%d %H:%M:%S} {aware.tzname()} (UTC{_offset(offset)})"


def zone() -> dt.tzinfo:
    """The local zone as the environment says now (TZ may have been set since start)."""
    time.tzset()
    return dt.datetime.now().astimezone().tzinfo or dt.timezone.utc


def zone_name() -> str:
    """`America/New_York (EST, UTC-05:00)`: the zone the report's times are shown in."""
    now = dt.datetime.now(zone())
    offset = now.utcoffset() or dt.timedelta(0)
    name = os.environ.get("TZ") or _system_zone() or now.tzname() or "UTC"
    return f"{name} ({now.tzname()}, UTC{_offset(offset)})"


def _system_zone() -> str | None:
    try:
        link = Path("/etc/localtime").resolve()
    except OSError:
        return None
    parts = link.parts
    return "/".join(parts[parts.index("zoneinfo") + 1 :]) if "zoneinfo" in parts else None


def _offset(offset: dt.timedelta) -> str:
    minutes = int(offset.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def took(started: dt.datetime, ended: dt.datetime | None) -> str:
    """A duration as people read it: 48 s, 3 min 05 s, 2 h 10 min."""
    if ended is None:
        return "-"
    seconds = max(0, int((ended - started).total_seconds()))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
