"""The rows of upgrader's tables as the rest of upgrader reads them, and what to do with a
value that does not fit its column (written by hand, by a broken tool, by a restore): it
becomes None and a named problem, never an exception further on."""

from __future__ import annotations

import datetime as dt
import getpass
import os
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Table

from upgrader.core.times import iso

MAINTENANCE_MODES = ("off", "block", "banner")


@dataclass(frozen=True)
class Maintenance:
    """Maintenance as an administrator set it (the web layer interprets allow/secret)."""

    mode: str = "off"
    message: str | None = None
    until: dt.datetime | None = None
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    allow: tuple[str, ...] = ()
    has_secret: bool = False
    secret_hash: str | None = field(default=None, repr=False)  # never rendered anywhere
    set_by: str | None = None
    set_at: dt.datetime | None = None
    problem: str | None = None  # a stored mode we do not know; treated as "block"

    def active(self, now: dt.datetime) -> bool:
        if self.mode == "off":
            return False
        return (self.start is None or self.start <= now) and (self.end is None or now < self.end)

    def upcoming(self, now: dt.datetime) -> bool:
        return self.mode != "off" and self.start is not None and now < self.start

    def to_dict(self, now: dt.datetime) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "active": self.active(now),
            "upcoming": self.upcoming(now),
            "message": self.message,
            "until": iso(self.until),
            "start": iso(self.start),
            "end": iso(self.end),
        }


@dataclass(frozen=True)
class StateRow:
    id: int
    schema_version: str | None
    installed_at: dt.datetime | None
    updated_at: dt.datetime | None
    maintenance: Maintenance
    compatible_heads: tuple[str, ...] = ()  # older code still works on this schema


@dataclass(frozen=True)
class Run:
    id: int
    kind: str
    status: str
    trigger: str
    actor: str | None
    host: str | None
    pid: int | None
    started_at: dt.datetime
    finished_at: dt.datetime | None
    heartbeat_at: dt.datetime | None
    lease_expires_at: dt.datetime | None
    from_version: str | None
    to_version: str | None
    from_revisions: str | None
    to_revisions: str | None
    step: int
    steps: int
    revision: str | None
    message: str | None
    error: str | None
    backup_path: str | None
    backup_checksum: str | None
    backup_size: int | None
    note: str | None
    db_session: str | None = None
    client: str | None = None
    phase: str | None = None  # online | post-deploy: the site stays up while it runs

    def lease_live(self, now: dt.datetime) -> bool:
        return (
            self.status == "running"
            and self.lease_expires_at is not None
            and self.lease_expires_at > now
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "status": self.status,
            "trigger": self.trigger,
            "actor": self.actor,
            "host": self.host,
            "pid": self.pid,
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "heartbeat_at": iso(self.heartbeat_at),
            "lease_expires_at": iso(self.lease_expires_at),
            "from_version": self.from_version,
            "to_version": self.to_version,
            "from_revisions": split_revisions(self.from_revisions),
            "to_revisions": split_revisions(self.to_revisions),
            "step": self.step,
            "steps": self.steps,
            "revision": self.revision,
            "message": self.message,
            "error": self.error,
            "backup_path": self.backup_path,
            "backup_checksum": self.backup_checksum,
            "backup_size": self.backup_size,
            "note": self.note,
            "db_session": self.db_session,
            "client": self.client,
            "phase": self.phase,
        }


def split_revisions(value: str | None) -> list[str]:
    return [r for r in (value or "").split(",") if r]


def join_revisions(revs: Iterable[str]) -> str:
    return ",".join(sorted(revs))


def identity() -> dict[str, Any]:
    """Who and where, for the journal: the OS user, host and process."""
    try:
        user = getpass.getuser()
    except Exception:
        user = None
    return {"actor": user, "host": socket.gethostname(), "pid": os.getpid()}


_EPOCH = dt.datetime(1970, 1, 1)


def typed(table: Table, row: Any, problems: list[str]) -> dict[str, Any]:
    """A row as the model expects it, whatever was written into the database by hand, by
    a broken tool or by a restore: a value that is not of its column's type becomes None
    (or a neutral value where the column may not be empty) and a named problem, never an
    exception further on. Text that is not text is decoded."""
    values: dict[str, Any] = {}
    for key, value in dict(row).items():
        column = table.c.get(key)
        if column is None or value is None:
            values[key] = value
            continue
        good, fixed = _coerce(column.type.python_type, value)
        if not good:
            shown = repr(value)[:40]
            problems.append(
                f"{table.name} row {row.get('id')}: {key} holds {shown}, which is not a "
                f"{column.type.python_type.__name__}: ignored"
            )
            if fixed is None and not column.nullable:
                fixed = _EPOCH if column.type.python_type is dt.datetime else 0
        values[key] = fixed
    return values


def _coerce(kind: type, value: Any) -> tuple[bool, Any]:
    """(fits, the value as `kind`): by the column's Python type."""
    convert = _CONVERT.get(kind)
    return (True, value) if convert is None else convert(value)


def _text(value: Any) -> tuple[bool, Any]:
    if isinstance(value, str):
        return True, value
    if isinstance(value, bytes | bytearray | memoryview):
        return True, bytes(value).decode("utf-8", "replace")
    return True, str(value)


def _time(value: Any) -> tuple[bool, Any]:
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
        return True, value
    try:
        text = value.decode() if isinstance(value, bytes) else str(value)
        parsed = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except (ValueError, UnicodeError):
        return False, None
    return True, parsed.replace(tzinfo=None)


def _integer(value: Any) -> tuple[bool, Any]:
    if isinstance(value, bool):
        return False, None
    if isinstance(value, int):
        return True, value
    try:
        return True, int(str(value).strip())
    except ValueError:
        return False, None


def _number(value: Any) -> tuple[bool, Any]:
    try:
        return True, float(value)
    except (TypeError, ValueError):
        return False, None


_CONVERT: dict[type, Callable[[Any], tuple[bool, Any]]] = {
    str: _text,
    dt.datetime: _time,
    int: _integer,
    float: _number,
}
