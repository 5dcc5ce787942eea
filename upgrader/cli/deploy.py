"""`upgrader deploy -- CMD…`: the site in maintenance for exactly the length of a deploy.

Maintenance goes on in the database and, where a static directory is known, at the
web server; the operator's command runs; when it succeeds, pending migrations are
applied; then the previous maintenance settings are put back, after success,
failure or interruption (SIGINT, SIGTERM) alike. The command and the upgrade run
as processes of their own: the upgrade must read the code as the deploy left it on
disk, not as this process imported it.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import click
from sqlalchemy.exc import SQLAlchemyError

from upgrader.cli.context import CliContext, pass_cli
from upgrader.cli.maintenance import when
from upgrader.core import maintenance as mode
from upgrader.core.database import guard_engine
from upgrader.core.tables import Tables, define_tables
from upgrader.http import maintenance as switch
from upgrader.http import static

DEFAULT_MESSAGE = "The site is being updated. It will be back in a few minutes."


class Children:
    """Runs one child at a time in a process group of its own, and hands SIGINT and
    SIGTERM to that whole group (a deploy script and everything it started) instead of
    dying: the caller must live on to restore the settings. A second signal kills, and so
    does `kill_after` seconds without a deploy command's group ending: a shell can outlive
    the signal it was handed (one that arrives while `sh` starts its next command may reach
    neither). Not an upgrade's: it stops itself at the next statement and journals where,
    and a kill would cut that short."""

    def __init__(self, kill_after: float = 10.0) -> None:
        self.signal: int | None = None
        self.child: subprocess.Popen[bytes] | None = None
        self._previous: dict[int, Any] = {}
        self.killable = True  # the child running now is killed `kill_after` past a signal
        self.kill_after = kill_after
        self._killer = threading.Timer(kill_after, self._kill_late)
        self._killer.daemon = True

    def __enter__(self) -> Children:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._received)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._killer.cancel()
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _received(self, signum: int, frame: FrameType | None) -> None:
        first = self.signal is None
        self.signal = self.signal or signum
        self._pass_on(signum if first else signal.SIGKILL)
        if first and self.killable:
            self._killer.start()

    def _kill_late(self) -> None:
        if self._pass_on(signal.SIGKILL):
            click.secho(
                f"The command still ran {self.kill_after:g} s after the signal: killed it.",
                fg="red",
                err=True,
            )

    def _pass_on(self, signum: int) -> bool:
        """Signal the running child's group; False when no child runs."""
        child = self.child
        if child is None or child.poll() is not None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signum)
        return True

    def run(self, argv: Sequence[str], killable: bool = True) -> int:
        """The child's exit status (128 + N when a signal ended it), or 128 + N at once when
        a signal came before it could start."""
        if self.signal is not None:
            return 128 + self.signal
        self.killable = killable
        group: dict[str, Any] = (
            {"process_group": 0} if sys.version_info >= (3, 11) else {"preexec_fn": os.setpgrp}
        )
        try:
            self.child = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, **group)
        except OSError as exc:
            click.secho(f"Cannot run {argv[0]}: {exc.strerror or exc}", fg="red", err=True)
            return 127  # as a shell says "command not found"
        if self.signal is not None:  # it came while the child was being started
            self._pass_on(self.signal)
        status = self.child.wait()
        return status if status >= 0 else 128 - status


