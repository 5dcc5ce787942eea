"""Switching maintenance mode on and off, in the database, for every process on every node.

Two levels: `block` (visitors get the maintenance page) and `banner` (the site
stays usable, shows a banner, and only new background work is refused). A
window (`start`, `end`) announces itself with the banner before it begins and
ends on its own. The bypass secret is stored only as a keyed hash: it is a random
token (`--generate-secret`), so a slow password hash would add nothing but a cheap way
to burn the server's CPU with wrong guesses.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import re
import secrets as secrets_module
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, inspect, select

from upgrader.core.records import identity
from upgrader.core.tables import Tables
from upgrader.core.times import utcnow

log = logging.getLogger("upgrader")


class MaintenanceError(Exception):
    pass


@dataclass(frozen=True)
class MaintenanceRequest:
    level: str = "block"
    message: str | None = None
    until: dt.datetime | None = None
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    allow: Sequence[str] = ()
    secret_hash: str | None = None


_RELATIVE = re.compile(r"^\+(\d+)([mhd])$")


def parse_when(value: str | None) -> dt.datetime | None:
    """An ISO time (UTC unless it gives an offset) or a delay such as +30m, +2h, +1d, as
    naive UTC like every time upgrader stores. The CLI and the admin page read the same."""
    if not value or not value.strip():
        return None
    relative = _RELATIVE.match(value.strip())
    if relative:
        unit = {"m": "minutes", "h": "hours", "d": "days"}[relative.group(2)]
        return utcnow() + dt.timedelta(**{unit: int(relative.group(1))})
    try:
        parsed = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{value!r}: use an ISO time (2026-11-21T22:00) or +30m") from None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return parsed.replace(microsecond=0)


MAX_SECRET = 256
"""Longer bypass secrets are refused unread: generated ones are 32 characters."""


def hash_secret(secret: str) -> str:
    """HMAC-SHA256 of the secret under a random salt."""
    salt = secrets_module.token_hex(16)
    digest = hmac.new(bytes.fromhex(salt), secret.encode(), hashlib.sha256).hexdigest()
    return f"hmac-sha256${salt}${digest}"


def check_secret(secret: str, stored: str | None) -> bool:
    """Compare in constant time with what `hash_secret` stored (or an older release's
    PBKDF2 hash). Whatever is stored, a wrong value is False, never an exception."""
    if not secret or len(secret) > MAX_SECRET:
        return False
    try:
        scheme, salt, digest = (stored or "").split("$")
        key = bytes.fromhex(salt)
        data = secret.encode("utf-8", "surrogateescape")
        if scheme == "hmac-sha256":
            candidate = hmac.new(key, data, hashlib.sha256).hexdigest()
        elif scheme == "pbkdf2":
            candidate = hashlib.pbkdf2_hmac("sha256", data, key, 100_000).hex()
        else:
            return False
    except (ValueError, UnicodeError):
        return False
    return hmac.compare_digest(candidate.encode(), digest.encode("utf-8", "replace"))


def new_secret() -> str:
    return secrets_module.token_urlsafe(24)


def _journal(conn: Connection, tables: Tables, who: str, trigger: str, note: str) -> None:
    """The change in the journal, beside the runs: who, from where, what."""
    if not inspect(conn).has_table(tables.runs.name):
        return
    now = utcnow()
    conn.execute(
        tables.runs.insert().values(
            kind="maintenance",
            status="succeeded",
            started_at=now,
            finished_at=now,
            **{**identity(), "actor": who[:255], "trigger": trigger, "note": note},
        )
    )


def describe(request: MaintenanceRequest) -> str:
    """The request in one line, as the journal and the log give it."""
    parts = [f"on ({request.level})"]
    if request.message:
        parts.append(f"message {request.message!r}")
    if request.until:
        parts.append(f"until {request.until:%Y-%m-%d %H:%M} UTC")
    if request.start or request.end:
        start = f"{request.start:%Y-%m-%d %H:%M}" if request.start else "now"
        end = f"{request.end:%Y-%m-%d %H:%M}" if request.end else "switched off"
        parts.append(f"window {start} to {end} UTC")
    if request.allow:
        parts.append("let through " + ", ".join(request.allow))
    if request.secret_hash:
        parts.append("new bypass secret")
    return "; ".join(parts)


def switch_on(
    engine: Engine, tables: Tables, request: MaintenanceRequest, who: str, trigger: str = "cli"
) -> None:
    if request.level not in ("block", "banner"):
        raise MaintenanceError(f"unknown level {request.level!r}: use block or banner")
    if request.start and request.end and request.end <= request.start:
        raise MaintenanceError("the window ends before it starts")
    if request.end and request.end <= utcnow():
        raise MaintenanceError("the window has already ended")
    with engine.begin() as conn:
        row = conn.execute(select(tables.state.c.id).order_by(tables.state.c.id)).first()
        if row is None:
            raise MaintenanceError(
                "nothing is installed yet, so there is no site to put in maintenance"
            )
        values = {
            "maintenance_mode": request.level,
            "maintenance_message": request.message,
            "maintenance_until": request.until,
            "maintenance_start": request.start,
            "maintenance_end": request.end,
            "maintenance_allow": ",".join(request.allow) or None,
            "maintenance_set_by": who,
            "maintenance_set_at": utcnow(),
        }
        if request.secret_hash is not None:
            values["maintenance_secret"] = request.secret_hash
        conn.execute(tables.state.update().values(**values))
        _journal(conn, tables, who, trigger, describe(request))
    log.warning("maintenance %s, by %s", describe(request), who)


def switch_off(engine: Engine, tables: Tables, who: str, trigger: str = "cli") -> None:
    """Off, keeping the bypass secret (it serves administrators in Err2/Err3 states too)."""
    with engine.begin() as conn:
        conn.execute(
            tables.state.update().values(
                maintenance_mode="off",
                maintenance_message=None,
                maintenance_until=None,
                maintenance_start=None,
                maintenance_end=None,
                maintenance_set_by=who,
                maintenance_set_at=utcnow(),
            )
        )
        _journal(conn, tables, who, trigger, "off")
    log.warning("maintenance off, by %s", who)


def set_secret(
    engine: Engine, tables: Tables, secret_hash: str, who: str, trigger: str = "cli"
) -> None:
    """A new bypass secret (its hash), leaving the mode as it is: old cookies stop working."""
    with engine.begin() as conn:
        if conn.execute(select(tables.state.c.id)).first() is None:
            raise MaintenanceError("nothing is installed yet, so there is no site to bypass")
        conn.execute(tables.state.update().values(maintenance_secret=secret_hash))
        _journal(conn, tables, who, trigger, "new bypass secret")
    log.warning("maintenance: bypass secret rotated by %s", who)


SETTINGS = (
    "maintenance_mode",
    "maintenance_message",
    "maintenance_until",
    "maintenance_start",
    "maintenance_end",
    "maintenance_allow",
    "maintenance_set_by",
    "maintenance_set_at",
)
"""The columns a deploy saves and puts back (the bypass secret it never touches)."""


def snapshot(engine: Engine | Connection, tables: Tables) -> dict[str, Any] | None:
    """The maintenance settings as stored now; None when nothing is installed."""
    query = select(*(tables.state.c[name] for name in SETTINGS)).order_by(tables.state.c.id)
    if isinstance(engine, Connection):
        row = engine.execute(query).first()
    else:
        with engine.connect() as conn:
            row = conn.execute(query).first()
    return None if row is None else dict(row._mapping)


def restore(
    engine: Engine, tables: Tables, saved: dict[str, Any], expected: dict[str, Any], who: str
) -> bool:
    """Put `saved` back, exactly, unless somebody changed the settings since they read
    `expected`: then theirs stand (False), rather than being silently undone."""
    with engine.begin() as conn:
        if snapshot(conn, tables) != expected:
            log.warning("maintenance: %s found the settings changed meanwhile; left as set", who)
            return False
        conn.execute(tables.state.update().values(**saved))
        note = f"previous settings restored ({saved['maintenance_mode'] or 'off'})"
        _journal(conn, tables, who, "cli", note)
    log.warning("maintenance: %s, by %s", note, who)
    return True
