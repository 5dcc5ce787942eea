"""The admin console at /upgrader/admin: the state, the maintenance settings (now and
scheduled) and the recent runs, and the switches of `upgrader maintenance`, for an
authorised administrator in a browser.

Who may use it:
- with the integrator's own check (`Upgrader(app, authorize=...)` in Flask, where it runs
  in the application's request context as Flask-Login expects; `authorize=` on
  `UpgraderMiddleware` for any WSGI app), whoever it approves; anyone else gets a bare 404;
- with none, whoever proves access to the server with the console key, a 0600 file that
  `upgrader admin-key` prints, as the installer's upgrade key works.

Every form carries a CSRF token. Every change goes through web/maintenance.py, the CLI's
own code path, and is logged with who and from where.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from pathlib import Path
from typing import Any

from flask import Flask, abort, redirect, render_template, request, session, url_for
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.wrappers import Response

from upgrader.core import clients, nodes, storage
from upgrader.core import maintenance as mode
from upgrader.core.database import describe_error, missing_sqlite_file
from upgrader.core.diagnosis import Diagnosis, diagnose
from upgrader.core.keys import CONSOLE_KEY, console_fingerprint, console_key, key_file_matches
from upgrader.core.tables import define_tables
from upgrader.core.throttle import Throttle
from upgrader.http import maintenance as switch
from upgrader.http.forms import check_csrf, client_of, small_app
from upgrader.settings import Settings

log = logging.getLogger("upgrader")

USER = "upgrader.console.user"
"""Where the guard leaves what `authorize` said, for the console to read."""


def create_console(
    settings: Settings, cache: Any, *, signing_key: bytes, integrated: bool
) -> Flask:
    app = small_app(
        __name__,
        secret=hmac.new(signing_key, b"upgrader-console", hashlib.sha256).hexdigest(),
        cookie="upgrader_console",
        path=settings.admin_path,
        samesite="Strict",
        hours=8,
    )
    key_dir = Path(settings.backup_dir)
    throttle = Throttle(path=key_dir / ".admin-throttle")
    trusted = clients.networks(settings.trusted_proxies)
    tables = define_tables(settings.table_prefix)

    def client() -> str:
        return client_of(trusted)

    def user() -> str | None:
        """The administrator, or None. With an integration, its verdict, every request."""
        if integrated:
            verdict = request.environ.get(USER)
            if not verdict:
                return None
            return verdict if isinstance(verdict, str) else "administrator"
        if session.get("authed") and session.get("key") == console_fingerprint(key_dir):
            return "console key holder"
        return None

    @app.before_request
    def guard() -> Response | None:
        name = user()
        if name is None and integrated:
            abort(404)  # nothing of the console for anyone the application does not approve
        check_csrf()
        if name is None and request.endpoint != "key":
            return redirect(url_for("key"))
        return None

    @app.errorhandler(400)
    @app.errorhandler(405)
    def error(exc: Any) -> tuple[str, int]:
        return render_template(
            "console/message.html", title="Not done", text=exc.description
        ), exc.code

    @app.errorhandler(404)
    def not_found(exc: Any) -> Response:
        return Response("Not Found", 404, {"Content-Type": "text/plain; charset=utf-8"})

    def page(status: int = 200, **extra: Any) -> tuple[str, int]:
        try:
            cache.invalidate()  # the page shows the truth now
            d: Diagnosis = diagnose(settings, code=cache.code, engine=cache.engine)
            runs, seen = [], []
            if not missing_sqlite_file(cache.engine.url):  # connecting would create it
                with cache.engine.connect() as conn:
                    runs = storage.recent_runs(conn, tables, 8)
                    seen = nodes.live(conn, tables, beat=settings.node_beat)
        except SQLAlchemyError as exc:
            return render_template(
                "console/message.html",
                title="The database cannot be reached",
                text=f"{describe_error(exc)}. Nothing can be changed until it answers.",
            ), 503
        m = d.maintenance
        return render_template(
            "console/index.html",
            d=d,
            m=m,
            active=m is not None and m.active(d.checked_at),
            upcoming=m is not None and m.upcoming(d.checked_at),
            runs=runs,
            nodes=seen,
            verdict=nodes.verdict(seen, d.schema_version, settings.cli, settings.node_beat),
            user=user(),
            integrated=integrated,
            csrf_token=session["csrf"],
            static_dir=settings.static_dir,
            ttl=settings.cache_ttl,
            **extra,
        ), status

    def done(notice: str) -> Response:
        cache.invalidate()  # this process follows the change at once; the others in the TTL
        session["notice"] = notice
        return redirect(url_for("index"))

    def who() -> str:
        return f"{user()} (web, {client()})"

    @app.get("/")
    def index() -> tuple[str, int]:
        return page(notice=session.pop("notice", None))

    @app.post("/on")
    def on() -> Response | tuple[str, int]:
        form = request.form
        scheduled = form.get("when") == "window"
        try:
            allow = [e.strip() for e in form.get("allow", "").split(",") if e.strip()]
            clients.networks(allow)
            maintenance = mode.MaintenanceRequest(
                level=form.get("level", "block"),
                message=form.get("message", "").strip() or None,
                until=None if scheduled else mode.parse_when(form.get("until")),
                start=mode.parse_when(form.get("start")) if scheduled else None,
                end=mode.parse_when(form.get("end")) if scheduled else None,
                allow=allow,
            )
            if scheduled and maintenance.start is None:
                raise ValueError("a window needs its start")
            switch.switch_on(
                settings, maintenance, who(), trigger="web", engine=cache.engine, code=cache.code
            )
        except (ValueError, mode.MaintenanceError) as exc:
            return page(400, error=str(exc))
        what = "Maintenance window scheduled" if scheduled else "Maintenance is on"
        return done(f"{what} ({maintenance.level}). Every node follows within the cache TTL.")

    @app.post("/off")
    def off() -> Response:
        switch.switch_off(settings, who(), trigger="web", engine=cache.engine)
        return done("Maintenance is off (a scheduled window is cancelled).")

    @app.post("/secret")
    def secret() -> tuple[str, int]:
        try:
            value = switch.rotate_secret(settings, who(), trigger="web", engine=cache.engine)
        except mode.MaintenanceError as exc:
            return page(400, error=str(exc))
        return page(bypass_url=request.host_url.rstrip("/") + settings.bypass_path + value)

    @app.route("/key", methods=["GET", "POST"])
    def key() -> Response | tuple[str, int] | tuple[str, int, dict[str, str]]:
        if integrated or user() is not None:
            return redirect(url_for("index"))
        console_key(key_dir)  # made on first visit, readable only on the server
        command = settings.key_command("admin-key", "--backup-dir", key_dir.resolve())
        if request.method == "GET":
            return render_template("console/key.html", error=None, command=command), 200
        wait = throttle.wait(client())
        if wait > 0:
            text = f"Too many wrong keys. Wait {int(wait) + 1} seconds."
            return (
                render_template("console/key.html", error=text, command=command),
                429,
                {"Retry-After": str(int(wait) + 1)},
            )
        if not key_file_matches(request.form.get("key", ""), key_dir, CONSOLE_KEY):
            count = throttle.failed(client())
            log.warning("console: wrong key from %s (%d in a row)", client(), count)
            text = "That is not the console key."
            return render_template("console/key.html", error=text, command=command), 403
        throttle.succeeded(client())
        log.info("console: key accepted from %s", client())
        session.clear()
        session.update(authed=True, key=console_fingerprint(key_dir))
        return redirect(url_for("index"))

    @app.post("/logout")
    def logout() -> Response:
        session.clear()
        return redirect(url_for("key"))

    return app
