"""The console's pages: the state with its switches, the key, logging out."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from flask import redirect, render_template, request, session, url_for
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.wrappers import Response

from upgrader.console.context import console
from upgrader.core import clients, nodes, storage
from upgrader.core import maintenance as mode
from upgrader.core.database import describe_error, missing_sqlite_file
from upgrader.core.diagnosis import Diagnosis, diagnose
from upgrader.core.keys import CONSOLE_KEY, console_fingerprint, console_key, key_file_matches
from upgrader.core.tables import define_tables
from upgrader.engine.detach import lint_in_child
from upgrader.http import maintenance as switch
from upgrader.settings import Settings

log = logging.getLogger("upgrader")

View = Response | tuple[str, int] | tuple[str, int, dict[str, str]]


def page(status: int = 200, **extra: Any) -> tuple[str, int]:
    """The console's one page, read fresh: the state, maintenance, runs and nodes."""
    it = console()
    settings, cache = it.settings, it.cache
    tables = define_tables(settings.table_prefix)
    try:
        cache.invalidate()  # the page shows the truth now
        d = diagnose(settings, code=cache.code, engine=cache.engine)
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
        user=it.user(),
        integrated=it.integrated,
        csrf_token=session["csrf"],
        online=online_check(settings, d),
        cli=settings.cli,
        static_dir=settings.static_dir,
        ttl=settings.cache_ttl,
        **extra,
    ), status


@dataclass(frozen=True)
class OnlineCheck:
    refused: list[dict[str, Any]]  # findings that make `upgrade --online` refuse


_checked: dict[tuple[tuple[str, ...], tuple[str, ...]], OnlineCheck | None] = {}


def online_check(settings: Settings, d: Diagnosis) -> OnlineCheck | None:
    """What `upgrade --online` will make of the pending online revisions, asked of a child
    process (rendering runs the application's env.py, whose logging setup must not touch
    this server's); once per pending set and database position."""
    online = tuple(r.id for r in d.pending_revisions if r.phase == "online")
    if not online:
        return None
    key = (online, tuple(d.database_revisions))
    if key not in _checked:
        report = lint_in_child(settings, list(online))
        _checked[key] = None if report is None else OnlineCheck(_refused(report))
    return _checked[key]


def _refused(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The findings the child's report says make `upgrade --online` refuse."""
    return [f for rev in report.get("revisions", []) for f in rev.get("unsafe_online", [])]


def _done(notice: str) -> Response:
    console().cache.invalidate()  # this process follows the change at once; others in the TTL
    session["notice"] = notice
    return redirect(url_for("index"))


def index() -> View:
    return page(notice=session.pop("notice", None))


def on() -> View:
    it = console()
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
            it.settings, maintenance, it.who(), trigger="web", engine=it.cache.engine,
            code=it.cache.code,
        )  # fmt: skip
    except (ValueError, mode.MaintenanceError) as exc:
        return page(400, error=str(exc))
    what = "Maintenance window scheduled" if scheduled else "Maintenance is on"
    return _done(f"{what} ({maintenance.level}). Every node follows within the cache TTL.")


def off() -> View:
    it = console()
    switch.switch_off(it.settings, it.who(), trigger="web", engine=it.cache.engine)
    return _done("Maintenance is off (a scheduled window is cancelled).")


def secret() -> View:
    it = console()
    try:
        value = switch.rotate_secret(it.settings, it.who(), trigger="web", engine=it.cache.engine)
    except mode.MaintenanceError as exc:
        return page(400, error=str(exc))
    return page(bypass_url=request.host_url.rstrip("/") + it.settings.bypass_path + value)


def key() -> View:
    """Proof of access to the server, when the application has no check of its own."""
    it = console()
    if it.integrated or it.user() is not None:
        return redirect(url_for("index"))
    console_key(it.key_dir)  # made on first visit, readable only on the server
    command = it.settings.key_command("admin-key", "--backup-dir", it.key_dir.resolve())
    if request.method == "GET":
        return render_template("console/key.html", error=None, command=command), 200
    client = it.client()
    wait = it.throttle.wait(client)
    if wait > 0:
        seconds = int(wait) + 1
        text = f"Too many wrong keys. Wait {seconds} seconds."
        page_ = render_template("console/key.html", error=text, command=command)
        return page_, 429, {"Retry-After": str(seconds)}
    if not key_file_matches(request.form.get("key", ""), it.key_dir, CONSOLE_KEY):
        count = it.throttle.failed(client)
        log.warning("console: wrong key from %s (%d in a row)", client, count)
        text = "That is not the console key."
        return render_template("console/key.html", error=text, command=command), 403
    it.throttle.succeeded(client)
    log.info("console: key accepted from %s", client)
    session.clear()
    session.update(authed=True, key=console_fingerprint(it.key_dir))
    return redirect(url_for("index"))


def logout() -> View:
    session.clear()
    return redirect(url_for("key"))


ROUTES: tuple[tuple[str, Any, tuple[str, ...]], ...] = (
    ("/", index, ("GET",)),
    ("/on", on, ("POST",)),
    ("/off", off, ("POST",)),
    ("/secret", secret, ("POST",)),
    ("/key", key, ("GET", "POST")),
    ("/logout", logout, ("POST",)),
)
"""The pages, by path; each view's name is its endpoint."""
