"""The admin console at /upgrader/admin: the state, the maintenance settings (now and
scheduled) and the recent runs, and the switches of `upgrader maintenance`, for an
authorised administrator in a browser.

Who may use it:
- with the integrator's own check (`Upgrader(app, authorize=...)` in Flask, where it runs
  in the application's request context as Flask-Login expects; `authorize=` on
  `UpgraderMiddleware` for any WSGI app), whoever it approves; anyone else gets a bare 404;
- with none, whoever proves access to the server with the console key, a 0600 file that
  `upgrader admin-key` prints, as the installer's upgrade key works.

Every form carries a CSRF token. Every change goes through http/maintenance.py, the CLI's
own code path, and is logged with who and from where. The pages are console/views.py.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from flask import Flask, abort, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from upgrader.console import views
from upgrader.console.context import EXTENSION, Console, console
from upgrader.core.cache import DiagnosisCache
from upgrader.http.forms import check_csrf, small_app
from upgrader.settings import Settings


def create_console(
    settings: Settings, cache: DiagnosisCache, *, signing_key: bytes, integrated: bool
) -> Flask:
    app = small_app(
        __name__,
        secret=hmac.new(signing_key, b"upgrader-console", hashlib.sha256).hexdigest(),
        cookie="upgrader_console",
        path=settings.admin_path,
        samesite="Strict",
        hours=8,
    )
    app.extensions[EXTENSION] = Console(settings, cache, integrated)
    app.before_request(guard)
    for code in (400, 405):
        app.register_error_handler(code, error)
    app.register_error_handler(404, not_found)
    for path, view, methods in views.ROUTES:
        app.add_url_rule(path, view.__name__, view, methods=list(methods))
    return app


def guard() -> Response | None:
    it = console()
    name = it.user()
    if name is None and it.integrated:
        abort(404)  # nothing of the console for anyone the application does not approve
    check_csrf()
    if name is None and request.endpoint != "key":
        return redirect(url_for("key"))
    return None


def error(exc: Any) -> tuple[str, int]:
    return render_template("console/message.html", title="Not done", text=exc.description), (
        exc.code
    )


def not_found(exc: Any) -> Response:
    return Response("Not Found", 404, {"Content-Type": "text/plain; charset=utf-8"})