class StaticFiles:
    """The web server's page and flag as they were, to be put back byte for byte."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self.page: bytes | None = None
        self.flag: bytes | None = None
        if directory is not None:
            self.page = _read(Path(directory) / static.PAGE)
            self.flag = _read(static.flag_path(directory))

    def restore(self) -> None:
        if self.directory is None:
            return
        if self.page is not None:
            static.replace_file(Path(self.directory) / static.PAGE, self.page)
        if self.flag is not None:
            static.replace_file(static.flag_path(self.directory), self.flag)
        else:
            static.remove_flag(self.directory)


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


@click.command(context_settings={"ignore_unknown_options": True})
@click.option("--message", default=DEFAULT_MESSAGE, show_default=True, help="What visitors read.")
@click.option("--until", metavar="WHEN", help="Expected end (ISO or +30m): becomes Retry-After.")
@click.option(
    "--static",
    "static_dir",
    type=click.Path(path_type=Path),
    help="The web server's static directory (default: UPGRADER_STATIC_DIR).",
)
@click.option("--no-upgrade", is_flag=True, help="Only the command: apply no migration after.")
@click.option("--no-backup", is_flag=True, help="Upgrade without a backup (you made your own).")
@click.option(
    "--kill-after",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    metavar="SECONDS",
    help="After SIGINT or SIGTERM, kill the command if it is still running this long after.",
)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@pass_cli
def deploy(
    obj: CliContext,
    message: str,
    until: str | None,
    static_dir: Path | None,
    no_upgrade: bool,
    no_backup: bool,
    kill_after: float,
    command: tuple[str, ...],
) -> int:
    """Run a deploy command with the site in maintenance, then upgrade, then put the
    previous maintenance settings back (after failure or Ctrl-C too).

    \b
      upgrader --app myapp deploy -- ./deploy.sh 1.4.0
      upgrader --app myapp deploy --until +15m -- sh -c 'git pull && pip install .'

    Exits with the command's status; with the upgrade's when the command succeeded
    and the upgrade did not; 130 or 143 when interrupted.
    """
    settings = obj.settings
    actor = f"{_user()} (deploy)"
    tables = define_tables(settings.table_prefix)
    directory = static_dir or settings.static_dir
    request = mode.MaintenanceRequest(level="block", message=message, until=when(until))
    engine = guard_engine(settings)
    try:
        saved = mode.snapshot(engine, tables)
        if saved is None:
            raise click.ClickException(
                f"nothing is installed yet: deploy the code, then run `{settings.cli} install`"
            )
        files = StaticFiles(directory)
        ours: dict[str, Any] | None = None
        with Children(kill_after) as children:
            try:
                switch.switch_on(settings, request, actor, static_dir=directory, engine=engine)
                ours = mode.snapshot(engine, tables)
                flag = (
                    f"; the web server's flag is {static.flag_path(directory)}" if directory else ""
                )
                click.echo(f"Maintenance is on for the deploy{flag}.")
                click.echo(f"Running: {' '.join(command)}")
                status = children.run(command)
                if children.signal is None and status != 0:
                    click.secho(f"The deploy command failed (exit status {status}).", fg="red")
                elif children.signal is None and not no_upgrade:
                    click.echo("The deploy command succeeded; applying pending migrations.")
                    upgrade = [*settings.argv(), "upgrade", "--yes"]
                    status = children.run(
                        upgrade + (["--no-backup"] if no_backup else []), killable=False
                    )
            finally:
                _restore(engine, tables, saved, ours, actor, files)
            if children.signal is not None:
                name = signal.Signals(children.signal).name
                click.secho(f"Interrupted by {name}: the previous settings are back.", fg="red")
                return 128 + children.signal
        if status != 0:
            click.echo("The site's state now:")
            children.run([*settings.argv(), "status"])
        return status
    finally:
        engine.dispose()


def _restore(
    engine: Any,
    tables: Tables,
    saved: dict[str, Any],
    ours: dict[str, Any] | None,
    actor: str,
    files: StaticFiles,
) -> None:
    files.restore()
    if ours is None:
        return  # maintenance never went on: nothing of ours to undo
    try:
        restored = mode.restore(engine, tables, saved, ours, actor)
    except SQLAlchemyError:
        click.secho(
            "The previous maintenance settings could not be put back: maintenance stays on "
            "until you switch it (`upgrader maintenance status` shows it).",
            fg="red",
            err=True,
        )
        raise
    if restored:
        click.echo(
            f"Previous maintenance settings restored ({saved['maintenance_mode'] or 'off'})."
        )
    else:
        click.secho(
            "Maintenance was changed by someone else during the deploy: their settings stand.",
            fg="yellow",
        )


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"
