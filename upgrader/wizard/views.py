"""The installer's pages: key → licence → checks → start (detached) → progress → done or
failed. Each reads the diagnosis afresh and asks its state what it allows (`wizard`,
`settled`, `unfinished`); none starts a second way to migrate."""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import time
from pathlib import Path
from typing import Any

import click
from flask import jsonify, redirect, render_template, request, session, url_for
from werkzeug.wrappers import Response

from upgrader.core.diagnosis import Diagnosis, State
from upgrader.core.keys import key_fingerprint, key_matches, upgrade_key
from upgrader.core.maintenance import MaintenanceRequest
from upgrader.core.times import utcnow
from upgrader.engine.backup import preflight
from upgrader.engine.detach import start_detached
from upgrader.engine.upgrade import foreign_tables
from upgrader.http import maintenance as switch
from upgrader.support import report
from upgrader.support.bundle import scrub, secrets_of
from upgrader.support.text import render_doctor
from upgrader.wizard.checks import render_checks, verify
from upgrader.wizard.context import _, installer

log = logging.getLogger("upgrader")

View = Response | str | tuple[str, int] | tuple[str, int, dict[str, str]]


def index() -> View:
    d = installer().current()
    if d.state is State.UPGRADE_RUNNING:
        return redirect(url_for("progress"))
    if d.state.settled:
        if session.get("started"):
            return redirect(url_for("done"))
        return render_template("wizard/nothing.html", d=d)
    if d.state.wizard:
        return redirect(url_for("checks" if session.get("eula") else "eula"))
    return render_template("wizard/blocked.html", d=d)


def key() -> View:
    """Proof of access to the server: the upgrade key, throttled per real client."""
    it = installer()
    client = it.client()
    try:
        upgrade_key(it.directory)  # created on first visit, readable only on the server
    except OSError:
        return render_template(
            "wizard/message.html",
            title=_("The installer cannot start"),
            text=_("%(path)s is not writable, so the upgrade key cannot be created there.")
            % {"path": it.directory},
        ), 500
    if request.method == "GET":
        return render_template("wizard/key.html", error=None)
    wait = it.throttle.wait(client)
    if wait > 0:
        seconds = int(wait) + 1
        error = _("Too many wrong keys. Wait %(seconds)s seconds.") % {"seconds": seconds}
        return render_template("wizard/key.html", error=error), 429, {"Retry-After": str(seconds)}
    if not key_matches(request.form.get("key", ""), it.directory):
        count = it.throttle.failed(client)
        log.warning("installer: wrong upgrade key from %s (%d in a row)", client, count)
        return render_template("wizard/key.html", error=_("That is not the upgrade key.")), 403
    it.throttle.succeeded(client)
    log.info("installer: upgrade key accepted from %s", client)
    session.clear()
    session.update(authed=True, key=key_fingerprint(it.directory))
    session["csrf"] = secrets.token_urlsafe(24)
    return redirect(url_for("index"))


def eula() -> View:
    text = installer().eula()
    if request.method == "POST":
        if request.form.get("accept") != "yes":
            error = _("Please accept the licence to continue.")
            return render_template("wizard/eula.html", text=text, error=error)
        session["eula"] = True
        return redirect(url_for("checks"))
    return render_template("wizard/eula.html", text=text, error=None)


def checks() -> View:
    if not session.get("eula"):
        return redirect(url_for("eula"))
    it = installer()
    d = it.current()
    if not d.state.wizard:
        return redirect(url_for("index"))
    fresh = d.state.wizard == "install"
    problems = [] if fresh else preflight(it.cache.engine, Path(it.settings.backup_dir))
    foreign = foreign_tables(it.cache.engine, it.settings) if fresh else []
    if foreign:
        problems.append(
            f"this database already holds tables ({', '.join(foreign)}): the installer "
            "never writes over existing data"
        )
    return render_checks(d, fresh, problems)


def start() -> View:
    """Start the run, detached: no request, worker timeout or closed tab can interrupt it."""
    if not session.get("eula"):
        return redirect(url_for("eula"))
    it = installer()
    d = it.current()
    if not d.state.wizard:
        return redirect(url_for("index"))  # never runs when nothing needs doing
    fresh = d.state.wizard == "install"
    backup = request.form.get("backup", "auto") == "auto"
    if not fresh and not backup and request.form.get("have_backup") != "yes":
        problems = preflight(it.cache.engine, Path(it.settings.backup_dir))
        error = _(
            "To start without a backup, tick “I confirm that I have a backup of my "
            "own”. Nothing was started."
        )
        return render_checks(d, fresh, problems, error), 400
    if fresh and d.missing_file and request.form.get("create_at") != d.missing_file:
        return redirect(url_for("checks"))  # a missing file is created only when confirmed
    client = it.client()
    _start(d, fresh, backup, client)
    if not fresh and request.form.get("keep_maintenance") == "yes":
        keep = MaintenanceRequest(
            level="block",
            message="The site was just updated and is being checked. It will be back soon.",
            allow=[client] if client != "unknown" else [],
        )
        who = f"installer (web, {client})"
        switch.switch_on(it.settings, keep, who, trigger="web", engine=it.cache.engine)
    session.update(started=time.time(), fresh=fresh)
    session["after_run"] = d.run.id if d.run is not None else 0  # runs after it are ours
    return redirect(url_for("progress"))


