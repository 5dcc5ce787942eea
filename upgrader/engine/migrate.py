"""Running migrations through the application's own Alembic environment.

upgrader calls `alembic.command.upgrade` once per revision, with the
application's env.py (which may be one nobody here wrote, such as
Flask-Migrate's). One call per revision is what lets the journal say "step k
of n" and what makes a rerun resume exactly where the database stands, with
any env.py: the env.py only has to honour `sqlalchemy.url`, or find its
database itself (Flask-Migrate's does, inside the application context we
provide).
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import URL

from upgrader.core.revisions import alembic_config


def migration_config(migrations: Path, url: URL, output: io.StringIO | None = None) -> Config:
    cfg = alembic_config(migrations)
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


def apply_revision(cfg: Config, revision: str, app: Any = None) -> None:
    with application_context(app):
        command.upgrade(cfg, revision)


def stamp_revisions(cfg: Config, revisions: list[str], purge: bool, app: Any = None) -> None:
    """Alembic's `stamp`, through the application's env.py: records, migrates nothing."""
    with application_context(app):
        command.stamp(cfg, revisions, purge=purge)


class OfflineSQLError(Exception):
    """A revision cannot be written out as SQL; `partial` holds the SQL up to it."""

    def __init__(self, message: str, partial: str) -> None:
        super().__init__(message)
        self.partial = partial


def offline_sql(migrations: Path, url: URL, start: str | None, app: Any = None) -> str:
    """The SQL an upgrade would run, from Alembic's offline mode; the database is not touched.

    A data migration that reads rows cannot run offline; the error names it.
    """
    buffer = io.StringIO()
    cfg = migration_config(migrations, url, buffer)
    try:
        with application_context(app):
            command.upgrade(cfg, f"{start}:heads" if start else "heads", sql=True)
    except Exception as exc:
        partial = buffer.getvalue()
        # Alembic announces each revision before running it: the last one named failed.
        reached = re.findall(r"-- Running upgrade (\S*) -> (\S+)", partial)
        at = f"revision {reached[-1][1]}" if reached else "the first revision"
        raise OfflineSQLError(
            f"{at} cannot be written out as SQL ({type(exc).__name__}: {exc}); "
            "migrations that read data must run online (`upgrader upgrade`)",
            partial,
        ) from exc
    return buffer.getvalue()
