"""What the guard says, besides the pages themselves: the status document anyone may read,
the banner, a maintenance window in words, when to come back, and the problem document
for API clients (RFC 9457). Plain data, in the visitor's language where it is text."""

from __future__ import annotations

import datetime as dt
from typing import Any

from upgrader import i18n
from upgrader.core.diagnosis import Diagnosis
from upgrader.core.records import Maintenance
from upgrader.core.states import State
from upgrader.core.times import utcnow


def public_status(d: Diagnosis, versions: bool = False) -> dict[str, Any]:
    """What any anonymous caller may see (Nextcloud's status.php in spirit): the state, a
    calm summary and when to come back. Versions (which tell an attacker what to try) only
    with UPGRADER_PUBLIC_VERSIONS; administrators get everything."""
    m = d.maintenance
    active = m is not None and m.active(d.checked_at)
    body: dict[str, Any] = {
        "installed": d.state is not State.NOT_INSTALLED,
        "state": d.state.value,
        "code": d.code,
        "maintenance": d.state is State.MAINTENANCE or active,
        "needs_upgrade": d.state.needs_upgrade,
        "summary": d.summary,
    }
    if versions:
        body["versions"] = {"code": d.code_version, "schema": d.schema_version}
    if m is not None and m.mode != "off" and (active or m.upcoming(d.checked_at)):
        body["window"] = {
            "level": m.mode,
            "start": iso_z(m.start),
            "end": iso_z(m.end),
            "until": iso_z(m.until),
            "message": m.message,
        }
    return body


def iso_z(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat() + "Z"


def utc_text(value: dt.datetime) -> str:
    return f"{value:%Y-%m-%d %H:%M} UTC"


def maintenance_notice(m: Maintenance, now: dt.datetime, _: i18n.Translate) -> str:
    """A window as people read it: when it begins (or began) and when it should end."""
    end = m.end or m.until
    if m.upcoming(now) and m.start is not None:
        if end is not None:
            return _("Scheduled maintenance from %(start)s until about %(end)s.") % {
                "start": utc_text(m.start),
                "end": utc_text(end),
            }
        return _("Scheduled maintenance from %(start)s.") % {"start": utc_text(m.start)}
    since = m.start or m.set_at
    if since is not None and end is not None:
        return _("Maintenance since %(start)s, until about %(end)s.") % {
            "start": utc_text(since),
            "end": utc_text(end),
        }
    if since is not None:
        return _("Maintenance since %(start)s.") % {"start": utc_text(since)}
    if end is not None:
        return _("Maintenance until about %(end)s.") % {"end": utc_text(end)}
    return _("Maintenance.")


def banner(d: Diagnosis, admin: bool, _: i18n.Translate) -> dict[str, str] | None:
    """A notice for the page, in the visitor's language: a maintenance window (when it
    began or begins, and its expected end), or what administrators must know."""
    m = d.maintenance
    now = d.checked_at
    if admin and d.state is not State.OK:
        return {"level": "admin", "text": f"{d.headline_in(_)} ({d.state.value}): {d.fix}"}
    if m is not None and m.mode != "off" and (m.active(now) or m.upcoming(now)):
        text = maintenance_notice(m, now, _)
        return {"level": "maintenance", "text": f"{text} {m.message or ''}".strip()}
    if admin and d.installer_present:
        return {
            "level": "admin",
            "text": _(
                "The upgrade is complete: delete the install/ directory from the server, "
                "so nobody can run the installer again."
            ),
        }
    return None


def retry_after(d: Diagnosis, default: float) -> int:
    """Seconds until it is worth asking again: the end of the maintenance set, a short
    while for a running upgrade, else the configured default."""
    m = d.maintenance
    if d.state is State.MAINTENANCE and m is not None:
        end = m.until or m.end
        if end is not None:
            return max(1, int((end - utcnow()).total_seconds()))
    if d.state is State.UPGRADE_RUNNING:
        return 30
    return int(default)


def problem(d: Diagnosis, status: int, retry: int) -> dict[str, Any]:
    """The answer for an API client: RFC 9457 problem details, with the state."""
    return {
        "type": f"urn:upgrader:state:{d.state.value}",
        "title": d.headline,
        "status": status,
        "detail": d.summary,
        "state": d.state.value,
        "code": d.code,
        "retry_after": retry,
    }


def wants_json(accept: str) -> bool:
    """An API client: it asks for JSON before (or without) HTML."""
    accept = accept.lower()
    if "json" not in accept:
        return False
    html = accept.find("text/html")
    return html == -1 or accept.find("json") < html
