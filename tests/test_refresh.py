"""A guard's refresh lists the database's tables only when its answer needs the list
(core/storage.py, `remember`): a warm guard must see what a cold one sees, whatever
happened to the database between two refreshes. Each change is made by another
connection, as an upgrade, a restore or an administrator would make it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, MetaData, create_engine

from tests.helpers import add_run, execute, install, settings
from upgrader.core import tables, times
from upgrader.core.cache import DiagnosisCache
from upgrader.core.database import guard_engine
from upgrader.core.diagnosis import diagnose
from upgrader.core.tables import forget_layout

EXPIRED = times.utcnow() - dt.timedelta(minutes=10)
UPGRADERS = ("upgrader_runs", "upgrader_steps", "upgrader_nodes", "upgrader_state")


def drop(*tables: str) -> Callable[[str], None]:
    return lambda url: execute(url, *(f"DROP TABLE {t}" for t in tables))


def everything(url: str) -> None:
    engine = create_engine(url)
    try:
        found = MetaData()
        found.reflect(engine)
        found.drop_all(engine)
    finally:
        engine.dispose()


def cut_off(**run: Any) -> Callable[[str], None]:
    """An upgrade that ended badly while a batch migration's copy of `books` existed."""

    def change(url: str) -> None:
        add_run(url, **run)
        execute(url, "CREATE TABLE _alembic_tmp_books (id INTEGER PRIMARY KEY)")

    return change


# the change, the state a cold guard gives, and what its details must name (if anything)
CHANGES: dict[str, tuple[Callable[[str], None], str, str | None]] = {
    "a failed upgrade left a batch copy": (
        cut_off(status="failed", error="OperationalError"),
        "upgrade_failed",
        "_alembic_tmp_books",
    ),
    "an upgrade cut off left a batch copy": (
        cut_off(lease_expires_at=EXPIRED),
        "upgrade_interrupted",
        "_alembic_tmp_books",
    ),
    "a restore without the journal": (drop("upgrader_runs"), "upgrade_pending", None),
    "a restore without upgrader's tables": (drop(*UPGRADERS), "upgrade_pending", "no upgrader"),
    "alembic_version dropped": (drop("alembic_version"), "schema_unknown", "alembic_version"),
    "the application's tables alone": (
        drop("alembic_version", *UPGRADERS),
        "not_installed",
        "books",
    ),
    "an emptied database": (everything, "not_installed", None),
}


@pytest.fixture
def listings(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The databases whose tables were listed, one entry a listing, as they happen."""
    seen: list[str] = []
    real = tables.tables_in

    def spy(conn: Connection) -> list[str]:
        seen.append(conn.dialect.name)
        return real(conn)

    monkeypatch.setattr(tables, "tables_in", spy)
    return seen


@pytest.mark.parametrize("name", CHANGES)
def test_a_warm_guard_sees_what_a_cold_one_sees(
    name: str, db_url: str, tmp_path: Path, listings: list[str]
) -> None:
    change, state, named = CHANGES[name]
    install(db_url, "1.0.0")
    guard = settings(db_url, tmp_path)
    cache = DiagnosisCache(guard)
    try:
        assert cache.get().state.value == "upgrade_pending"
        cache.invalidate()
        listings.clear()
        assert cache.get().state.value == "upgrade_pending"
        assert not listings  # the settled refresh used the list it had
        change(db_url)
        cache.invalidate()
        warm = cache.get().to_dict()
    finally:
        cache.close()
    engine = guard_engine(guard)
    try:
        forget_layout(engine)
        cold = diagnose(guard, engine=engine).to_dict()
    finally:
        engine.dispose()
    assert (warm["state"], cold["state"]) == (state, state)
    assert named is None or any(named in d for d in warm["details"]), warm["details"]
    del warm["checked_at"], cold["checked_at"]
    assert warm == cold


def test_a_refresh_lists_the_tables_until_all_of_its_own_are_there(
    db_url: str, tmp_path: Path, listings: list[str]
) -> None:
    """Not installed: every refresh lists (the installer is about to create the tables);
    installed: the next refresh lists them once more, then no more."""
    cache = DiagnosisCache(settings(db_url, tmp_path))

    def refresh() -> tuple[str, int]:
        listings.clear()
        cache.invalidate()
        return cache.get().state.value, len(listings)

    try:
        execute(db_url, "CREATE TABLE customers (id INTEGER PRIMARY KEY)")
        assert [refresh(), refresh()] == [("not_installed", 1)] * 2
        install(db_url, "1.0.0")
        assert [refresh(), refresh()] == [("upgrade_pending", 1), ("upgrade_pending", 0)]
    finally:
        cache.close()
