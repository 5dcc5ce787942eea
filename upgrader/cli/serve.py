"""`upgrader serve`: the application under the guard, on a production server: waitress for
a WSGI application, uvicorn for an ASGI one (the `asgi` extra)."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Any

import click
import waitress

from upgrader.cli.context import CliContext, pass_cli
from upgrader.core import clients
from upgrader.core.keys import console_key, upgrade_key
from upgrader.http.wsgi import TrustedScheme
from upgrader.kinds import is_asgi
from upgrader.settings import Settings, guard_settings
from upgrader.web.middleware import UpgraderMiddleware


def guarded(app: Any, obj: CliContext) -> Any:
    """The WSGI callable to serve: the app itself if it already embeds the guard."""
    if isinstance(app, UpgraderMiddleware) or guard_settings(app) is not None:
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
    if is_asgi(settings.app_object):
        _serve_asgi(settings, host, port)
        return 0
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


def _serve_asgi(settings: Settings, host: str, port: int) -> None:
    """uvicorn, with the guard in front unless the application has it already. uvicorn
    believes X-Forwarded-For and -Proto from the trusted proxies only (the application
    sees the visitor), and from nobody when there are none; it stops on SIGTERM."""
    try:
        import uvicorn  # optional: the asgi extra
    except ImportError as exc:
        raise click.ClickException(
            f"{settings.app_ref} is an ASGI application: serving it needs uvicorn "
            "(pip install 'upgrader[asgi]')"
        ) from exc
    from upgrader.web.asgi import UpgraderMiddleware as AsgiGuard  # optional: the asgi extra

    app = settings.app_object
    if not isinstance(app, AsgiGuard) and guard_settings(app) is None:
        app = AsgiGuard(app, settings)
    uvicorn.run(
        app,
        host=host,
        port=port,
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=",".join(settings.trusted_proxies) or None,
        server_header=False,
        log_level="info",
    )


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
    directory = installer_dir or obj.settings.installer_dir
    if directory is None or not Path(directory).is_dir():
        raise click.ClickException(f"the installer directory {directory} does not exist")
    click.echo(upgrade_key(Path(directory)))
    return 0
