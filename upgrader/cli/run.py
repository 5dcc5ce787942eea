"""`upgrader upgrade`, `install`, `backup`, `restore`: thin commands over the engine."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from upgrader.cli.context import CliContext, confirm, pass_cli
from upgrader.core.database import normalise_url, safe_url
from upgrader.core.diagnosis import State
from upgrader.engine.backup import BackupError, read_backup
from upgrader.engine.migrate import OfflineSQLError, offline_sql
from upgrader.engine.runner import EngineError, Runner, start_detached


class Printer:
    """Progress as people read it: revision k of n, its message, elapsed time."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def __call__(self, event: str, data: dict[str, Any]) -> None:
        elapsed = f"{time.monotonic() - self.started:6.1f}s"
        if event == "run":
            start = data["from"] or "not recorded"
            click.echo(
                f"{elapsed}  run #{data['run_id']}: {start} → {data['to']}, "
                f"{data['steps']} revision(s)"
            )
        elif event == "backup":
            click.echo(f"{elapsed}  backing up the database…")
        elif event == "backup_done":
            click.echo(f"{elapsed}  backup verified: {data['path']} ({data['size']:,} bytes)")
        elif event == "step":
            click.echo(
                f"{elapsed}  [{data['position']}/{data['total']}] {data['revision']}  "
                f"{data['message']}"
            )
        elif event == "step_done" and data.get("first", data["position"]) == data["position"]:
            click.echo(f"{elapsed}        done in {data['duration']:.2f}s")
        elif event == "step_done":  # one transaction for several: committed together
            click.echo(
                f"{elapsed}        done: steps {data['first']} to {data['position']} were "
                "committed together (the env.py runs them in one transaction)"
            )


def _fail(exc: EngineError) -> int:
    click.secho(f"Error: {exc}", fg="red", err=True)
    return exc.exit_code


@click.command()
@click.option("--plan", is_flag=True, help="List the pending revisions and stop.")
@click.option("--sql", is_flag=True, help="Print the SQL (Alembic offline mode) and stop.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (for scripts).")
@click.option("--no-backup", is_flag=True, help="Skip the backup (when you made your own).")
@click.option("--detach", is_flag=True, help="Run in a process of its own and return at once.")
@click.option(
    "--online",
    is_flag=True,
    help="Apply only the revisions declared online, with the site up (docs/multi-node.md).",
)
@click.option(
    "--post-deploy",
    is_flag=True,
    help="Apply the rest, with the site up, once no node runs older code.",
)
@click.option("--force", is_flag=True, help="With --post-deploy: even while old nodes run.")
@click.option("--trigger", type=click.Choice(["cli", "web"]), default="cli", hidden=True)
@click.option("--client", hidden=True, help="The browser's address (runs started from the web).")
@pass_cli
def upgrade(
    obj: CliContext,
    plan: bool,
    sql: bool,
    yes: bool,
    no_backup: bool,
    detach: bool,
    online: bool,
    post_deploy: bool,
    force: bool,
    trigger: str,
    client: str | None,
) -> int:
    """Back up, then apply the pending migrations one by one, journalling each step.

    The site waits while it runs; with --online or --post-deploy it stays up, and only
    the revisions declared so are applied (docs/multi-node.md)."""
    if online and post_deploy:
        raise click.UsageError("--online and --post-deploy are two steps: give one of them")
    if force and not post_deploy:
        raise click.UsageError("--force goes with --post-deploy")
    phase = "online" if online else "post-deploy" if post_deploy else None
    settings = obj.settings
    runner = Runner(settings, progress=Printer(), client=client)
    d = runner.diagnose()
    if d.state is State.DATABASE_UNAVAILABLE:
        click.secho(f"Error: the database cannot be reached: {'; '.join(d.details)}", err=True)
        return 69
    if d.state is State.NOT_INSTALLED:
        click.echo(f"Nothing is installed yet: {d.fix}", err=True)
        return 4
    if d.code == "Err3" or d.state is State.COMPATIBLE_AHEAD:
        click.secho(f"{d.headline}: {'; '.join(d.details)}", fg="red", err=True)
        click.echo(f"Nothing was changed. {d.fix}", err=True)
        return 3
    if sql:
        start = d.database_revisions[0] if len(d.database_revisions) == 1 else None
        url = normalise_url(settings.database_url)
        try:
            script = offline_sql(Path(settings.migrations), url, start, runner.app())
        except OfflineSQLError as exc:  # half a script (an open BEGIN) is worse than none
            click.secho(f"Error: {exc}. Nothing was written.", fg="red", err=True)
            return 1
        click.echo(script)
        return 0
    summary = (
        f"{safe_url(settings.database_url)}: {d.schema_version or 'not recorded'} → "
        f"{d.code_version}, {len(d.pending_revisions)} revision(s) pending"
    )
    if plan or not yes:
        click.echo(summary)
        for position, revision in enumerate(d.pending_revisions, start=1):
            declared = "" if revision.phase == "blocking" else f"  [{revision.phase}]"
            click.echo(f"  {position}. {revision.id}  {revision.message}{declared}")
    if plan:
        return 0
    if d.state.settled and not d.version_to_record:
        click.echo("Already up to date: nothing to do.")
        return 0
    if not yes:
        backup = "without a backup" if no_backup else f"after a backup into {settings.backup_dir}"
        what = f"Apply the {phase} revisions, with the site up," if phase else "Upgrade"
        confirm(f"{what} {backup}?")
    if detach:
        flags = (f"--{phase}",) if phase else ()
        process = start_detached(
            settings,
            backup=not no_backup,
            trigger=trigger,
            extra=(*flags, "--force") if force else flags,
        )
        click.echo(
            f"Started the upgrade in process {process.pid}; follow it with "
            f"`{settings.cli} status` (its output goes to {settings.backup_dir}/upgrade.log)."
        )
        return 0
    try:
        outcome = runner.upgrade(
            backup=not no_backup, trigger=trigger, before=d, phase=phase, force=force
        )
    except EngineError as exc:
        return _fail(exc)
    click.secho(outcome.message[0].upper() + outcome.message[1:] + ".", fg="green", bold=True)
    return 0


