"""`upgrader`: the console script.

Exit statuses (docs/cli.md): 0 ok, 1 Err1 (database unavailable), 2 Err2,
3 Err3, 4 not installed, 5 maintenance, 64 usage or configuration error,
70 internal error. Click's own usage errors would exit 2, which a script
would read as Err2, so they are mapped to 64 here.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from upgrader.cli import adopt, journal, maintenance, run, serve, status
from upgrader.cli.context import CliContext
from upgrader.core.database import redact
from upgrader.settings import ConfigError

EXIT_USAGE = 64
EXIT_INTERNAL = 70


class UpgraderGroup(click.Group):
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
        try:
            rv = super().main(args, prog_name or "upgrader", complete_var, False, **extra)
        except click.UsageError as exc:
            exc.show()
            sys.exit(EXIT_USAGE)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Aborted.", err=True)
            sys.exit(1)
        except ConfigError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(EXIT_USAGE)
        except Exception as exc:
            if os.environ.get("UPGRADER_DEBUG"):
                raise
            click.echo(
                f"upgrader: internal error: {type(exc).__name__}: {redact(str(exc))}\n"
                "Set UPGRADER_DEBUG=1 to see the traceback, and send it with "
                "`upgrader doctor` to support.",
                err=True,
            )
            sys.exit(EXIT_INTERNAL)
        sys.exit(rv if isinstance(rv, int) else 0)


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
    "--code-version", metavar="VERSION", help="The code's release (env UPGRADER_CODE_VERSION)."
)
@click.pass_context
def cli(ctx: click.Context, /, **flags: Any) -> None:
    """Keep a web application safe between "new code deployed" and "database migrated".

    Settings come from these flags, then UPGRADER_* environment variables, then
    the application's config, then defaults (the bundled sample application).
    """
    ctx.obj = CliContext(flags)


COMMANDS = (
    status.status,
    status.doctor,
    run.upgrade,
    run.install,
    run.backup,
    run.restore,
    journal.history,
    journal.unlock,
    adopt.adopt,
    maintenance.maintenance,
    maintenance.webserver,
    serve.serve,
    serve.install_key,
    serve.demo,
)
for command in COMMANDS:
    cli.add_command(command)


def main() -> None:
    cli.main()
