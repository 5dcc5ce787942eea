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
from typing import Any

import pytest
from sqlalchemy import create_engine, make_url, text

SERVER_URLS = {
    "postgresql": os.environ.get("TEST_POSTGRESQL_URL"),
    "mysql": os.environ.get("TEST_MYSQL_URL"),
}


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings read UPGRADER_* variables: none may leak in from the caller's shell; and
    the command line speaks the locale's language: the tests read English unless they
    ask for another."""
    for key in list(os.environ):
        if key.startswith("UPGRADER_") or key in ("LANGUAGE", "LC_ALL", "LC_MESSAGES"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("LANG", "C.UTF-8")


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


# ------------------------------------------------------- a served site with the installer


class Site:
    def __init__(self, base: str, installer: Path, migrations: Path, env: dict[str, str]) -> None:
        self.base, self.installer, self.migrations = base, installer, migrations
        self.env = env  # the server's upgrader settings, as its operator's shell has them

    @property
    def key(self) -> str:
        from upgrader.core.keys import UPGRADE_KEY as KEY_FILE

        return (self.installer / KEY_FILE).read_text().strip()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    """Start `upgrader serve` for the sample on a database and a migrations directory,
    with the installer's files in tmp_path/install."""
    import shutil
    import subprocess
    import sys

    from tests.helpers import ROOT, SAMPLE, free_port, wait_for_port
    from upgrader.sample.releases import CURRENT

    servers: list[subprocess.Popen[bytes]] = []

    def start(database: str, migrations: Path, version: str = CURRENT, **extra: str) -> Site:
        installer = tmp_path / "install"
        shutil.copytree(ROOT / "install", installer, ignore=shutil.ignore_patterns(".*"))
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("UPGRADER_")}
        env.update(
            UPGRADER_DATABASE_URL=database,
            SHELF_DATABASE_URL=database,
            UPGRADER_APP=SAMPLE,
            UPGRADER_MIGRATIONS=str(migrations),
            UPGRADER_CODE_VERSION=version,
            UPGRADER_INSTALLER_DIR=str(installer),
            UPGRADER_BACKUP_DIR=str(tmp_path / "backups"),
            UPGRADER_CACHE_TTL="0.5",
            **extra,
        )
        servers.append(
            subprocess.Popen(
                [sys.executable, "-m", "upgrader", "serve", "--port", str(port)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        wait_for_port(port)
        ours = {k: v for k, v in env.items() if k.startswith(("UPGRADER_", "SHELF_"))}
        return Site(f"http://127.0.0.1:{port}", installer, migrations, ours)

    yield start
    for server in servers:
        server.terminate()
        server.wait(timeout=10)
