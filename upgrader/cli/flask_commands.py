"""`flask --app yourapp upgrader …`: upgrader's commands under Flask's own command line, on
the application Flask loads (registered as a `flask.commands` entry point, so any Flask
application in the environment has them; the extension need not add them)."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import click
from flask.cli import AppGroup, ScriptInfo

from upgrader.cli.context import CliContext, exit_status
from upgrader.cli.lazy import COMMANDS, LazyGroup


class _Group(LazyGroup, AppGroup):
    """The same exit statuses and error handling as the `upgrader` console script."""

    lazy = MappingProxyType(COMMANDS)

    def invoke(self, ctx: click.Context) -> Any:
        ctx.exit(exit_status(lambda: super(_Group, self).invoke(ctx)))


@click.group("upgrader", cls=_Group)
@click.option(
    "-d",
    "--directory",
    metavar="DIR",
    help="The migrations directory (default: Flask-Migrate's, or UPGRADER_MIGRATIONS).",
)
@click.pass_context
def cli_group(ctx: click.Context, directory: str | None) -> None:
    """upgrader's commands, for this application."""
    info = ctx.ensure_object(ScriptInfo)
    app = info.load_app()  # as Flask's own commands find it
    flags = {"app": info.app_import_path, "migrations": directory}
    ctx.obj = CliContext(flags, app=app, via_flask=True, command=ctx.invoked_subcommand)
