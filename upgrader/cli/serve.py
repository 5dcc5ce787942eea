"""`upgrader serve`: the application under the guard, on a production WSGI server (waitress)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from upgrader.cli.context import CliContext, pass_cli
from upgrader.core import clients
from upgrader.http.wsgi import TrustedScheme
from upgrader.settings import load_app


def guarded(app: Any, obj: CliContext) -> Any:
    """The WSGI callable to serve: the app itself if it already embeds the guard."""
    from upgrader.web.middleware import UpgraderMiddleware

    if isinstance(app, UpgraderMiddleware):
        return app
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
    """Serve the application named with --app (or UPGRADER_APP) with the guard in front of it."""
    import signal
    import sys

    import waitress

    settings = obj.settings
    if settings.app_object is None:
        raise click.UsageError(
            "serve needs the application itself: name it with --app module:factory "
            "(or UPGRADER_APP)"
        )
    click.echo(
        f"Serving {settings.app_ref} on http://{host}:{port}/ "
        f"(status: http://{host}:{port}{settings.status_path})"
    )
    # SIGTERM (systemd, a rolling deploy) ends the process as Ctrl-C does: cleanly, so that
    # the node registry hears it leave (core/nodes.py)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    # waitress drops X-Forwarded-* from peers it does not trust, and trusts one address at
    # most; with UPGRADER_TRUSTED_PROXIES set, the guard decides whom to believe instead.
    app = guarded(settings.app_object, obj)
    trusted = clients.networks(settings.trusted_proxies)
    if trusted:  # what the proxy says of the visitor's scheme: Secure cookies behind https
        app = TrustedScheme(app, trusted)
    waitress.serve(
        app,
        host=host,
        port=port,
        threads=threads,
        ident="upgrader",
        clear_untrusted_proxy_headers=not settings.trusted_proxies,
    )
    return 0


@click.command("admin-key")
@click.option(
    "--backup-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Where the key is (the backup directory); no application is needed then.",
)
@pass_cli
def admin_key(obj: CliContext, backup_dir: Path | None) -> int:
    """Print the admin console's key (/upgrader/admin, when the application has no check of
    its own); made on first use in the backup directory, readable only on the server."""
    from upgrader.core.keys import console_key

    click.echo(console_key(backup_dir or Path(obj.settings.backup_dir)))
    return 0


@click.command("install-key")
@click.option(
    "--installer-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="The installer's directory; no application is needed then.",
)
@pass_cli
def install_key(obj: CliContext, installer_dir: Path | None) -> int:
    """Print the installer's upgrade key (created on first use, readable only on the server)."""
    from upgrader.core.keys import upgrade_key

    directory = installer_dir or obj.settings.installer_dir
    if directory is None or not Path(directory).is_dir():
        raise click.ClickException(f"the installer directory {directory} does not exist")
    click.echo(upgrade_key(Path(directory)))
    return 0


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
    import os
    import shutil

    import waitress
    from sqlalchemy import create_engine

    from upgrader.core.keys import upgrade_key
    from upgrader.engine.site import Installation
    from upgrader.engine.upgrade import install
    from upgrader.sample.config import DATABASE_ENV, INSTALLER_FILES
    from upgrader.sample.data import DEMO_AUTHORS, catalogue, seed
    from upgrader.sample.releases import OLDEST
    from upgrader.settings import resolve

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
