"""Where the sample application keeps its database, migrations and installer.

Imported by upgrader for its defaults, so it must not import Flask.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sampleapp.releases import CURRENT, RELEASES

ROOT = Path(__file__).resolve().parent.parent
"""The checkout that holds sampleapp/, migrations/ and install/."""

INSTANCE = ROOT / "instance"


def default_database_url() -> str:
    return f"sqlite:///{INSTANCE / 'sampleapp.db'}"


def upgrader_config() -> dict[str, Any]:
    """The UPGRADER_* settings of the sample application, as a Flask config holds them."""
    return {
        "UPGRADER_DATABASE_URL": os.environ.get("UPGRADER_DATABASE_URL") or default_database_url(),
        "UPGRADER_MIGRATIONS": str(ROOT / "migrations"),
        "UPGRADER_CODE_VERSION": CURRENT,
        "UPGRADER_INSTALLER_DIR": str(ROOT / "install"),
        "UPGRADER_BACKUP_DIR": str(INSTANCE / "backups"),
        "UPGRADER_RELEASES": dict(RELEASES),
    }
