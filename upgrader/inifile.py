"""The application's alembic.ini: where `alembic` itself would find it, run from the
project's root. Low in the layers: the settings find it, the diagnosis and the engine read
the migrations through it."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from alembic.config import Config
from alembic.util import coerce_resource_to_filename


def find_ini(migrations: Path, places: Iterable[Path] = ()) -> Path | None:
    """The alembic.ini of `migrations`: inside the directory (Flask-Migrate's layout), or
    one whose script_location names it, in the folders above it (`alembic init migrations`
    puts it beside them; a project with `script_location = app/alembic` two levels up) or
    in `places` (the current directory, the application's folder)."""
    inside = migrations / "alembic.ini"
    if inside.is_file():
        return inside
    wanted = os.path.normpath(migrations.resolve())
    candidates = [parent / "alembic.ini" for parent in list(migrations.parents)[:3]]
    candidates += [place / "alembic.ini" for place in places]
    for ini in dict.fromkeys(candidates):
        if ini.is_file() and wanted in _named(ini):
            return ini
    return None


def scripts_named(ini: Path) -> Path | None:
    """The migrations directory an alembic.ini names (relative to its folder), if it holds
    an env.py: how an application made with `alembic init` says where they are."""
    if not ini.is_file():
        return None
    for folder in _named(ini)[:1]:
        if os.path.isfile(os.path.join(folder, "env.py")):
            return Path(folder)
    return None


def _named(ini: Path) -> list[str]:
    """The folders its script_location may mean: relative to the ini's folder (where
    `alembic` is run from) or to the current directory; `%(here)s` and a package resource
    (`package:folder`) as Alembic reads them."""
    try:
        location = Config(str(ini)).get_main_option("script_location") or ""
    except Exception:  # an alembic.ini that does not parse names nothing
        return []
    if not location:
        return []
    if ":" in location and not os.path.isabs(location):
        try:
            location = str(coerce_resource_to_filename(location))
        except Exception:  # not an importable package
            return []
    return [os.path.normpath((base / location).resolve()) for base in (ini.parent, Path.cwd())]
