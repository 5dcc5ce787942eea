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
import io
import json
import logging
import secrets
import time
from pathlib import Path
from typing import Any

from flask import Flask, jsonify, redirect, render_template, request, session, url_for
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.wrappers import Response

from upgrader import i18n
from upgrader.core import clients
from upgrader.core.diagnosis import Diagnosis, State, diagnose
from upgrader.core.keys import key_fingerprint, key_matches, session_key, upgrade_key
from upgrader.core.maintenance import MaintenanceRequest
from upgrader.core.tables import define_tables
from upgrader.core.throttle import Throttle
from upgrader.core.times import utcnow
from upgrader.engine.backup import estimated_size, preflight
from upgrader.engine.runner import foreign_tables, start_detached
from upgrader.http import maintenance as switch
from upgrader.http.forms import check_csrf, client_of, small_app
from upgrader.settings import Settings
from upgrader.support import report
from upgrader.support.report import database_info

log = logging.getLogger("upgrader")


UPGRADABLE = (
    State.UPGRADE_PENDING,
    State.UPGRADE_INTERRUPTED,
    State.UPGRADE_FAILED,
    # one server: the wizard applies online and post-deploy revisions in one ordinary run
    State.ONLINE_PENDING,
    State.POST_DEPLOY_PENDING,
)
DEFAULT_EULA = (
    "This software is provided as is, without warranty of any kind. Back up your data "
    "before upgrading. By continuing you accept the licence of this application."
)


