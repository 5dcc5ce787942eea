"""Where the sample application's files are, in a checkout and in an installed wheel.

The repository keeps the sample's Alembic environment in the top-level
`migrations/` and the installer's customisable files in `install/`; a wheel
ships both inside this package (pyproject.toml maps them). Nothing here
imports Flask: the sample's env.py reads it too.
"""

from __future__ import annotations

import os
from pathlib import Path

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


def shelf_config(instance_path: str) -> dict[str, object]:
    """The sample's Flask config: its own database setting, and what upgrader needs to know."""
    database = os.environ.get(DATABASE_ENV) or f"sqlite:///{Path(instance_path) / 'shelf.db'}"
    return {
        "SQLALCHEMY_DATABASE_URI": database,
        "UPGRADER_MIGRATIONS": str(MIGRATIONS),
        "UPGRADER_CODE_VERSION": CURRENT,
        "UPGRADER_RELEASES": dict(RELEASES),
    }
