"""What every command shares: settings resolved once, on first use, and one error policy."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from functools import cached_property
from typing import Any

import click
from sqlalchemy.exc import DBAPIError

from upgrader.core.database import describe_error, redact
from upgrader.core.diagnosis import Diagnosis, State
from upgrader.engine.backup import remove_credential_leftovers
from upgrader.engine.exits import EngineError
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


class Unreachable(click.ClickException):
    """The database does not answer: nothing a command could read or write (exit 69)."""

    exit_code = EXIT_UNAVAILABLE


def require_database(d: Diagnosis) -> None:
    """Stop here when the diagnosis found no database: every further connection would
    wait its connect timeout again for the same answer."""
    if d.state is State.DATABASE_UNAVAILABLE:
        raise Unreachable(f"the database cannot be reached: {'; '.join(d.details)}. {d.fix}")


class NoTerminal(click.ClickException):
    """A question nobody can answer: stdin is closed or empty (a script, `ssh host cmd`)."""

    exit_code = EXIT_USAGE


def confirm(question: str) -> None:
    """Ask on the terminal; Abort on no. Where nothing can answer (stdin at its end: a
    script, cron, `ssh host 'cmd'`), say how to run the command without asking (exit 64),
    rather than click's bare "Aborted."."""
    if sys.stdin is None or not sys.stdin.isatty():
        click.echo(f"{question} [y/N]: ", nl=False)
        answer = sys.stdin.readline() if sys.stdin is not None else ""
        if not answer:
            click.echo()
            raise NoTerminal("no terminal to confirm: add --yes to run it without asking")
        click.echo(answer.rstrip("\n"))
        if answer.strip().lower() not in ("y", "yes"):
            raise click.Abort()
        return
    click.confirm(question, abort=True)


class QuietPipe:
    """stdout that stops writing, without a word, once its reader has gone
    (`upgrader status | head -1`): the command ends with the exit status it would have had,
    not with an internal error."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.gone = False

    @property
    def encoding(self) -> Any:
        return self.stream.encoding

    @property
    def errors(self) -> Any:
        return self.stream.errors

    def isatty(self) -> bool:
        return bool(self.stream.isatty())

    def fileno(self) -> int:
        return int(self.stream.fileno())

    def write(self, text: str) -> int:
        if not self.gone:
            try:
                return int(self.stream.write(text))
            except BrokenPipeError:
                self._reader_gone()
        return len(text)

    def flush(self) -> None:
        if not self.gone:
            try:
                self.stream.flush()
            except BrokenPipeError:
                self._reader_gone()

    def _reader_gone(self) -> None:
        self.gone = True
        try:  # what is still buffered, and Python's flush at exit, go nowhere
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.stream.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):
            pass


def exit_status(call: Callable[[], Any]) -> int:
    """Run a command and map every outcome to an exit status (docs/cli.md), under
    `upgrader` and `flask upgrader` alike: usage and configuration errors are 64 (never
    click's 2, which reads as Err2), anything unexpected 70 with a redacted message; a
    reader that goes away (`| head -1`) ends nothing early."""
    stdout = sys.stdout
    sys.stdout = QuietPipe(stdout)
    try:
        return _status_of(call)
    finally:
        sys.stdout = stdout


def _status_of(call: Callable[[], Any]) -> int:
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
    except EngineError as exc:  # what the engine refused or what failed, with its status
        click.secho(f"Error: {exc}", fg="red", err=True)
        return exc.exit_code
    except click.Abort:
        click.echo("Aborted.", err=True)
        return 1
    except ConfigError as exc:
        click.echo(f"Error: {exc}", err=True)
        return EXIT_USAGE
    except DBAPIError as exc:  # the database went away, or is not one: say so, not "internal"
        return _database_error(exc)
    except Exception as exc:
        return _internal_error(exc)
    return rv if isinstance(rv, int) else 0


def _database_error(exc: DBAPIError) -> int:
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


def _internal_error(exc: Exception) -> int:
    if os.environ.get("UPGRADER_DEBUG"):
        raise exc
    click.echo(
        f"upgrader: internal error: {type(exc).__name__}: {redact(str(exc))}\n"
        "Set UPGRADER_DEBUG=1 to see the traceback, and send it with "
        "`upgrader doctor` to support.",
        err=True,
    )
    return EXIT_INTERNAL