def _start(d: Diagnosis, fresh: bool, backup: bool, client: str) -> None:
    command = "install" if fresh else "upgrade"
    settings = installer().settings
    process = start_detached(settings, command=command, backup=backup, trigger="web", client=client)
    log.warning(
        "installer: %s started from the web by %s (process %d, %s)",
        command,
        client,
        process.pid,
        "with a backup" if backup else "without a backup",
    )


def next_page(d: Diagnosis) -> str | None:
    """Where the progress page goes once this session's run is no longer running
    (None: stay, it is running or still starting)."""
    if d.state is State.UPGRADE_RUNNING and d.run is not None:
        return None
    started = _started()
    if started is None:
        return "index"
    if d.state.settled:
        return "done"
    ours = d.run is not None and d.run.id > int(session.get("after_run", 0))
    if d.state.unfinished and ours:
        return "failed"
    if utcnow() - started < dt.timedelta(seconds=60):
        return None
    return "index"


def _started() -> dt.datetime | None:
    """When this session started a run, as naive UTC like the journal's times."""
    value = session.get("started")
    if not value:
        return None
    return dt.datetime.fromtimestamp(float(value), dt.timezone.utc).replace(tzinfo=None)


def progress() -> View:
    d = installer().current()
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


def progress_json() -> Response:
    """What the progress page shows, for its script to update in place (and announce
    through its live region) instead of reloading the page."""
    d = installer().current()
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


def done() -> View:
    d = installer().current()
    if not d.state.settled:
        return redirect(url_for("index"))
    m = d.maintenance
    kept = (
        m is not None and m.active(d.checked_at) and (m.set_by or "").startswith("installer (web")
    )
    fresh = session.get("fresh", False)
    return render_template("wizard/done.html", d=d, fresh=fresh, checks=verify(d), kept=kept)


def open_site() -> View:
    """Maintenance off, after the administrator checked the upgraded site."""
    it = installer()
    who = f"installer (web, {it.client()})"
    switch.switch_off(it.settings, who, trigger="web", engine=it.cache.engine)
    return redirect(url_for("done"))


def failed() -> View:
    d = installer().current()
    if not d.state.unfinished or d.run is None:
        return redirect(url_for("index"))
    return render_template("wizard/failed.html", d=d, run=d.run, report=support_report())


def run_log() -> Response:
    """The log of runs started here (the detached process writes it), redacted."""
    settings = installer().settings
    tail = report.log_tail(Path(settings.backup_dir), settings.database_url, 500)
    text = "\n".join(tail["lines"]) or tail.get("note") or tail.get("error") or ""
    return Response(text + "\n", mimetype="text/plain")


def report_txt() -> Response:
    return Response(
        support_report(),
        mimetype="text/plain",
        headers={"Content-Disposition": 'attachment; filename="upgrader-report.txt"'},
    )


def support_report() -> str:
    """`upgrader doctor`, as support asks for it, with every secret scrubbed."""
    settings = installer().settings
    d, data = report.doctor(settings)
    text = click.unstyle(render_doctor(d, data))
    return scrub(text, secrets_of(settings, d), settings.database_url)


def _elapsed(run: Any) -> str:
    seconds = max(0, int((utcnow() - run.started_at).total_seconds()))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


ROUTES: tuple[tuple[str, Any, tuple[str, ...]], ...] = (
    ("/", index, ("GET",)),
    ("/key", key, ("GET", "POST")),
    ("/eula", eula, ("GET", "POST")),
    ("/checks", checks, ("GET",)),
    ("/start", start, ("POST",)),
    ("/progress", progress, ("GET",)),
    ("/progress.json", progress_json, ("GET",)),
    ("/done", done, ("GET",)),
    ("/open", open_site, ("POST",)),
    ("/failed", failed, ("GET",)),
    ("/log", run_log, ("GET",)),
    ("/report.txt", report_txt, ("GET",)),
)
"""The pages, by path; each view's name is its endpoint (the templates' url_for)."""
