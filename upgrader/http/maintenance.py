"""Maintenance switched for the whole site: in the database (every guard obeys within its
TTL) and at the web server (the static page and its flag, when a static directory is
known). One code path for `upgrader maintenance`, `upgrader deploy` and the admin page,
so the three cannot disagree about what "on" means.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine

from upgrader.core import maintenance as mode
from upgrader.core import records
from upgrader.core.database import guard_engine
from upgrader.core.diagnosis import CodeFacts, diagnose
from upgrader.core.gather import read_database
from upgrader.core.tables import define_tables
from upgrader.http import static
from upgrader.settings import Settings


@contextmanager
def _engine(settings: Settings, engine: Engine | None) -> Iterator[Engine]:
    if engine is not None:
        yield engine
        return
    made = guard_engine(settings)
    try:
        yield made
    finally:
        made.dispose()


def switch_on(
    settings: Settings,
    request: mode.MaintenanceRequest,
    who: str,
    *,
    trigger: str = "cli",
    static_dir: Path | None = None,
    engine: Engine | None = None,
    code: CodeFacts | None = None,
) -> Path | None:
    """On in the database, then the static page and flag; returns the page written."""
    tables = define_tables(settings.table_prefix)
    with _engine(settings, engine) as e:
        mode.switch_on(e, tables, request, who, trigger)
        directory = static_dir or settings.static_dir
        if directory is None:
            return None
        d = diagnose(settings, code=code, engine=e, record=False)
    return static.write(directory, d, settings)


def switch_off(
    settings: Settings,
    who: str,
    *,
    trigger: str = "cli",
    static_dir: Path | None = None,
    engine: Engine | None = None,
) -> Path | None:
    """Off in the database, then the flag removed; returns the flag if there was one."""
    with _engine(settings, engine) as e:
        mode.switch_off(e, define_tables(settings.table_prefix), who, trigger)
    directory = static_dir or settings.static_dir
    if directory is not None and static.remove_flag(directory):
        return static.flag_path(directory)
    return None


def rotate_secret(
    settings: Settings, who: str, *, trigger: str = "cli", engine: Engine | None = None
) -> str:
    """A new bypass secret; returned once, stored only as its hash."""
    secret = mode.new_secret()
    with _engine(settings, engine) as e:
        tables = define_tables(settings.table_prefix)
        mode.set_secret(e, tables, mode.hash_secret(secret), who, trigger)
    return secret


def current(settings: Settings) -> records.Maintenance | None:
    """The maintenance settings stored now (None when there are none, or no database
    answers within the connect timeout): no code version needed, as the web server's
    snippet has none."""
    with _engine(settings, None) as engine:
        facts = read_database(engine, settings, deadline=settings.connect_timeout)
    return facts.states[0].maintenance if len(facts.states) == 1 else None
