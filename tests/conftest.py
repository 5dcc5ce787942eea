"""Fixtures: a fresh, empty database per test on SQLite, PostgreSQL and MariaDB/MySQL.

The server backends come from TEST_POSTGRESQL_URL and TEST_MYSQL_URL; a
backend whose variable is unset is skipped (.ci/run sets both, and fails when
a server is missing, so CI never skips them).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, make_url, text

SERVER_URLS = {
    "postgresql": os.environ.get("TEST_POSTGRESQL_URL"),
    "mysql": os.environ.get("TEST_MYSQL_URL"),
}


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings read UPGRADER_* variables: none may leak in from the caller's shell."""
    for key in list(os.environ):
        if key.startswith("UPGRADER_"):
            monkeypatch.delenv(key)


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    if name != "sqlite" and not SERVER_URLS[name]:
        pytest.skip(f"TEST_{name.upper()}_URL is not set")
    return name


@pytest.fixture(params=["postgresql", "mysql"])
def server_backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    if not SERVER_URLS[name]:
        pytest.skip(f"TEST_{name.upper()}_URL is not set")
    return name


@pytest.fixture
def server_db_url(server_backend: str) -> Iterator[str]:
    yield from fresh_server_database(server_backend)


@pytest.fixture
def db_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """A URL to a database of its own that no other test touches, dropped afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'app.db'}"
        return
    yield from fresh_server_database(backend)


def fresh_server_database(backend: str) -> Iterator[str]:
    server = make_url(SERVER_URLS[backend] or "")
    name = f"upg_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            force = " WITH (FORCE)" if backend == "postgresql" else ""
            conn.execute(text(f"DROP DATABASE IF EXISTS {name}{force}"))
        admin.dispose()
