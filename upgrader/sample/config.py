"""Where the sample application's files are, in a checkout and in an installed wheel.

The repository keeps the sample's Alembic environment in the top-level
`migrations/` and the installer's customisable files in `install/`; a wheel
ships both inside this package (pyproject.toml maps them). Nothing here
imports Flask: the sample's env.py reads it too.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from upgrader.sample.releases import CURRENT, RELEASES

PACKAGE = Path(__file__).resolve().parent


def _shipped(name: str) -> Path:
    inside = PACKAGE / name  # an installed wheel
    return inside if inside.is_dir() else PACKAGE.parent.parent / name  # a checkout


MIGRATIONS = _shipped("migrations")
"""The sample's Alembic environment (the repository's migrations/)."""

INSTALLER_FILES = _shipped("install")
"""The installer's customisable files (the repository's install/), copied by `upgrader demo`."""

DATABASE_ENV = "SHELF_DATABASE_URL"
"""The sample reads its database URL here, as applications usually do (else a file in its
instance folder)."""


def engine_options(url: str) -> dict[str, Any]:
    """Timeouts for the application's own connections, as docs/embedding.md advises: a
    database that stops answering must make a request fail, not hang a worker for ever."""
    backend = make_url(url).get_backend_name()
    connect_args: dict[str, Any] = {}
    if backend == "postgresql":
        connect_args = {"connect_timeout": 5, "options": "-c statement_timeout=30000"}
    elif backend in ("mysql", "mariadb"):
        connect_args = {"connect_timeout": 5, "read_timeout": 30, "write_timeout": 30}
    elif backend == "sqlite":
        connect_args = {"timeout": 5}
    return {"pool_pre_ping": True, "pool_timeout": 5, "connect_args": connect_args}


def shelf_config(instance_path: str) -> dict[str, object]:
    """The sample's Flask config: its own database setting, and what upgrader needs to know."""
    database = os.environ.get(DATABASE_ENV) or f"sqlite:///{Path(instance_path) / 'shelf.db'}"
    return {
        "SQLALCHEMY_DATABASE_URI": database,
        "UPGRADER_MIGRATIONS": str(MIGRATIONS),
        "UPGRADER_CODE_VERSION": CURRENT,
        "UPGRADER_RELEASES": dict(RELEASES),
    }
