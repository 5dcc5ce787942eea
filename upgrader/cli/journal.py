"""`upgrader history` and `upgrader unlock`."""

from __future__ import annotations

import json

import click

from upgrader.cli.context import CliContext, confirm, pass_cli, require_database
from upgrader.core import records, storage
from upgrader.core.database import guard_engine
from upgrader.core.diagnosis import Diagnosis, as_read, diagnose, run_status, run_time
from upgrader.core.tables import define_tables
from upgrader.core.times import local
from upgrader.engine.repair import unlock as unlock_run
from upgrader.engine.site import Installation
from upgrader.support import report


@click.command()
@click.option("--limit", default=20, show_default=True, help="How many entries.")
@click.option("--json", "as_json", is_flag=True, help="As a JSON list.")
@pass_cli
def history(obj: CliContext, limit: int, as_json: bool) -> int:
    """The journal: who ran what, from where, when, from → to, outcome, duration; and who
    changed maintenance. Times in your zone (TZ); a run is "running" only while the
    diagnosis finds its process alive."""
    settings = obj.settings
    engine = guard_engine(settings)
    try:
        d = diagnose(settings, engine=engine, record=False)
        require_database(d)
        with engine.connect() as conn:
            if as_json:
                click.echo(json.dumps(report.journal(conn, settings, d, limit), indent=2))
                return 0
            runs = storage.recent_runs(conn, define_tables(settings.table_prefix), limit)
    finally:
        engine.dispose()
    if not runs:
        click.echo("The journal is empty.")
    for line in render(runs, d):
        click.echo(line)
    return 0


def render(runs: list[records.Run], d: Diagnosis) -> list[str]:
    lines = []
    for r in (as_read(run, d) for run in runs):
        who = f"{r.trigger} {r.actor or '?'}@{r.host}" + (f" from {r.client}" if r.client else "")
        if r.kind in storage.SETTINGS_KINDS:  # a change of settings: what, and who
            lines.append(f"#{r.id:<4} {local(r.started_at)}  {r.kind} {r.note or ''}  ({who})")
            continue
        status = run_status(r, d)
        steps = f", step {r.step}/{r.steps}" if r.steps else ""
        kind = f"{r.kind} --{r.phase}" if r.phase else r.kind
        lines.append(
            f"#{r.id:<4} {local(r.started_at)}  {kind} {status}  "
            f"{r.from_version or '-'} → {r.to_version or '-'}  "
            f"{run_time(r, status, d.checked_at)}{steps}  ({who} pid {r.pid})"
        )
        if status != r.status:
            lines.append(f"        journal: {r.status} (no process runs it any more)")
        for label, value in (("error", r.error), ("backup", r.backup_path), ("note", r.note)):
            if value:
                lines.append(f"        {label}: {value}")
    return lines


@click.command()
@click.option(
    "--force", is_flag=True, help="Also end a run whose process is alive (stopped or hung)."
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation with --force.")
@pass_cli
def unlock(obj: CliContext, force: bool, yes: bool) -> int:
    """Close a run whose process is gone, so the state stops saying it is running."""
    if force and not yes:
        confirm(
            "--force also ends a run whose process is alive (stopped, hung, or on a host "
            "that is gone): its database sessions are ended (on SQLite its process, on this "
            "host, is killed), so it stops where it is. PostgreSQL rolls back what it had not "
            "committed; on MariaDB/MySQL and SQLite a revision may be left half done, and "
            "`status` then says how to recover. Continue?"
        )
    click.echo(unlock_run(Installation(obj.settings), force=force))
    return 0
