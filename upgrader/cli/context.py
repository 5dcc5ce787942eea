"""What every command shares: settings resolved once, on first use, and one error policy."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from functools import cached_property
from typing import Any

import click
from sqlalchemy.exc import DBAPIError

from upgrader.core.database import describe_error, redact
from upgrader.engine.backup import remove_credential_leftovers
from upgrader.settings import ConfigError, Settings, resolve

log = logging.getLogger("upgrader")

EXIT_USAGE = 64
EXIT_UNAVAILABLE = 69
EXIT_INTERNAL = 70
EXIT_BUSY = 75


class CliContext:
    def __init__(
        self,
        flags: dict[str, Any],
        app: Any = None,
        via_flask: bool = False,
        command: str | None = None,
    ) -> None:
        self.flags = flags
        self.app = app  # set by `flask upgrader`: the application Flask already loaded
        self.via_flask = via_flask
        if command != "doctor":  # doctor only reads, and reports them
            for path in remove_credential_leftovers():
                log.warning("removed %s, a password file a killed backup left behind", path)

    @cached_property
    def settings(self) -> Settings:
        return resolve(self.flags, app=self.app, via_flask=self.via_flask)


pass_cli = click.make_pass_decorator(CliContext)


def exit_status(call: Callable[[], Any]) -> int:
    """Run a command and map every outcome to an exit status (docs/cli.md), under
    `upgrader` and `flask upgrader` alike: usage and configuration errors are 64 (never
    click's 2, which reads as Err2), anything unexpected 70 with a redacted message."""
    try:
        rv = call()
    except click.exceptions.Exit:
        raise
    except click.UsageError as exc:
        exc.show()
        return EXIT_USAGE
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.Abort:
        click.echo("Aborted.", err=True)
        return 1
    except ConfigError as exc:
        click.echo(f"Error: {exc}", err=True)
        return EXIT_USAGE
    except DBAPIError as exc:  # the database went away, or is not one: say so, not "internal"
        reason = describe_error(exc)
        if "database is locked" in reason:
            click.echo(
                "Error: the database is busy: an upgrade holds it (SQLite lets one writer in "
                f"at a time). Try again when it has finished. ({reason})",
                err=True,
            )
            return EXIT_BUSY
        click.echo(f"Error: the database cannot be reached or read: {reason}", err=True)
        return EXIT_UNAVAILABLE
    except Exception as exc:
        if os.environ.get("UPGRADER_DEBUG"):
            raise
        click.echo(
            f"upgrader: internal error: {type(exc).__name__}: {redact(str(exc))}\n"
            "Set UPGRADER_DEBUG=1 to see the traceback, and send it with "
            "`upgrader doctor` to support.",
            err=True,
        )
        return EXIT_INTERNAL
    return rv if isinstance(rv, int) else 0
