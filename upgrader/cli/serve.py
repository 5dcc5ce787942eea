"""`upgrader serve`: the application under the guard, on a production WSGI server (waitress)."""

from __future__ import annotations

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
