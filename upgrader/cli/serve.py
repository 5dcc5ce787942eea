"""`upgrader serve`: the application under the guard, on a production WSGI server (waitress)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from upgrader.cli.context import CliContext, pass_cli
from upgrader.settings import SAMPLE_APP, load_app
from upgrader.web.middleware import UpgraderMiddleware


def guarded(app: Any, obj: CliContext) -> Any:
    """The WSGI callable to serve: the app itself if it already embeds the guard."""
    extensions = getattr(app, "extensions", {})
    if "upgrader" in extensions or isinstance(getattr(app, "wsgi_app", None), UpgraderMiddleware):
        return app
    return UpgraderMiddleware(app, obj.settings)


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--threads", default=8, show_default=True, type=int)
@pass_cli
def serve(obj: CliContext, host: str, port: int, threads: int) -> int:
    """Serve the application (default: the sample) with the guard in front of it."""
    import waitress

    app = load_app(obj.settings.app or SAMPLE_APP)
    obj.app = app
    click.echo(
        f"Serving {obj.settings.app or SAMPLE_APP} on http://{host}:{port}/ "
        f"(status: http://{host}:{port}{obj.settings.status_path})"
    )
    waitress.serve(guarded(app, obj), host=host, port=port, threads=threads, ident="upgrader")
    return 0


@click.command("install-key")
@pass_cli
def install_key(obj: CliContext) -> int:
    """Print the installer's upgrade key (created on first use, readable only on the server)."""
    from pathlib import Path

    from upgrader.wizard.access import upgrade_key

    directory = obj.settings.installer_dir
    if directory is None or not Path(directory).is_dir():
        raise click.ClickException(f"the installer directory {directory} does not exist")
    click.echo(upgrade_key(Path(directory)))
    return 0


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
def demo(host: str, port: int) -> int:
    """The newcomer's path: the sample application at its oldest release, with data, served
    by the current code. Open the URL, see Err2, walk the wizard, land on the upgraded site."""
    import os
    import shutil

    import waitress
    from sqlalchemy import create_engine

    from sampleapp import create_app
    from sampleapp.config import INSTANCE, ROOT
    from sampleapp.data import seed
    from sampleapp.releases import OLDEST
    from upgrader.engine.runner import Runner
    from upgrader.settings import resolve
    from upgrader.wizard.access import upgrade_key

    database = INSTANCE / "demo.db"
    backups = INSTANCE / "demo-backups"
    for leftover in (database, Path(f"{database}.upgrader-lock")):
        leftover.unlink(missing_ok=True)
    shutil.rmtree(backups, ignore_errors=True)
    url = f"sqlite:///{database}"
    os.environ["UPGRADER_DATABASE_URL"] = url  # the sample application and its children read it
    os.environ["UPGRADER_BACKUP_DIR"] = str(backups)
    settings = resolve({})
    Runner(settings).install(release=OLDEST)
    engine = create_engine(url)
    with engine.begin() as conn:
        seed(conn, OLDEST)
    engine.dispose()
    installer = ROOT / "install"
    installer.mkdir(exist_ok=True)
    key = upgrade_key(installer)
    click.echo(f"Shelf {OLDEST} is installed in {database}, and the code is now newer.")
    click.echo(f"Open   http://{host}:{port}/         (it shows Down for Maintenance (Err2))")
    click.echo(f"Then   http://{host}:{port}/install  with the upgrade key: {key}")
    waitress.serve(create_app(), host=host, port=port, threads=8, ident="upgrader")
    return 0
