"""Running migrations through the application's own Alembic environment.

One Alembic pass per upgrade, as `alembic upgrade heads` makes it, through the
application's env.py (which may be one nobody here wrote, such as
Flask-Migrate's). The environment is Alembic's own `EnvironmentContext` with
`configure()` extended, so it works with any env.py, even one that builds its
configure arguments itself. upgrader gives Alembic the plan itself, as a generator:
Alembic takes its revisions from it one at a time, each once the one before has run
and left its transaction. That is when upgrader learns a step ended, and what lets
the journal say "step k of n"; the database's own version table is what a rerun
resumes from. (Alembic's `on_version_apply` would tell the same from inside the
step's transaction, at the price of an object built for every revision.)

The env.py only has to honour `sqlalchemy.url`, or find its database itself
(Flask-Migrate's does, inside the application context we provide).
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from alembic import command
from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.script import ScriptDirectory
from sqlalchemy import URL, Connection

from upgrader.core.revisions import alembic_config
from upgrader.settings import Settings

Target = str | tuple[str, ...]
"""What `alembic upgrade` is asked to reach: "heads", a revision, or several (one per
branch, for `upgrade --online`, which applies only part of the pending revisions)."""


def migration_config(settings: Settings, url: URL, output: io.StringIO | None = None) -> Config:
    """Alembic's Config as the application's own alembic.ini makes it (when there is one),
    pointed at the database to migrate."""
    cfg = alembic_config(Path(settings.migrations), settings.alembic_config)
    if output is not None:
        cfg.output_buffer = output
    # ConfigParser interpolation: a '%' of a URL-encoded password must be doubled.
    cfg.set_main_option(
        "sqlalchemy.url", url.render_as_string(hide_password=False).replace("%", "%%")
    )
    cfg.attributes["configure_logger"] = False
    return cfg


@contextlib.contextmanager
def application_context(app: Any) -> Iterator[None]:
    """Flask-Migrate style env.py files read `current_app`: give them one."""
    if app is not None and hasattr(app, "app_context"):
        with app.app_context():
            yield
    else:
        yield


class Hooks(Protocol):
    """What a run hears from Alembic (engine/steps.py), on Alembic's own connection."""

    def configured(self, connection: Connection | None) -> None: ...

    def planned(self, revisions: list[str], connection: Connection | None) -> None: ...

    def settled(self, revision: str, connection: Connection | None) -> None: ...


def _environment(
    cfg: Config, script: ScriptDirectory, fn: Any, target: Target, hooks: Hooks
) -> Any:
    """Alembic's own environment, whose `configure()` tells the hooks which connection
    the env.py gave it. (Alembic installs the instance's attributes as the
    `alembic.context` module's, so an instance attribute, not a subclass, is what env.py
    calls.)"""
    environment = EnvironmentContext(cfg, script, fn=fn, destination_rev=target)
    configure = environment.configure

    def configure_with_hook(*args: Any, **kwargs: Any) -> None:
        quiet_alembic()  # after the env.py's fileConfig(): progress is upgrader's to print
        configure(*args, **kwargs)
        hooks.configured(environment.get_context().connection)

    environment.configure = configure_with_hook  # type: ignore[method-assign]
    return environment


def quiet_alembic() -> None:
    """Alembic's INFO lines would interleave with upgrader's progress; the env.py's logging
    config may also have switched upgrader's own logger off (fileConfig's default)."""
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("upgrader").disabled = False


def plan_upgrade(script: ScriptDirectory, target: Target, heads: tuple[str, ...]) -> list[str]:
    """The revisions `alembic upgrade <target>` applies from `heads`, in Alembic's order."""
    current: Any = heads  # Alembic passes the version table's heads, typed as a str
    destination: Any = target  # its revision map takes several too, typed as a str
    return [step.revision.revision for step in script._upgrade_revs(destination, current)]


def run_upgrade(
    cfg: Config,
    target: Target,
    hooks: Hooks,
    app: Any = None,
    script: ScriptDirectory | None = None,
) -> None:
    """`alembic upgrade <target>` in one pass (what `command.upgrade` does), telling `hooks`
    the plan and each applied revision. `script` may be one already loaded (its revision map
    is then not built again)."""
    script = script or ScriptDirectory.from_config(cfg)

    destination: Any = target  # Alembic's revision map takes several, typed as a str

    def plan(heads: Any, context: Any) -> Iterator[Any]:
        steps = script._upgrade_revs(destination, heads)
        hooks.planned([step.revision.revision for step in steps], context.connection)
        return _one_at_a_time(steps, context, hooks)

    with application_context(app), _environment(cfg, script, plan, target, hooks):
        script.run_env()


def _one_at_a_time(steps: list[Any], context: Any, hooks: Hooks) -> Iterator[Any]:
    """Alembic's steps as it takes them (`for step in fn(heads, context)`, each run inside
    `begin_transaction(_per_migration=True)`): when it asks for the next one, the step
    before has run and left that transaction. Telling the hooks then costs nothing per
    statement, where connection events would tax each of the migrations' own."""
    for step in steps:
        yield step
        hooks.settled(step.revision.revision, context.connection)


def stamp_revisions(cfg: Config, revisions: list[str], purge: bool, app: Any = None) -> None:
    """Alembic's `stamp`, through the application's env.py: records, migrates nothing."""
    with application_context(app):
        command.stamp(cfg, revisions, purge=purge)


class OfflineSQLError(Exception):
    """A revision cannot be written out as SQL; `partial` holds the SQL up to it."""

    def __init__(self, message: str, partial: str) -> None:
        super().__init__(message)
        self.partial = partial


def offline_sql(
    settings: Settings,
    url: URL,
    start: str | None,
    app: Any = None,
    end: str = "heads",
    script: ScriptDirectory | None = None,
) -> str:
    """The SQL an upgrade would run, from Alembic's offline mode (what `alembic upgrade
    start:end --sql` does); the database is not touched. `script` may be one already
    loaded: its revision files are then not read again.

    A data migration that reads rows cannot run offline; the error names it.
    """
    buffer = io.StringIO()
    cfg = migration_config(settings, url, buffer)
    script = script or ScriptDirectory.from_config(cfg)
    destination: Any = end

    def upgrade(rev: Any, context: Any) -> Any:
        return script._upgrade_revs(destination, rev)

    try:
        with (
            application_context(app),
            EnvironmentContext(
                cfg, script, fn=upgrade, as_sql=True, starting_rev=start, destination_rev=end
            ),
        ):
            script.run_env()
    except Exception as exc:
        partial = buffer.getvalue()
        # Alembic announces each revision before running it: the last one named failed.
        reached = re.findall(r"-- Running upgrade (\S*) -> (\S+)", partial)
        at = f"revision {reached[-1][1]}" if reached else "the first revision"
        raise OfflineSQLError(
            f"{at} cannot be written out as SQL ({type(exc).__name__}: {exc}). Alembic's "
            "offline mode cannot run what needs the live database: migrations that read "
            "data, and batch operations on SQLite (they reflect the table first). Run the "
            "upgrade online instead",
            partial,
        ) from exc
    return buffer.getvalue()
