"""`upgrader upgrade`, `install`, `backup`, `restore`, `stamp`, `repair`: thin commands over
the engine (engine/upgrade.py, engine/repair.py). An engine error ends a command with its
exit status and message (cli/context.py)."""

from __future__ import annotations

from pathlib import Path

import click

from upgrader.cli.context import CliContext, confirm, pass_cli
from upgrader.cli.progress import Printer
from upgrader.core.database import normalise_url, safe_url
from upgrader.core.diagnosis import Diagnosis, State
from upgrader.engine import repair as repairs
from upgrader.engine.backup import read_backup
from upgrader.engine.detach import start_detached
from upgrader.engine.exits import EngineError, refuse_unless_upgradable
from upgrader.engine.migrate import OfflineSQLError, offline_sql
from upgrader.engine.site import Installation
from upgrader.engine.upgrade import install as install_release
from upgrader.engine.upgrade import upgrade as upgrade_site


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
@click.option(
    "--install-empty",
    is_flag=True,
    help="Install an empty database instead (a migration job that runs on every deploy, "
    "the first one included; docs/containers.md).",
)
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
    install_empty: bool,
    trigger: str,
    client: str | None,
) -> int:
    """Back up, then apply the pending migrations one by one, journalling each step.

    The site waits while it runs; with --online or --post-deploy it stays up, and only
    the revisions declared so are applied (docs/multi-node.md)."""
    phase = _phase(online, post_deploy, force)
    printer = Printer()
    site = Installation(obj.settings, progress=printer, client=client)
    with site.session():
        d = site.diagnose()
        if install_empty and d.state is State.NOT_INSTALLED and not (plan or sql):
            return _install_empty(site, d, yes, trigger, printer)
        refuse_unless_upgradable(d, site.cli, busy=False)  # the lock says who runs
        if sql:
            return _print_sql(site, d)
        if plan or not yes:
            _print_plan(site, d)
        if plan:
            return 0
        if d.state.settled and not d.version_to_record:
            click.echo("Already up to date: nothing to do.")
            return 0
        if not yes:
            where = f"after a backup into {site.settings.backup_dir}"
            what = f"Apply the {phase} revisions, with the site up," if phase else "Upgrade"
            confirm(f"{what} {'without a backup' if no_backup else where}?")
        if detach:
            return _detached(site, phase, force, backup=not no_backup, trigger=trigger)
        with printer:
            outcome = upgrade_site(
                site, backup=not no_backup, trigger=trigger, before=d, phase=phase, force=force
            )
        click.secho(outcome.message[0].upper() + outcome.message[1:] + ".", fg="green", bold=True)
        return 0


def _detached(
    site: Installation, phase: str | None, force: bool, *, backup: bool, trigger: str
) -> int:
    flags = (f"--{phase}",) if phase else ()
    extra = (*flags, "--force") if force else flags
    process = start_detached(site.settings, backup=backup, trigger=trigger, extra=extra)
    click.echo(
        f"Started the upgrade in process {process.pid}; follow it with `{site.cli} status` "
        f"(its output goes to {site.settings.backup_dir}/upgrade.log)."
    )
    return 0


def _install_empty(
    site: Installation, d: Diagnosis, yes: bool, trigger: str, printer: Printer
) -> int:
    """`upgrade --install-empty` on a database with nothing in it: the first deployment.
    Not on a SQLite file that is not there: a volume that is not mounted looks the same,
    and installing would start the site afresh beside its real data."""
    if d.missing_file:
        raise click.ClickException(
            f"the database file {d.missing_file} does not exist: if this is the first "
            f"installation, run `{site.cli} install --yes`; if it is not, mount the volume "
            "that holds it"
        )
    if not yes:
        confirm(f"Nothing is installed yet: install release {d.code_version}?")
    with printer:
        outcome = install_release(site, trigger=trigger)
    click.secho(f"Installed {outcome.to_version}.", fg="green", bold=True)
    return 0


def _phase(online: bool, post_deploy: bool, force: bool) -> str | None:
    if online and post_deploy:
        raise click.UsageError("--online and --post-deploy are two steps: give one of them")
    if force and not post_deploy:
        raise click.UsageError("--force goes with --post-deploy")
    return "online" if online else "post-deploy" if post_deploy else None


def _print_sql(site: Installation, d: Diagnosis) -> int:
    """The whole script, or nothing: half a script (an open BEGIN) is worse than none."""
    start = d.database_revisions[0] if len(d.database_revisions) == 1 else None
    url = normalise_url(site.settings.database_url)
    try:
        script = offline_sql(site.settings, url, start, site.app())
    except OfflineSQLError as exc:
        raise EngineError(f"{exc}. Nothing was written") from exc
    click.echo(script)
    return 0


def _print_plan(site: Installation, d: Diagnosis) -> None:
    click.echo(
        f"{safe_url(site.settings.database_url)}: {d.schema_version or 'not recorded'} → "
        f"{d.code_version}, {len(d.pending_revisions)} revision(s) pending"
    )
    for position, revision in enumerate(d.pending_revisions, start=1):
        declared = "" if revision.phase == "blocking" else f"  [{revision.phase}]"
        click.echo(f"  {position}. {revision.id}  {revision.message}{declared}")


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
    printer = Printer()
    site = Installation(obj.settings, progress=printer, client=client)
    if not yes:
        target = release or site.code.version.raw
        confirm(f"Install release {target} into {safe_url(site.settings.database_url)}?")
    with site.session(), printer:
        outcome = install_release(site, release=release, trigger=trigger)
    click.secho(f"Installed {outcome.to_version}.", fg="green", bold=True)
    return 0


@click.command()
@pass_cli
def backup(obj: CliContext) -> int:
    """Back up the database now, verified and checksummed."""
    saved = repairs.backup(Installation(obj.settings))
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
    described = read_backup(file)
    if not yes:
        click.echo(
            f"Backup of {described.dialect} database {described.database!r}, taken "
            f"{described.created_at}, at version {described.schema_version or '-'}."
        )
        confirm(
            f"Replace everything in {safe_url(settings.database_url)} with it? "
            "Changes made since the backup are lost."
        )
    restored = repairs.restore(Installation(settings), file)
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
    click.echo(repairs.stamp(Installation(settings), list(revisions), purge=purge))
    return 0


@click.command()
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_cli
def repair(obj: CliContext, yes: bool) -> int:
    """Remove the table copies an interrupted batch migration left behind (_alembic_tmp_*),
    where the original table is still there. Only what `status` names."""
    if not yes:
        confirm("Drop the leftover _alembic_tmp_* tables?")
    click.echo(repairs.repair(Installation(obj.settings)))
    return 0
