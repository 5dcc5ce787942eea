"""The Flask extension: the guard, the banner, and `flask upgrader …`.

    from upgrader.web.flask import Upgrader

    upgrader = Upgrader()

    def create_app():
        app = Flask(__name__)
        app.config["UPGRADER_MIGRATIONS"] = "migrations"
        upgrader.init_app(app)
        return app

It wraps `app.wsgi_app` (so blocked requests never reach Flask's request
handling), puts `upgrader_banner()` into templates, inserts the banner into
HTML responses, and adds the `flask upgrader` command group (the same commands
as the `upgrader` console script, configured from this application).
"""

from __future__ import annotations

from typing import Any

import click
from flask import Flask, Response, request
from flask.cli import AppGroup, ScriptInfo
from markupsafe import Markup

from upgrader.settings import Settings, resolve
from upgrader.web.middleware import UpgraderMiddleware, banner_html


class Upgrader:
    def __init__(self, app: Flask | None = None, **options: Any) -> None:
        self.options = options
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask, settings: Settings | None = None) -> None:
        settings = settings or resolve({}, app=app)
        guard = UpgraderMiddleware(app.wsgi_app, settings, **self.options)
        app.wsgi_app = guard  # type: ignore[method-assign]
        app.extensions["upgrader"] = guard
        app.context_processor(lambda: {"upgrader_banner": _banner})
        app.after_request(_insert_banner)
        app.cli.add_command(cli_group)


def guard_of(app: Flask) -> UpgraderMiddleware:
    guard: UpgraderMiddleware = app.extensions["upgrader"]
    return guard


def _banner() -> Markup:
    return Markup(banner_html(request.environ))


def _insert_banner(response: Response) -> Response:
    if (
        "upgrader.banner" in request.environ
        and response.mimetype == "text/html"
        and not response.is_streamed
        and not request.environ.get("upgrader.banner.rendered")
    ):
        html = response.get_data(as_text=True)
        at = html.find(">", html.find("<body")) + 1 if "<body" in html else 0
        response.set_data(html[:at] + banner_html(request.environ) + html[at:])
    return response


@click.group("upgrader", cls=AppGroup)
@click.pass_context
def cli_group(ctx: click.Context) -> None:
    """upgrader's commands, for this application."""
    from upgrader.cli.context import CliContext

    app = ctx.ensure_object(ScriptInfo).load_app()  # as Flask's own commands find it
    ctx.obj = CliContext({}, app=app)


@cli_group.result_callback()
def _exit_status(result: Any, **_: Any) -> None:
    """Flask's CLI drops return values: make the command's status the process's, as
    `upgrader` does (so `flask upgrader status` exits 2 on Err2)."""
    if isinstance(result, int) and result:
        click.get_current_context().exit(result)


def _register_commands() -> None:
    from upgrader.cli.main import COMMANDS

    for command in COMMANDS:
        cli_group.add_command(command)


_register_commands()
