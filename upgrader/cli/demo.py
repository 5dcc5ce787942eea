"""`upgrader demo`: the newcomer's path, on the sample application (the only module that
imports it: upgrader never falls back to the sample)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import click
import waitress
from sqlalchemy import create_engine

from upgrader.core.keys import upgrade_key
from upgrader.engine.site import Installation
from upgrader.engine.upgrade import install
from upgrader.sample.config import DATABASE_ENV, INSTALLER_FILES
from upgrader.sample.data import DEMO_AUTHORS, catalogue, seed
from upgrader.sample.releases import OLDEST
from upgrader.settings import load_app, resolve

SAMPLE = "upgrader.sample:create_app"


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
def demo(host: str, port: int) -> int:
    """The newcomer's path: the sample application at its oldest release, with data, served
    by the current code. Open the URL, see Err2, walk the wizard, land on the upgraded site.

    Everything lives in the sample's instance folder, and is reset on every start; the
    demo reads no UPGRADER_* variable, so it can never touch your own application.
    """
    for name in [k for k in os.environ if k.startswith("UPGRADER_")] + [DATABASE_ENV]:
        os.environ.pop(name, None)  # this process and the runs it starts see the sample only
    app = load_app(SAMPLE)
    settings = resolve({"app": SAMPLE}, environ={}, app=app)
    instance = Path(app.instance_path)
    database = instance / "shelf.db"
    installer = Path(settings.installer_dir or instance / "install")
    for leftover in (database, Path(f"{database}.upgrader-lock")):
        leftover.unlink(missing_ok=True)
    shutil.rmtree(settings.backup_dir, ignore_errors=True)
    shutil.rmtree(installer, ignore_errors=True)
    shutil.copytree(INSTALLER_FILES, installer, ignore=shutil.ignore_patterns(".*"))
    install(Installation(settings), release=OLDEST)
    engine = create_engine(settings.database_url)
    with engine.begin() as conn:
        seed(conn, OLDEST)
        catalogue(conn, DEMO_AUTHORS)  # so the upgrade takes long enough to watch
    engine.dispose()
    key = upgrade_key(installer)
    cli = settings.cli
    click.echo(f"Shelf {OLDEST} is installed in {database}, and the code is now newer.")
    click.echo(f"Open   http://{host}:{port}/         (it shows Down for Maintenance (Err2))")
    click.echo(f"Then   http://{host}:{port}/install  with the upgrade key: {key}")
    click.echo(f"Or, in another terminal: {cli} status, then {cli} upgrade")
    waitress.serve(app, host=host, port=port, threads=8, ident="upgrader")
    return 0
