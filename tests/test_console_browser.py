"""The admin console in Chromium, in a Flask application that says itself who is an admin.

Two `upgrader serve` processes of the application share one database: the administrator
uses the first, a visitor the second, which must follow every change within the TTL.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import MIGRATIONS, install, serving
from tests.test_browser import ARTIFACTS, CHROMIUM, FLAGS, pytestmark  # noqa: F401
from tests.test_console import stored
from upgrader.sample.releases import CURRENT

APP = '''\
"""An application with its own logins: only alice is an administrator."""
from flask import Flask, request, session

from upgrader.web.flask import Upgrader


def create_app():
    app = Flask(__name__)
    app.secret_key = "the integrator's own secret"

    @app.get("/")
    def home():
        return "<!doctype html><html><body><h1>Home of the site</h1></body></html>"

    @app.get("/login")
    def login():
        session["user"] = request.args["name"]
        return f"logged in as {session['user']}"

    def is_admin():
        return session.get("user") == "alice" and "alice"

    Upgrader(app, authorize=is_admin)
    return app
'''

TTL = 1.0


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    """(the administrator's server, the visitor's server, the database URL)."""
    url = f"sqlite:///{tmp_path / 'site.db'}"
    install(url, CURRENT)
    (tmp_path / "site_app.py").write_text(APP)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UPGRADER_", "FLASK_"))}
    env.update(
        UPGRADER_DATABASE_URL=url,
        UPGRADER_MIGRATIONS=str(MIGRATIONS),
        UPGRADER_CODE_VERSION=CURRENT,
        UPGRADER_CACHE_TTL=str(TTL),
        UPGRADER_BACKUP_DIR=str(tmp_path / "backups"),
        UPGRADER_INSTALLER_DIR=str(tmp_path / "none"),
    )
    with serving(2, env, app=["--app", "site_app:create_app"], cwd=tmp_path) as servers:
        (admin, _), (visitor, _) = servers
        yield f"http://127.0.0.1:{admin}", f"http://127.0.0.1:{visitor}", url


def follows(page: Any, url: str, check: Any, what: str) -> float:
    """Seconds until the visitor's page at `url` satisfies `check`."""
    started = time.monotonic()
    while True:
        response = page.goto(url)
        if check(response, page):
            return time.monotonic() - started
        assert time.monotonic() - started < 10, f"the visitor never saw {what}"
        time.sleep(0.1)


@pytest.fixture
def evil_site() -> Iterator[tuple[str, dict[str, str]]]:
    """Another site, whose page posts a form to the console in the visitor's browser."""
    target: dict[str, str] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = (
                f'<form method="post" action="{target["url"]}">'
                '<input name="when" value="now"><input name="level" value="block">'
                '<input name="message" value="forged"></form>'
                "<script>document.forms[0].submit()</script>"
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://localhost:{server.server_address[1]}/", target
    finally:
        server.shutdown()


def test_an_admin_switches_maintenance_from_the_console(
    servers: tuple[str, str, str], evil_site: Any
) -> None:
    from playwright.sync_api import sync_playwright

    admin_site, visitor_site, url = servers
    console = f"{admin_site}/upgrader/admin/"
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            visitor = browser.new_context().new_page()
            assert visitor.goto(f"{visitor_site}/").status == 200

            # Nobody but the application's administrators gets anything of the console.
            stranger = browser.new_context().new_page()
            for name in (None, "bob"):
                if name:
                    stranger.goto(f"{admin_site}/login?name={name}")
                refused = stranger.goto(console)
                assert refused.status == 404
                assert stranger.content().count("aintenance") == 0
                posted = stranger.request.post(console + "on", form={"level": "block"})
                assert posted.status == 404

            admin_context = browser.new_context(viewport={"width": 1280, "height": 900})
            admin = admin_context.new_page()
            admin.goto(f"{admin_site}/login?name=alice")
            assert admin.goto(console).status == 200
            admin.get_by_role("heading", name="Maintenance", exact=True).wait_for()
            assert "Maintenance is off" in admin.content()
            admin.screenshot(path=str(ARTIFACTS / "console-off.png"), full_page=True)

            # On, from the page: the visitor's server follows within the TTL.
            admin.get_by_label("Message for visitors").first.fill("Disk swap tonight")
            admin.get_by_label("Expected end").fill("+1h")
            admin.get_by_role("button", name="Switch maintenance on").click()
            admin.get_by_text("Maintenance is on (block)").wait_for()
            assert "in force now" in admin.content()
            admin.screenshot(path=str(ARTIFACTS / "console-on.png"), full_page=True)
            took = follows(
                visitor,
                f"{visitor_site}/",
                lambda r, pg: r.status == 503 and "Disk swap tonight" in pg.content(),
                "the maintenance page",
            )
            assert took < TTL + 1.5, took
            visitor.screenshot(path=str(ARTIFACTS / "console-visitor-blocked.png"))
            assert stored(url).maintenance.set_by == "alice (web, 127.0.0.1)"

            # A forged form, posted from another site in the administrator's browser.
            evil_url, target = evil_site
            target["url"] = console + "on"
            forged = admin_context.new_page()
            with forged.expect_navigation(url=console + "on"):
                forged.goto(evil_url)
            assert "forged" not in forged.content()
            assert stored(url).maintenance.message == "Disk swap tonight"
            wrong = admin.request.post(
                console + "on", form={"csrf_token": "guessed", "when": "now", "message": "x"}
            )
            assert wrong.status == 400 and stored(url).maintenance.message == "Disk swap tonight"

            # Off, then a window scheduled (announced to visitors) and cancelled.
            admin.get_by_role("button", name="Switch maintenance off").click()
            admin.get_by_text("Maintenance is off (a scheduled window is cancelled)").wait_for()
            follows(visitor, f"{visitor_site}/", lambda r, pg: r.status == 200, "the site")
            window = admin.locator("form").filter(has_text="Schedule the window")
            window.get_by_label("Start").fill("+1d")
            window.get_by_label("End").fill("+2d")
            window.get_by_label("Message for visitors").fill("Server move")
            admin.get_by_role("button", name="Schedule the window").click()
            admin.get_by_text("Maintenance window scheduled (block)").wait_for()
            assert "scheduled" in admin.content()
            admin.screenshot(path=str(ARTIFACTS / "console-window.png"), full_page=True)
            follows(
                visitor,
                f"{visitor_site}/",
                lambda r, pg: r.status == 200 and "Scheduled maintenance from" in pg.content(),
                "the announcement",
            )
            visitor.screenshot(path=str(ARTIFACTS / "console-visitor-announced.png"))
            admin.get_by_role("button", name="Cancel the window").click()
            admin.get_by_text("Maintenance is off").first.wait_for()
            follows(
                visitor,
                f"{visitor_site}/",
                lambda r, pg: "Scheduled maintenance" not in pg.content(),
                "the announcement gone",
            )
            assert stored(url).maintenance.mode == "off"
        finally:
            browser.close()
