"""`upgrader`: the console script.

Exit statuses (docs/cli.md): 0 ok, 1 Err1 (database unavailable), 2 Err2,
3 Err3, 4 not installed, 5 maintenance, 64 usage or configuration error,
70 internal error. Click's own usage errors would exit 2, which a script
would read as Err2, so they are mapped to 64 here.
"""

from __future__ import annotations

import logging
import os
import sys
from types import MappingProxyType
from typing import Any

import click

from upgrader.cli.context import CliContext, exit_status
from upgrader.cli.lazy import COMMANDS, STANDALONE, LazyGroup

LAZY = {**COMMANDS, **STANDALONE}
"""Every command of the console script, by name: "module:attribute"."""


class UpgraderGroup(LazyGroup):
    lazy = MappingProxyType(LAZY)

    def main(
        self,
        args: Any = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        sys.exit(
            exit_status(
                lambda: super(UpgraderGroup, self).main(
                    args, prog_name or "upgrader", complete_var, False, **extra
                )
            )
        )


@click.group(cls=UpgraderGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="upgrader")
@click.option(
    "--app",
    metavar="MODULE:FACTORY",
    help="The application to guard, as `flask --app` takes it (env UPGRADER_APP).",
)
@click.option("--database-url", metavar="URL", help="SQLAlchemy URL (env UPGRADER_DATABASE_URL).")
@click.option(
    "--migrations", metavar="DIR", help="The Alembic directory (env UPGRADER_MIGRATIONS)."
)
@click.option(
    "-c",
    "--alembic-config",
    metavar="FILE",
    help="The application's alembic.ini, as `alembic -c` takes it, where upgrader does not "
    "find it beside the migrations (env UPGRADER_ALEMBIC_CONFIG).",
)
@click.option(
    "--code-version", metavar="VERSION", help="The code's release (env UPGRADER_CODE_VERSION)."
)
@click.pass_context
def cli(ctx: click.Context, /, **flags: Any) -> None:
    """Keep a web application safe between "new code deployed" and "database migrated".

    Settings come from these flags, then UPGRADER_* environment variables, then
    the application's config, then defaults derived from the application. Name the
    application with --app, or set UPGRADER_DATABASE_URL, UPGRADER_MIGRATIONS and
    UPGRADER_CODE_VERSION; `upgrader demo` shows it all on a sample application.
    """
    ctx.obj = CliContext(flags, command=ctx.invoked_subcommand)


def main() -> None:
    level = os.environ.get("UPGRADER_LOG_LEVEL", "").upper()
    if level:
        logging.basicConfig(
            level=getattr(logging, level, logging.INFO),
            stream=sys.stderr,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
    cli.main()
