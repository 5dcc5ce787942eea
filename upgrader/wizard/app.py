"""The install wizard, a small Flask application the guard mounts at /install.

It drives the upgrade engine and adds no second way to migrate: every run is
started detached (`upgrader upgrade` / `upgrader install` in a process of its
own), and every page reads the diagnosis and the journal, so reloading or
closing the tab never touches a run, and a second administrator sees the same
progress. It works without JavaScript: progress refreshes itself with a meta
refresh.

Customisable files live in install/: EULA.txt and branding.json
({"name": "Shelf", "accent": "#2f6f5e"}). The pages are in wizard/views.py.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, current_app, redirect, render_template, request, session, url_for
from werkzeug.wrappers import Response

from upgrader.core.cache import DiagnosisCache
from upgrader.core.keys import key_fingerprint, session_key
from upgrader.http.forms import check_csrf, small_app
from upgrader.settings import Settings
from upgrader.wizard import views
from upgrader.wizard.context import EXTENSION, Home, Installer, _, installer


def create_wizard(settings: Settings, cache: DiagnosisCache, home: Home | None = None) -> Flask:
    """`home` asks the guarded application for its home page: the done page checks it."""
    it = Installer(settings, cache, home)
    app = small_app(
        __name__,
        secret=session_key(it.directory),
        cookie="upgrader_wizard",
        path=settings.installer_path,
        samesite="Lax",
        hours=2,
    )
    app.extensions[EXTENSION] = it
    app.context_processor(common)
    app.before_request(guard)
    for code in (400, 404, 405):
        app.register_error_handler(code, error)
    for path, view, methods in views.ROUTES:
        app.add_url_rule(path, view.__name__, view, methods=list(methods))
    return app


def common() -> dict[str, Any]:
    it = installer()
    settings = it.settings
    authed = bool(session.get("authed"))
    return {
        "_": it.translate,
        "lang": it.language(),
        "brand": it.branding(),
        "csrf_token": session.get("csrf", ""),
        # server paths and commands only for who proved access to the server
        "installer_dir": str(it.directory.resolve()) if authed else "",
        "cli": settings.cli if authed else settings.short_cli,
        "authed": authed,
        # the command that prints the key: it is how a visitor proves access, so it
        # works pasted anywhere on the server (it names no database, no application)
        "key_command": settings.key_command(
            "install-key", "--installer-dir", it.directory.resolve()
        ),
    }


def guard() -> Response | None:
    """A session belongs to the key it was opened with, and the session key in force:
    deleting .session-key or rotating the upgrade key logs everybody out at once."""
    directory = installer().directory
    current = session_key(directory)
    if current != current_app.secret_key:
        current_app.secret_key = current
        session.clear()
    if session.get("authed") and session.get("key") != key_fingerprint(directory):
        session.clear()
    check_csrf()
    if request.endpoint not in ("key", "static") and not session.get("authed"):
        return redirect(url_for("key"))
    return None


def error(exc: Any) -> tuple[str, int]:
    return render_template(
        "wizard/message.html",
        title=_("Something went wrong"),
        text=_(getattr(exc, "description", str(exc))),
    ), exc.code
