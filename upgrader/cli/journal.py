"""`upgrader history` and `upgrader unlock`."""

from __future__ import annotations

import json

import click

from upgrader.cli.context import CliContext, pass_cli
from upgrader.core import storage
from upgrader.core.database import guard_engine
from upgrader.engine.runner import EngineError, Runner


@click.command()
@click.option("--limit", default=20, show_default=True, help="How many runs.")
@click.option("--json", "as_json", is_flag=True, help="As a JSON list.")
@pass_cli
def history(obj: CliContext, limit: int, as_json: bool) -> int:
    """The journal: who ran what, from where, when, from → to, outcome, duration."""
    settings = obj.settings
    engine = guard_engine(settings)
    try:
        with engine.connect() as conn:
            runs = storage.recent_runs(conn, storage.define_tables(settings.table_prefix), limit)
    finally:
        engine.dispose()
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in runs], indent=2))
        return 0
    if not runs:
        click.echo("The journal is empty.")
    for r in runs:
        if r.kind in storage.SETTINGS_KINDS:  # a change of settings: what, and who
            click.echo(
                f"#{r.id:<4} {r.started_at:%Y-%m-%d %H:%M:%S}  {r.kind} {r.note or ''}  "
                f"({r.trigger} {r.actor or '?'}@{r.host})"
            )
            continue
        took = f"{(r.finished_at - r.started_at).total_seconds():.0f}s" if r.finished_at else "-"
        steps = f" step {r.step}/{r.steps}" if r.steps else ""
        click.echo(
            f"#{r.id:<4} {r.started_at:%Y-%m-%d %H:%M:%S}  {r.kind:<8} {r.status:<11} "
            f"{r.from_version or '-'} → {r.to_version or '-'}  {took:>5}{steps}  "
            f"{r.trigger} {r.actor or '?'}@{r.host} pid {r.pid}"
        )
        for label, value in (("error", r.error), ("backup", r.backup_path), ("note", r.note)):
            if value:
                click.echo(f"        {label}: {value}")
    return 0


@click.command()
@click.option("--force", is_flag=True, help="Also close a run whose lease is still live.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation with --force.")
@pass_cli
def unlock(obj: CliContext, force: bool, yes: bool) -> int:
    """Close a run whose process is gone, so the state stops saying it is running."""
    if force and not yes:
        click.confirm(
            "--force closes a run whose lease is still live. If its process is in fact still "
            "working, the site will look upgradable while it migrates, and a second upgrade "
            "could be started against a half-migrated schema. Continue?",
            abort=True,
        )
    try:
        click.echo(Runner(obj.settings).unlock(force=force))
    except EngineError as exc:
        click.secho(f"Error: {exc}", fg="red", err=True)
        return exc.exit_code
    return 0
