"""Building installations in known states: the sample application at any release."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path
from typing import Any

from alembic import command
from click.testing import CliRunner, Result
from sqlalchemy import create_engine, make_url, text

from sampleapp.data import seed
from sampleapp.releases import CURRENT, RELEASES
from upgrader.cli.main import cli
from upgrader.core import storage
from upgrader.core.revisions import alembic_config
from upgrader.settings import Settings, resolve

ROOT = Path(__file__).resolve().parent.parent
MIGRATIONS = ROOT / "migrations"


def code_at(release: str, tmp_path: Path) -> Path:
    """A copy of migrations/ as the code of `release` shipped it (later revisions left out)."""
    target = tmp_path / f"code-{release}"
    if target.exists():
        return target
    last = RELEASES[release]
    shutil.copytree(MIGRATIONS, target, ignore=shutil.ignore_patterns("__pycache__"))
    for script in (target / "versions").glob("*.py"):
        if script.stem > last:
            script.unlink()
    return target


def settings(url: str, tmp_path: Path, release: str = CURRENT, **flags: Any) -> Settings:
    """Settings for the sample application's code at `release` against `url`."""
    migrations = MIGRATIONS if release == CURRENT else code_at(release, tmp_path)
    values: dict[str, Any] = {
        "database_url": url,
        "migrations": str(migrations),
        "code_version": release,
        "installer_dir": str(tmp_path / "no-installer"),
    }
    values.update(flags)
    return resolve(values, environ={})


def cli_args(url: str, tmp_path: Path, release: str = CURRENT) -> list[str]:
    migrations = MIGRATIONS if release == CURRENT else code_at(release, tmp_path)
    return ["--database-url", url, "--migrations", str(migrations), "--code-version", release]


def run_cli(*args: str, env: dict[str, str] | None = None, input: str | None = None) -> Result:
    env = {"UPGRADER_INSTALLER_DIR": "/nonexistent/install", **(env or {})}
    return CliRunner().invoke(cli, list(args), env=env, input=input, catch_exceptions=False)


def migrate(url: str, revision: str) -> None:
    """Apply the sample application's migrations up to `revision` through its own env.py."""
    cfg = alembic_config(MIGRATIONS)
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["configure_logger"] = False
    command.upgrade(cfg, revision)


def install(url: str, release: str, *, data: bool = True, record: bool = True) -> None:
    """The database as upgrader would have left it after installing `release`."""
    migrate(url, RELEASES[release])
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            if data:
                seed(conn, release)
        if record:
            tables = storage.define_tables()
            storage.ensure_tables(engine, tables)
            with engine.begin() as conn:
                storage.write_single_state(conn, tables, release)
    finally:
        engine.dispose()


def execute(url: str, *statements: str, **params: Any) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.execute(text(statement), params)
    finally:
        engine.dispose()


def add_run(url: str, **values: Any) -> None:
    """A journal row, as a run of the upgrade engine writes it."""
    now = storage.utcnow()
    row: dict[str, Any] = {
        "kind": "upgrade",
        "status": "running",
        "trigger": "cli",
        "actor": "deploy",
        "host": "web-1",
        "pid": 4242,
        "started_at": now - dt.timedelta(minutes=2),
        "heartbeat_at": now - dt.timedelta(seconds=5),
        "lease_expires_at": now + dt.timedelta(seconds=55),
        "from_version": "1.0.0",
        "to_version": CURRENT,
        "step": 1,
        "steps": 2,
        "revision": "0002_loans_isbn",
        "message": "Release 1.1.0: loans table and an ISBN for each book",
    }
    row.update(values)
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(storage.define_tables().runs.insert().values(**row))
    finally:
        engine.dispose()


def safe(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)
