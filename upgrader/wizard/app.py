"""The install wizard, a small Flask application the guard mounts at /install.

It drives the upgrade engine and adds no second way to migrate: every run is
started detached (`upgrader upgrade` / `upgrader install` in a process of its
own), and every page reads the diagnosis and the journal, so reloading or
closing the tab never touches a run, and a second administrator sees the same
progress. It works without JavaScript: progress refreshes itself with a meta
refresh.

Customisable files live in install/: EULA.txt and branding.json
({"name": "Shelf", "accent": "#2f6f5e"}).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import secrets
import time
from pathlib import Path
from typing import Any

from flask import Flask, redirect, render_template, request, session, url_for
from werkzeug.wrappers import Response

from upgrader.core.diagnosis import Diagnosis, State, diagnose
from upgrader.core.report import database_info
from upgrader.core.storage import utcnow
from upgrader.engine.backup import preflight
from upgrader.engine.runner import foreign_tables, start_detached
from upgrader.settings import Settings
from upgrader.web import clients
from upgrader.web.forms import Sessions, check_csrf, no_store
from upgrader.web.throttle import Throttle
from upgrader.wizard.access import key_fingerprint, key_matches, session_key, upgrade_key

log = logging.getLogger("upgrader")


UPGRADABLE = (State.UPGRADE_PENDING, State.UPGRADE_INTERRUPTED, State.UPGRADE_FAILED)
DEFAULT_EULA = (
    "This software is provided as is, without warranty of any kind. Back up your data "
    "before upgrading. By continuing you accept the licence of this application."
)


def create_wizard(settings: Settings, cache: Any) -> Flask:
    installer = Path(settings.installer_dir or "install")
    app = Flask(__name__)
    app.secret_key = session_key(installer)
    app.session_interface = Sessions()
    app.config.update(
        SESSION_COOKIE_NAME="upgrader_wizard",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_PATH=settings.installer_path,
        PERMANENT_SESSION_LIFETIME=2 * 3600,
    )
    throttle = Throttle(path=installer / ".throttle")  # survives restarts; per real client
    trusted = clients.networks(settings.trusted_proxies)

    def current() -> Diagnosis:
        """Fresh, not cached: wizard pages are few and must show the truth now."""
        cache.invalidate()
        d: Diagnosis = diagnose(settings, code=cache.code, engine=cache.engine)
        return d

    def branding() -> dict[str, str]:
        try:
            data = json.loads((installer / "branding.json").read_text())
        except (OSError, ValueError):
            data = {}
        return {
            "name": str(data.get("name") or "this site"),
            "accent": str(data.get("accent") or "#2f6f5e"),
        }

    @app.context_processor
    def common() -> dict[str, Any]:
        authed = bool(session.get("authed"))
        return {
            "brand": branding(),
            "csrf_token": session.get("csrf", ""),
            # server paths and commands only for who proved access to the server
            "installer_dir": str(installer.resolve()) if authed else "",
            "cli": settings.cli if authed else settings.short_cli,
            "authed": authed,
        }

    @app.before_request
    def guard() -> Response | None:
        # A session belongs to the key it was opened with, and the session key in force:
        # deleting .session-key or rotating the upgrade key logs everybody out at once.
        current = session_key(installer)
        if current != app.secret_key:
            app.secret_key = current
            session.clear()
        if session.get("authed") and session.get("key") != key_fingerprint(installer):
            session.clear()
        check_csrf()
        if request.endpoint not in ("key", "static") and not session.get("authed"):
            return redirect(url_for("key"))
        return None

    app.after_request(no_store)

    @app.errorhandler(400)
    @app.errorhandler(404)
    @app.errorhandler(405)
    def error(exc: Any) -> tuple[str, int]:
        return render_template(
            "wizard/message.html",
            title="Something went wrong",
            text=getattr(exc, "description", str(exc)),
        ), exc.code

    @app.get("/")
    def index() -> Response | str:
        d = current()
        if d.state is State.UPGRADE_RUNNING:
            return redirect(url_for("progress"))
        if d.state in (State.OK, State.MAINTENANCE):
            if session.get("started"):
                return redirect(url_for("done"))
            return render_template("wizard/nothing.html", d=d)
        if d.state is State.NOT_INSTALLED or d.state in UPGRADABLE:
            return redirect(url_for("checks" if session.get("eula") else "eula"))
        return render_template("wizard/blocked.html", d=d)

    @app.route("/key", methods=["GET", "POST"])
    def key() -> Response | str | tuple[str, int] | tuple[str, int, dict[str, str]]:
        client = clients.client_address(request.environ, trusted) or "unknown"
        try:
            upgrade_key(installer)  # created on first visit, readable only on the server
        except OSError:
            return render_template(
                "wizard/message.html",
                title="The installer cannot start",
                text=f"{installer} is not writable, so the upgrade key cannot be created there.",
            ), 500
        if request.method == "GET":
            return render_template("wizard/key.html", error=None)
        wait = throttle.wait(client)
        if wait > 0:
            return (
                render_template(
                    "wizard/key.html", error=f"Too many wrong keys. Wait {int(wait) + 1} seconds."
                ),
                429,
                {"Retry-After": str(int(wait) + 1)},
            )
        if not key_matches(request.form.get("key", ""), installer):
            count = throttle.failed(client)
            log.warning("installer: wrong upgrade key from %s (%d in a row)", client, count)
            return render_template("wizard/key.html", error="That is not the upgrade key."), 403
        throttle.succeeded(client)
        log.info("installer: upgrade key accepted from %s", client)
        session.clear()
        session["authed"] = True
        session["key"] = key_fingerprint(installer)
        session["csrf"] = secrets.token_urlsafe(24)
        return redirect(url_for("index"))

    @app.route("/eula", methods=["GET", "POST"])
    def eula() -> Response | str:
        if request.method == "POST":
            if request.form.get("accept") != "yes":
                return render_template(
                    "wizard/eula.html",
                    text=eula_text(),
                    error="Please accept the licence to continue.",
                )
            session["eula"] = True
            return redirect(url_for("checks"))
        return render_template("wizard/eula.html", text=eula_text(), error=None)

    def eula_text() -> str:
        try:
            return (installer / "EULA.txt").read_text()
        except OSError:
            return DEFAULT_EULA

    @app.get("/checks")
    def checks() -> Response | str:
        if not session.get("eula"):
            return redirect(url_for("eula"))
        d = current()
        if d.state not in UPGRADABLE and d.state is not State.NOT_INSTALLED:
            return redirect(url_for("index"))
        engine = cache.engine
        fresh = d.state is State.NOT_INSTALLED
        problems = [] if fresh else preflight(engine, Path(settings.backup_dir))
        if fresh and foreign_tables(engine, settings):
            problems.append(
                "this database already holds tables ("
                + ", ".join(foreign_tables(engine, settings))
                + "): the installer "
                "never writes over existing data"
            )
        return render_template(
            "wizard/checks.html",
            d=d,
            fresh=fresh,
            problems=problems,
            database=database_info(engine),
            backup_dir=str(Path(settings.backup_dir).resolve()),
        )

    @app.post("/start")
    def start() -> Response | str:
        if not session.get("eula"):
            return redirect(url_for("eula"))
        d = current()
        fresh = d.state is State.NOT_INSTALLED
        if not fresh and d.state not in UPGRADABLE:
            return redirect(url_for("index"))  # never runs when nothing needs doing
        backup = request.form.get("backup", "auto") == "auto"
        if not fresh and not backup and request.form.get("have_backup") != "yes":
            return redirect(url_for("checks"))
        if fresh and d.missing_file and request.form.get("create_at") != d.missing_file:
            return redirect(url_for("checks"))  # a missing file is created only when confirmed
        command = "install" if fresh else "upgrade"
        client = clients.client_address(request.environ, trusted) or "unknown"
        process = start_detached(
            settings, command=command, backup=backup, trigger="web", client=client
        )
        log.warning(
            "installer: %s started from the web by %s (process %d, %s)",
            command,
            client,
            process.pid,
            "with a backup" if backup else "without a backup",
        )
        session["started"] = time.time()
        session["after_run"] = d.run.id if d.run is not None else 0  # runs after it are ours
        session["fresh"] = fresh
        return redirect(url_for("progress"))

    @app.get("/progress")
    def progress() -> Response | str:
        d = current()
        run = d.run
        started = _started()
        if d.state is State.UPGRADE_RUNNING and run is not None:
            return render_template(
                "wizard/progress.html", d=d, run=run, elapsed=_elapsed(run), starting=False
            )
        if started is None:
            return redirect(url_for("index"))
        if d.state in (State.OK, State.MAINTENANCE):
            return redirect(url_for("done"))
        ours = run is not None and run.id > int(session.get("after_run", 0))
        if d.state in (State.UPGRADE_FAILED, State.UPGRADE_INTERRUPTED) and ours:
            return redirect(url_for("failed"))
        if utcnow() - started < dt.timedelta(seconds=60):
            return render_template("wizard/progress.html", d=d, run=None, elapsed="", starting=True)
        return redirect(url_for("index"))

    def _started() -> dt.datetime | None:
        """When this session started a run, as naive UTC like the journal's times."""
        value = session.get("started")
        if not value:
            return None
        return dt.datetime.fromtimestamp(float(value), dt.timezone.utc).replace(tzinfo=None)

    @app.get("/done")
    def done() -> Response | str:
        d = current()
        if d.state not in (State.OK, State.MAINTENANCE):
            return redirect(url_for("index"))
        return render_template("wizard/done.html", d=d, fresh=session.get("fresh", False))

    @app.get("/failed")
    def failed() -> Response | str:
        d = current()
        if d.state not in (State.UPGRADE_FAILED, State.UPGRADE_INTERRUPTED) or d.run is None:
            return redirect(url_for("index"))
        return render_template("wizard/failed.html", d=d, run=d.run)

    return app


def _elapsed(run: Any) -> str:
    seconds = max(0, int((utcnow() - run.started_at).total_seconds()))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"