def create_wizard(settings: Settings, cache: Any, site: Any = None) -> Flask:
    """`site` is the guarded application itself, for the done page to check that it answers."""
    installer = Path(settings.installer_dir or "install")
    app = small_app(
        __name__,
        secret=session_key(installer),
        cookie="upgrader_wizard",
        path=settings.installer_path,
        samesite="Lax",
        hours=2,
    )
    throttle = Throttle(path=installer / ".throttle")  # survives restarts; per real client
    locales = settings.locale_dir

    def language() -> str:
        return i18n.negotiate(request.headers.get("Accept-Language"), locales)

    def _(message: str) -> str:
        """In the visitor's language (Accept-Language), for pages and their messages."""
        return i18n.gettext_for(language(), locales)(message)

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
            "name": str(data.get("name") or _default_name(settings)),
            "accent": str(data.get("accent") or "#2f6f5e"),
        }

    @app.context_processor
    def common() -> dict[str, Any]:
        authed = bool(session.get("authed"))
        return {
            "_": _,
            "lang": language(),
            "brand": branding(),
            "csrf_token": session.get("csrf", ""),
            # server paths and commands only for who proved access to the server
            "installer_dir": str(installer.resolve()) if authed else "",
            "cli": settings.cli if authed else settings.short_cli,
            "authed": authed,
            # the command that prints the key: it is how a visitor proves access, so it
            # works pasted anywhere on the server (it names no database, no application)
            "key_command": settings.key_command(
                "install-key", "--installer-dir", installer.resolve()
            ),
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

    @app.errorhandler(400)
    @app.errorhandler(404)
    @app.errorhandler(405)
    def error(exc: Any) -> tuple[str, int]:
        return render_template(
            "wizard/message.html",
            title=_("Something went wrong"),
            text=_(getattr(exc, "description", str(exc))),
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
        client = client_of(trusted)
        try:
            upgrade_key(installer)  # created on first visit, readable only on the server
        except OSError:
            return render_template(
                "wizard/message.html",
                title=_("The installer cannot start"),
                text=_("%(path)s is not writable, so the upgrade key cannot be created there.")
                % {"path": installer},
            ), 500
        if request.method == "GET":
            return render_template("wizard/key.html", error=None)
        wait = throttle.wait(client)
        if wait > 0:
            return (
                render_template(
                    "wizard/key.html",
                    error=_("Too many wrong keys. Wait %(seconds)s seconds.")
                    % {"seconds": int(wait) + 1},
                ),
                429,
                {"Retry-After": str(int(wait) + 1)},
            )
        if not key_matches(request.form.get("key", ""), installer):
            count = throttle.failed(client)
            log.warning("installer: wrong upgrade key from %s (%d in a row)", client, count)
            error = _("That is not the upgrade key.")
            return render_template("wizard/key.html", error=error), 403
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
                    error=_("Please accept the licence to continue."),
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
        return render_checks(d, fresh, problems)

    def render_checks(
        d: Diagnosis, fresh: bool, problems: list[str], error: str | None = None
    ) -> str:
        engine = cache.engine
        size = estimated_size(engine)
        try:
            with engine.connect() as conn:
                tables = define_tables(settings.table_prefix)
                guess = report.estimate(conn, tables, len(d.pending_revisions), size)
        except SQLAlchemyError:
            guess = {"size_bytes": size, "seconds": None, "steps_seen": 0, "backups_seen": 0}
        notes = report.release_notes(
            installer / "release-notes.json", d.schema_version, d.code_version
        )
        return render_template(
            "wizard/checks.html",
            d=d,
            fresh=fresh,
            problems=problems,
            error=error,
            database=database_info(engine),
            backup_dir=str(Path(settings.backup_dir).resolve()),
            estimate=guess,
            notes=notes,
        )

    @app.post("/start")
    def start() -> Response | str | tuple[str, int]:
        if not session.get("eula"):
            return redirect(url_for("eula"))
        d = current()
        fresh = d.state is State.NOT_INSTALLED
        if not fresh and d.state not in UPGRADABLE:
            return redirect(url_for("index"))  # never runs when nothing needs doing
        backup = request.form.get("backup", "auto") == "auto"
        if not fresh and not backup and request.form.get("have_backup") != "yes":
            problems = preflight(cache.engine, Path(settings.backup_dir))
            error = _(
                "To start without a backup, tick “I confirm that I have a backup of my "
                "own”. Nothing was started."
            )
            return render_checks(d, fresh, problems, error), 400
        if fresh and d.missing_file and request.form.get("create_at") != d.missing_file:
            return redirect(url_for("checks"))  # a missing file is created only when confirmed
        command = "install" if fresh else "upgrade"
        client = client_of(trusted)
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
        if not fresh and request.form.get("keep_maintenance") == "yes":
            keep = MaintenanceRequest(
                level="block",
                message="The site was just updated and is being checked. It will be back soon.",
                allow=[client] if client != "unknown" else [],
            )
            switch.switch_on(
                settings, keep, f"installer (web, {client})", trigger="web", engine=cache.engine
            )
        session["started"] = time.time()
        session["after_run"] = d.run.id if d.run is not None else 0  # runs after it are ours
        session["fresh"] = fresh
        return redirect(url_for("progress"))

    def next_page(d: Diagnosis) -> str | None:
        """Where the progress page goes once this session's run is no longer running
        (None: stay, it is running or still starting)."""
        if d.state is State.UPGRADE_RUNNING and d.run is not None:
            return None
        started = _started()
        if started is None:
            return "index"
        if d.state in (State.OK, State.MAINTENANCE):
            return "done"
        ours = d.run is not None and d.run.id > int(session.get("after_run", 0))
        if d.state in (State.UPGRADE_FAILED, State.UPGRADE_INTERRUPTED) and ours:
            return "failed"
        if utcnow() - started < dt.timedelta(seconds=60):
            return None
        return "index"

    @app.get("/progress")
    def progress() -> Response | str:
        d = current()
        target = next_page(d)
        if target:
            return redirect(url_for(target))
        run = d.run if d.state is State.UPGRADE_RUNNING else None
        return render_template(
            "wizard/progress.html",
            d=d,
            run=run,
            elapsed=_elapsed(run) if run else "",
            starting=run is None,
        )

    @app.get("/progress.json")
    def progress_json() -> Response:
        """What the progress page shows, for its script to update in place (and announce
        through its live region) instead of reloading the page."""
        d = current()
        target = next_page(d)
        run = d.run if d.state is State.UPGRADE_RUNNING else None
        answer: Response = jsonify(
            next=url_for(target) if target else None,
            running=run is not None,
            step=run.step if run else 0,
            steps=run.steps if run else 0,
            revision=run.revision if run else None,
            message=run.message if run else None,
            backup_path=run.backup_path if run else None,
            elapsed=_elapsed(run) if run else "",
            stalled=d.stalled,
        )
        return answer

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
        m = d.maintenance
        kept = (
            m is not None
            and m.active(d.checked_at)
            and (m.set_by or "").startswith("installer (web")
        )
        return render_template(
            "wizard/done.html",
            d=d,
            fresh=session.get("fresh", False),
            checks=verify(d),
            kept=kept,
        )

    def verify(d: Diagnosis) -> list[tuple[bool, str]]:
        """What the WHMCS guide asks an administrator to check by hand after an upgrade."""
        found = [
            (d.state in (State.OK, State.MAINTENANCE), f"upgrader's diagnosis: {d.state.value}"),
            (
                d.schema_version == d.code_version,
                f"the database is at version {d.schema_version}, the code is {d.code_version}",
            ),
        ]
        if site is not None:
            status = home_page(site, request.environ)
            found.append((status[:1] in "23", f"the site's home page answers: {status}"))
        return found

    @app.post("/open")
    def open_site() -> Response:
        """Maintenance off, after the administrator checked the upgraded site."""
        client = client_of(trusted)
        switch.switch_off(
            settings, f"installer (web, {client})", trigger="web", engine=cache.engine
        )
        return redirect(url_for("done"))

    @app.get("/failed")
    def failed() -> Response | str:
        d = current()
        if d.state not in (State.UPGRADE_FAILED, State.UPGRADE_INTERRUPTED) or d.run is None:
            return redirect(url_for("index"))
        return render_template("wizard/failed.html", d=d, run=d.run, report=support_report())

    @app.get("/log")
    def run_log() -> Response:
        """The log of runs started here (the detached process writes it), redacted."""
        tail = report.log_tail(Path(settings.backup_dir), settings.database_url, 500)
        text = "\n".join(tail["lines"]) or tail.get("note") or tail.get("error") or ""
        return Response(text + "\n", mimetype="text/plain")

    @app.get("/report.txt")
    def report_txt() -> Response:
        return Response(
            support_report(),
            mimetype="text/plain",
            headers={"Content-Disposition": 'attachment; filename="upgrader-report.txt"'},
        )

    def support_report() -> str:
        """`upgrader doctor`, as support asks for it, with every secret scrubbed."""
        import click

        from upgrader.cli.status import render_doctor
        from upgrader.support.bundle import scrub, secrets_of

        d, data = report.doctor(settings)
        text = click.unstyle(render_doctor(d, data))
        return scrub(text, secrets_of(settings, d), settings.database_url)

    return app


def _default_name(settings: Settings) -> str:
    """The application's name when branding.json gives none: its distribution, or the
    top package of its import string (`notes:create_app` → Notes)."""
    name = settings.distribution or (settings.app_ref or "").split(":")[0].split(".")[0]
    name = Path(name).stem if "/" in name else name
    return name.replace("_", " ").replace("-", " ").title() if name else "Installer"


def home_page(site: Any, environ: dict[str, Any]) -> str:
    """GET / of the application itself (past the guard), in this process: its status line."""
    env = {k: v for k, v in environ.items() if not k.startswith(("werkzeug.", "upgrader."))}
    env.update(
        REQUEST_METHOD="GET",
        SCRIPT_NAME=environ.get("upgrader.site_root", ""),
        PATH_INFO="/",
        QUERY_STRING="",
        CONTENT_LENGTH="0",
        HTTP_ACCEPT="text/html",
    )
    env.pop("CONTENT_TYPE", None)
    env["wsgi.input"] = io.BytesIO(b"")
    seen: list[str] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        seen.append(status)
        return lambda data: None

    try:
        body = site(env, start_response)
        try:
            for _ in body:
                pass
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()
    except Exception as exc:
        return f"error ({type(exc).__name__})"
    return seen[-1] if seen else "no answer"


def _elapsed(run: Any) -> str:
    seconds = max(0, int((utcnow() - run.started_at).total_seconds()))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"
