"""Alembic's own configuration file wherever the project keeps it, and ASGI applications
named with --app.

A project made like a public FastAPI template: `alembic.ini` in the backend folder with
`script_location = app/alembic` (two levels above the scripts), an env.py that asserts
`config.config_file_name is not None` and reads the ini's logging setup. upgrader finds the
ini as `alembic` would from the project's root, says which in `doctor`; named with -c
where it cannot be found; and an env.py that fails for want of it says so.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import MIGRATIONS
from upgrader.inifile import find_ini, scripts_named
from upgrader.settings import ConfigError, resolve

UPGRADER = [sys.executable, "-m", "upgrader"]

INI = """\
[alembic]
script_location = {location}

[loggers]
keys = root

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = WARN
handlers = console

[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic

[formatter_generic]
format = %(levelname)-5.5s [%(name)s] %(message)s
"""

STRICT_ENV = """\
from logging.config import fileConfig

from alembic import context
from sqlalchemy import engine_from_config, pool

config = context.config
assert config.config_file_name is not None
fileConfig(config.config_file_name)
target_metadata = None


def run_migrations_online():
    connectable = engine_from_config(
        config.get_section(config.config_ini_section), prefix="sqlalchemy.", poolclass=pool.NullPool
    )
    with connectable.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()


run_migrations_online()
"""

MAIN = """\
from fastapi import FastAPI

app = FastAPI()
"""


def backend(tmp_path: Path, location: str = "app/alembic") -> Path:
    """backend/alembic.ini naming backend/app/alembic, whose env.py needs the ini."""
    root = tmp_path / "backend"
    scripts = root / "app" / "alembic"
    shutil.copytree(MIGRATIONS / "versions", scripts / "versions")
    shutil.copy(MIGRATIONS / "script.py.mako", scripts / "script.py.mako")
    (scripts / "env.py").write_text(STRICT_ENV)
    (root / "app" / "__init__.py").write_text("")
    (root / "app" / "main.py").write_text(MAIN)
    (root / "alembic.ini").write_text(INI.format(location=location))
    return root


def upgrader(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("UPGRADER_")}
    environ.update(env)
    return subprocess.run(
        [*UPGRADER, *args], cwd=cwd, env=environ, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("location", ["app/alembic", "%(here)s/app/alembic"])
def test_the_ini_two_levels_above_its_scripts_is_found(tmp_path: Path, location: str) -> None:
    root = backend(tmp_path, location)
    scripts = root / "app" / "alembic"
    assert find_ini(scripts) == root / "alembic.ini"
    assert scripts_named(root / "alembic.ini") == scripts.resolve()
    elsewhere = tmp_path / "config"
    elsewhere.mkdir()
    moved = elsewhere / "alembic.ini"
    (root / "alembic.ini").rename(moved)
    assert find_ini(scripts) is None  # not where alembic would look from the project
    assert find_ini(scripts, [elsewhere]) is None  # it names app/alembic from config/


def test_doctor_says_which_ini_and_an_upgrade_runs_with_it(tmp_path: Path) -> None:
    root = backend(tmp_path)
    url = f"sqlite:///{tmp_path / 'app.db'}"
    flags = ["--database-url", url, "--migrations", "app/alembic", "--code-version", "2.0.0"]
    done = upgrader(*flags, "install", "--yes", cwd=root)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(upgrader(*flags, "doctor", "--json", cwd=root).stdout)
    assert report["code"]["alembic_ini"] == str(root / "alembic.ini")
    found = report["configuration"]["alembic_config"]
    assert found["value"] == str(root / "alembic.ini")
    assert found["source"].startswith("found")


def test_an_env_py_that_needs_the_ini_says_so_and_works_when_named(tmp_path: Path) -> None:
    root = backend(tmp_path)
    config = tmp_path / "deploy" / "alembic.ini"
    config.parent.mkdir()
    (root / "alembic.ini").rename(config)
    config.write_text(INI.format(location=str(root / "app" / "alembic")))
    url = f"sqlite:///{tmp_path / 'app.db'}"
    flags = ["--database-url", url, "--migrations", "app/alembic", "--code-version", "2.0.0"]
    failed = upgrader(*flags, "install", "--yes", cwd=root)
    assert failed.returncode != 0
    said = failed.stdout + failed.stderr
    assert "env.py failed before it configured Alembic" in said, said
    assert "--alembic-config (UPGRADER_ALEMBIC_CONFIG)" in said, said
    assert "Traceback" not in said
    named = upgrader(*flags, "--alembic-config", str(config), "install", "--yes", cwd=root)
    assert named.returncode == 0, named.stdout + named.stderr
    status = upgrader(*flags, "status", "--json", cwd=root, UPGRADER_ALEMBIC_CONFIG=str(config))
    assert json.loads(status.stdout)["state"] == "ok"


def test_an_asgi_application_named_with_app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its settings come from the guard it added; without one the message says how."""
    root = backend(tmp_path)
    monkeypatch.chdir(root)
    monkeypatch.syspath_prepend(str(root))
    with pytest.raises(ConfigError, match=r"app\.main:app does not say where its database"):
        resolve({"app": "app.main:app"}, environ={})
    url = f"sqlite:///{tmp_path / 'app.db'}"
    (root / "app" / "guarded.py").write_text(
        "from fastapi import FastAPI\n"
        "from upgrader.asgi import UpgraderMiddleware\n"
        "from upgrader.settings import resolve\n\n"
        "app = FastAPI()\n"
        "app.add_middleware(UpgraderMiddleware, settings=resolve("
        f"{{'database_url': {url!r}, 'migrations': 'app/alembic', 'code_version': '2.0.0'}}))\n"
    )
    settings = resolve({"app": "app.guarded:app"}, environ={})
    assert settings.database_url == url
    assert settings.migrations == root / "app" / "alembic"
    assert settings.alembic_config == root / "alembic.ini"
    assert settings.installer_dir == root / "install"  # beside the project's alembic.ini
    done = upgrader("--app", "app.guarded:app", "status", "--json", cwd=root)
    assert json.loads(done.stdout)["state"] == "not_installed", done.stderr