@click.command()
@click.option(
    "--release",
    metavar="VERSION",
    help="Install an older release (to reproduce a customer's installation).",
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--trigger", type=click.Choice(["cli", "web"]), default="cli", hidden=True)
@click.option("--client", hidden=True, help="The browser's address (runs started from the web).")
@pass_cli
def install(
    obj: CliContext, release: str | None, yes: bool, trigger: str, client: str | None
) -> int:
    """Create the schema in an empty database, at the code's head or at --release."""
    settings = obj.settings
    runner = Runner(settings, progress=Printer(), client=client)
    target = release or runner.code.version.raw
    if not yes:
        confirm(f"Install release {target} into {safe_url(settings.database_url)}?")
    try:
        outcome = runner.install(release=release, trigger=trigger)
    except EngineError as exc:
        return _fail(exc)
    click.secho(f"Installed {outcome.to_version}.", fg="green", bold=True)
    return 0


@click.command()
@pass_cli
def backup(obj: CliContext) -> int:
    """Back up the database now, verified and checksummed."""
    try:
        saved = Runner(obj.settings).backup()
    except EngineError as exc:
        return _fail(exc)
    click.echo(
        f"{saved.path}\n  {saved.size:,} bytes, sha256 {saved.sha256}\n"
        f"  {len(saved.tables)} tables, version {saved.schema_version or '-'}"
    )
    return 0


@click.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_cli
def restore(obj: CliContext, file: Path, yes: bool) -> int:
    """Replace the database's whole content with a backup upgrader made of it."""
    settings = obj.settings
    try:
        described = read_backup(file)
    except BackupError as exc:
        click.secho(f"Error: {exc}", fg="red", err=True)
        return 1
    if not yes:
        click.echo(
            f"Backup of {described.dialect} database {described.database!r}, taken "
            f"{described.created_at}, at version {described.schema_version or '-'}."
        )
        confirm(
            f"Replace everything in {safe_url(settings.database_url)} with it? "
            "Changes made since the backup are lost."
        )
    try:
        restored = Runner(settings).restore(file)
    except EngineError as exc:
        return _fail(exc)
    click.secho(f"Restored {restored.path}.", fg="green", bold=True)
    return 0


@click.command()
@click.argument("revisions", nargs=-1, required=True)
@click.option("--purge", is_flag=True, help="Empty alembic_version first (overlapping rows).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_cli
def stamp(obj: CliContext, revisions: tuple[str, ...], purge: bool, yes: bool) -> int:
    """Record REVISIONS in alembic_version without migrating (Alembic's stamp, through the
    application's env.py). Only for the repairs `status` names; journalled."""
    settings = obj.settings
    if not yes:
        confirm(
            f"Record {' '.join(revisions)} as the schema's revision in "
            f"{safe_url(settings.database_url)}? No migration runs."
        )
    try:
        click.echo(Runner(settings).stamp(list(revisions), purge=purge))
    except EngineError as exc:
        return _fail(exc)
    return 0


@click.command()
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_cli
def repair(obj: CliContext, yes: bool) -> int:
    """Remove the table copies an interrupted batch migration left behind (_alembic_tmp_*),
    where the original table is still there. Only what `status` names."""
    if not yes:
        confirm("Drop the leftover _alembic_tmp_* tables?")
    try:
        click.echo(Runner(obj.settings).repair())
    except EngineError as exc:
        return _fail(exc)
    return 0
