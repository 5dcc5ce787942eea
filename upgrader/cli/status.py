"""`upgrader status` and `upgrader doctor`: render the diagnosis, decide nothing."""

from __future__ import annotations

import json
from typing import Any

import click

from upgrader.cli.context import CliContext, pass_cli
from upgrader.core.diagnosis import Diagnosis, State, diagnose


@click.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object (docs/cli.md).")
@pass_cli
def status(obj: CliContext, as_json: bool) -> int:
    """Show the state of the installation; the exit status tells its family."""
    diagnosis = diagnose(obj.settings)
    if as_json:
        click.echo(json.dumps(diagnosis.to_dict(), indent=2))
    else:
        click.echo(render_status(diagnosis))
    return diagnosis.exit_code


@click.command()
@click.option("--json", "as_json", is_flag=True, help="The report as one JSON object.")
@click.option("--runs", default=10, show_default=True, help="How many journal entries to show.")
@pass_cli
def doctor(obj: CliContext, as_json: bool, runs: int) -> int:
    """The report to paste into a support ticket. Read-only; holds no password."""
    from upgrader.core.report import doctor as doctor_report

    diagnosis, report = doctor_report(obj.settings, runs)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(render_doctor(diagnosis, report))
    return diagnosis.exit_code


def _style(diagnosis: Diagnosis) -> dict[str, Any]:
    if diagnosis.state is State.OK:
        return {"fg": "green", "bold": True}
    if diagnosis.state in (State.NOT_INSTALLED, State.MAINTENANCE):
        return {"fg": "yellow", "bold": True}
    return {"fg": "red", "bold": True}


def render_status(d: Diagnosis) -> str:
    lines = [click.style(f"{d.headline} · {d.state.value}", **_style(d)), d.summary, ""]
    rows: list[tuple[str, str]] = [
        ("code", f"{d.code_version}   heads: {', '.join(d.code_heads) or 'none'}"),
        (
            "database",
            f"{d.schema_version or '-'}   revisions: {', '.join(d.database_revisions) or 'none'}",
        ),
    ]
    if d.pending_revisions:
        rows.append(("pending", f"{len(d.pending_revisions)} revision(s)"))
        rows.extend(("", f"  {r.id}  {r.message}") for r in d.pending_revisions)
    if d.run is not None:
        r = d.run
        progress = f", step {r.step} of {r.steps}" if r.steps else ""
        rows.append(
            (
                "last run",
                f"#{r.id} {r.kind} {r.status}{progress} ({r.from_version or '-'} → {r.to_version}, "
                f"{r.trigger}, {r.actor or '?'}@{r.host}, "
                f"started {r.started_at:%Y-%m-%d %H:%M:%S} UTC)",
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


def render_doctor(d: Diagnosis, report: dict[str, Any]) -> str:
    out = ["== Status", render_status(d), "", "== Configuration (value, and where it came from)"]
    for name, item in report["configuration"].items():
        out.append(f"  {name:<16} {item['value']}   [{item['source']}]")
    out += ["", "== Environment"]
    out.extend(f"  {k:<16} {v}" for k, v in report["environment"].items())
    out += ["", "== Database"]
    out.extend(f"  {k:<16} {v}" for k, v in report["database"].items())
    out += ["", "== Code"]
    out.extend(f"  {k:<16} {v}" for k, v in report["code"].items())
    out += ["", f"== Pending revisions ({len(report['pending_revisions'])})"]
    out.extend(f"  {p['revision']}  {p['message']}" for p in report["pending_revisions"])
    out += ["", f"== Journal (last {len(report['runs'])})"]
    for run in report["runs"]:
        if "error" in run and "id" not in run:
            out.append(f"  cannot read: {run['error']}")
            continue
        out.append(
            f"  #{run['id']} {run['started_at']} {run['kind']} {run['status']} "
            f"{run['from_version'] or '-'} → {run['to_version']} via {run['trigger']} "
            f"by {run['actor']}@{run['host']} pid {run['pid']}"
            + (f" step {run['step']}/{run['steps']}" if run["steps"] else "")
        )
        for key in ("error", "backup_path", "note"):
            if run.get(key):
                out.append(f"      {key}: {run[key]}")
    if report.get("sessions"):
        out += ["", f"== Other database sessions ({len(report['sessions'])})"]
        for s in report["sessions"]:
            if "error" in s:
                out.append(f"  cannot list them: {s['error']}")
                continue
            out.append(
                f"  {s['session']} {s['user']} {s['state']} {s['seconds']}s: {s['statement']}"
                + (f"  [locks: {s['locks']}]" if s.get("locks") else "")
            )
    inst = report["installer"]
    out += ["", "== Installer", f"  {'present' if inst['present'] else 'absent'}: {inst['path']}"]
    return "\n".join(out)
