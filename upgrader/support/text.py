"""The diagnosis and the doctor report as people read them in a terminal, a ticket or the
installer's failure page: `upgrader status`, `upgrader doctor`, the wizard's report."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import click

from upgrader import i18n
from upgrader.core.diagnosis import Diagnosis
from upgrader.core.states import State
from upgrader.core.times import local


def _style(diagnosis: Diagnosis) -> dict[str, Any]:
    if diagnosis.state is State.OK:
        return {"fg": "green", "bold": True}
    if diagnosis.state.error_code is None:  # serving, maintenance, not installed
        return {"fg": "yellow", "bold": True}
    return {"fg": "red", "bold": True}


def render_status(d: Diagnosis, locale_dir: i18n.Locales = None) -> str:
    _ = i18n.gettext_for(i18n.from_environment(locale_dir), locale_dir)  # the locale's
    headline = d.headline_in(_)
    lines = [click.style(f"{headline} · {d.state.value}", **_style(d)), d.summary_in(_), ""]
    rows: list[tuple[str, str]] = [
        ("code", f"{d.code_version}   heads: {', '.join(d.code_heads) or 'none'}"),
        (
            "database",
            f"{d.schema_version or '-'}   revisions: {', '.join(d.database_revisions) or 'none'}",
        ),
    ]
    if d.pending_revisions:
        rows.append(("pending", f"{len(d.pending_revisions)} revision(s)"))
        rows.extend(
            ("", f"  {r.id}  {r.message}" + ("" if r.phase == "blocking" else f"  [{r.phase}]"))
            for r in d.pending_revisions
        )
    if d.compatible_heads:
        rows.append(("compatible", f"code with heads {', '.join(d.compatible_heads)} still fits"))
    if d.run is not None:
        r = d.run
        progress = f", step {r.step} of {r.steps}" if r.steps else ""
        rows.append(
            (
                "last run",
                f"#{r.id} {r.kind} {r.status}{progress} ({r.from_version or '-'} → {r.to_version}, "
                f"{r.trigger}, {r.actor or '?'}@{r.host}, "
                f"started {local(r.started_at)})",
            )
        )
    if d.maintenance is not None and d.maintenance.mode != "off":
        m = d.maintenance
        active = (
            "active"
            if m.active(d.checked_at)
            else "scheduled"
            if m.upcoming(d.checked_at)
            else "inactive"
        )
        rows.append(("maintenance", f"{m.mode} ({active}){': ' + m.message if m.message else ''}"))
    if d.installer_present:
        installer = "present: delete install/ now" if d.state is State.OK else "present"
    else:
        installer = "absent"
    rows.append(("installer", installer))
    width = max(len(k) for k, _ in rows)
    lines.extend(f"  {k:<{width}}  {v}" for k, v in rows)
    if d.details:
        lines.append("")
        lines.extend(f"  - {detail}" for detail in d.details)
    if d.fix:
        lines += ["", click.style("Fix: ", bold=True) + d.fix]
    return "\n".join(lines)


Report = dict[str, Any]


def render_doctor(d: Diagnosis, report: Report) -> str:
    """The doctor report as text: a section per part, in the order support reads them."""
    made = report["report"]
    out = [
        f"== Report: {made['local_time']} on {made['host']} by {made['user'] or '?'}",
        f"  time zone        {made['time_zone']} (times below are in it)",
        "",
        "== Status",
        render_status(d),
    ]
    for section in SECTIONS:
        lines = section(report)
        if lines:  # a section with nothing to say says nothing
            out += ["", *lines]
    return "\n".join(out)


def _configuration(report: Report) -> list[str]:
    out = ["== Configuration (value, and where it came from)"]
    for name, item in report["configuration"].items():
        if item["value"] is not None and item["value"] != "":
            out.append(f"  {name:<16} {item['value']}   [{item['source']}]")
    unset = [n for n, item in report["configuration"].items() if item["value"] in (None, "")]
    if unset:
        out.append(f"  not set: {', '.join(unset)}")
    return out


def _facts(title: str, key: str) -> Callable[[Report], list[str]]:
    def section(report: Report) -> list[str]:
        return [f"== {title}", *(f"  {k:<16} {v}" for k, v in report[key].items())]

    return section


def _pending(report: Report) -> list[str]:
    pending = report["pending_revisions"]
    return [
        f"== Pending revisions ({len(pending)})",
        *(f"  {p['revision']}  {p['message']}" for p in pending),
    ]


MAINTENANCE_KEYS = ("mode", "active", "upcoming", "message", "until", "start", "end", "allow",
                    "bypass_secret", "set_by", "set_at")  # fmt: skip


def _maintenance(report: Report) -> list[str]:
    m = report["maintenance"]
    if not m or m["mode"] == "off":
        return [
            "== Maintenance",
            "  off" + (f" (last set by {m['set_by']})" if m and m.get("set_by") else ""),
        ]
    out = ["== Maintenance"]
    for key in MAINTENANCE_KEYS:
        if m.get(key) not in (None, [], ""):
            value = _when(m[key]) if key in ("until", "start", "end", "set_at") else m[key]
            out.append(f"  {key:<16} {value}")
    return out


def _nodes(report: Report) -> list[str]:
    seen = report.get("nodes")
    out = [f"== Nodes (seen in the last minute: {len(seen['seen']) if seen else '?'})"]
    if seen is None:
        return [*out, "  cannot be read"]
    for n in seen["seen"]:
        out.append(
            f"  {n['host']} pid {n['pid']} {n['kind']} {n['code_version']}"
            f" heads {','.join(n['heads']) or '-'}, seen {n['seconds_since_seen']} s ago"
        )
    return [*out, f"  {seen['verdict']}"]


def _backups(report: Report) -> list[str]:
    backups = report["backups"]
    place = backups["directory"]
    out = [
        "== Backups",
        f"  directory        {place['path']}{'' if place.get('exists') else ' (not yet)'}",
    ]
    if "free" in place:
        out.append(f"  free space       {place['free']}")
    for name, tool in backups["tools"].items():
        out.append(f"  {name:<16} {tool['version'] or '-'}  {tool['path'] or 'NOT INSTALLED'}")
    checks = backups["preflight"]
    out.append(f"  pre-flight       {'ok' if checks['ok'] else 'PROBLEMS'}")
    out.extend(f"    - {problem}" for problem in checks["problems"])
    if checks.get("note"):
        out.append(f"    ({checks['note']})")
    for left in backups.get("credential_leftovers", []):
        out.append(
            f"  LEFT BEHIND      {left}: a password file of a killed backup (any upgrader "
            "command but doctor removes it)"
        )
    return out


def _journal(report: Report) -> list[str]:
    out = [f"== Journal (last {len(report['runs'])})"]
    for run in report["runs"]:
        out.extend(_run_lines(run))
    return out


def _run_lines(run: dict[str, Any]) -> list[str]:
    if "error" in run and "id" not in run:
        return [f"  cannot read: {run['error']}"]
    started = _when(run["started_at"])
    who = f"{run['trigger']} {run['actor']}@{run['host']}" + (
        f" from {run['client']}" if run.get("client") else ""
    )
    if run["kind"] == "maintenance":
        return [f"  #{run['id']} {started} maintenance {run['note']}  ({who})"]
    out = [
        f"  #{run['id']} {started} {run['kind']} {run['status']} "
        f"{run['from_version'] or '-'} → {run['to_version']}, {run['took']}"
        + (f", step {run['step']}/{run['steps']}" if run["steps"] else "")
        + f" ({who} pid {run['pid']})"
    ]
    if run["status"] != run["journal_status"]:
        out.append(f"      journal says {run['journal_status']}: no process runs it")
    for step in run["step_times"]:
        seconds = "-" if step["seconds"] is None else f"{step['seconds']:.2f} s"
        out.append(f"      {step['position']}. {step['revision']} {step['status']} {seconds}")
    out.extend(
        f"      {key}: {run[key]}" for key in ("error", "backup_path", "note") if run.get(key)
    )
    return out


def _run_log(report: Report) -> list[str]:
    log = report["run_log"]
    out = [f"== Run log: {log['path']} (last {len(log['lines'])} lines)"]
    out.extend(f"  {line}" for line in log["lines"])
    if log.get("note") or log.get("error"):
        out.append(f"  ({log.get('note') or log.get('error')})")
    return out


def _sessions(report: Report) -> list[str]:
    sessions = report.get("sessions")
    if not sessions:
        return []
    out = [f"== Other database sessions ({len(sessions)})"]
    for s in sessions:
        if "error" in s:
            out.append(f"  cannot list them: {s['error']}")
            continue
        out.append(
            f"  {s['session']} {s['user']} {s['state']} {s['seconds']}s: {s['statement']}"
            + (f"  [locks: {s['locks']}]" if s.get("locks") else "")
        )
    return out


def _installer(report: Report) -> list[str]:
    inst = report["installer"]
    return ["== Installer", f"  {'present' if inst['present'] else 'absent'}: {inst['path']}"]


SECTIONS: tuple[Callable[[Report], list[str]], ...] = (
    _configuration,
    _facts("Environment", "environment"),
    _facts("Database", "database"),
    _facts("Code", "code"),
    _pending,
    _maintenance,
    _nodes,
    _backups,
    _journal,
    _run_log,
    _sessions,
    _installer,
)


def _when(iso: str | None) -> str:
    """An ISO time of the report (UTC, "…Z"), in the reader's zone, with the zone."""
    if not iso:
        return "-"
    return local(dt.datetime.fromisoformat(iso.rstrip("Z")))
