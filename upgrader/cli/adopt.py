"""`upgrader adopt`: record the version of a database upgrader has not recorded."""

from __future__ import annotations

import click

from upgrader.cli.context import CliContext, confirm, pass_cli, require_database
from upgrader.core.adopt import AdoptionRefused, plan_adoption
from upgrader.core.adopt import adopt as adopt_database
from upgrader.core.database import safe_url
from upgrader.core.diagnosis import diagnose
from upgrader.support.text import render_status


@click.command()
@click.option(
    "--version",
    "version",
    metavar="VERSION",
    help="The release the database is at (default: the code's, when the schema matches it).",
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_cli
def adopt(obj: CliContext, version: str | None, yes: bool) -> int:
    """Record which release this database is at, changing nothing in its schema.

    For an existing Alembic-managed application that starts using upgrader, and
    to repair a state table with several rows or an unreadable version.
    """
    settings = obj.settings
    try:
        plan = plan_adoption(settings, version)
    except AdoptionRefused as exc:
        if exc.diagnosis is not None:
            require_database(exc.diagnosis)
        raise click.ClickException(f"cannot adopt: {exc}") from exc
    where = safe_url(settings.database_url)
    before = f" (it records {plan.previous!r} now)" if plan.previous else ""
    if not yes:
        confirm(f"Record version {plan.version} for {where}{before}? The schema is not changed.")
    adopt_database(settings, plan)
    click.echo(f"Recorded version {plan.version} for {where}.")
    diagnosis = diagnose(settings)
    click.echo(render_status(diagnosis))
    return 0
