"""The admin console (/upgrader/admin) with no integration: the console key, CSRF, every
switch through the CLI's code path, on three databases. The Flask integration with the
application's own check is driven in Chromium (tests/test_console_browser.py)."""

from __future__ import annotations

import html
import logging
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import Client

from tests.helpers import add_run, cli_args, install, journal_of, run_cli, status_of
from tests.test_guard import plain_app
from tests.test_lint_cli import chain as lint_chain
from tests.test_wizard_security import csrf, site
from upgrader.core import storage
from upgrader.core.tables import define_tables
from upgrader.sample.releases import CURRENT
from upgrader.settings import resolve
from upgrader.web import UpgraderMiddleware

ADMIN = "/upgrader/admin/"


@pytest.fixture
def console(db_url: str, tmp_path: Path) -> tuple[Client, str, Path]:
    install(db_url, CURRENT)
    settings, _ = site(db_url, tmp_path)
    guarded = UpgraderMiddleware(plain_app, settings)

    def from_localhost(environ: dict[str, Any], start_response: Any) -> Any:
        environ["REMOTE_ADDR"] = "127.0.0.1"
        return guarded(environ, start_response)

    return Client(from_localhost), db_url, tmp_path


def key_of(url: str, tmp_path: Path) -> str:
    printed = run_cli(
        *cli_args(url), "admin-key", env={"UPGRADER_BACKUP_DIR": str(tmp_path / "backups")}
    )
    assert printed.exit_code == 0, printed.output
    return printed.output.strip()


def open_console(client: Client, url: str, tmp_path: Path) -> str:
    form = client.get(ADMIN, follow_redirects=True)
    assert "Prove that you can reach the server" in form.text
    # The command the page prints works when pasted on the server, from anywhere, in the
    # operator's shell (which carries the configuration that comes from the environment).
    printed = re.search(r"<code>([^<]+ admin-key[^<]*)</code>", form.text)
    assert printed, form.text
    pasted = subprocess.run(
        ["sh", "-c", html.unescape(printed.group(1))],
        capture_output=True, text=True, cwd="/", timeout=60,
        env={"PATH": "/usr/bin:/bin"}, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert pasted.stdout.strip() == key_of(url, tmp_path), pasted.stderr
    opened = client.post(
        ADMIN + "key",
        data={"key": key_of(url, tmp_path), "csrf_token": csrf(form.text)},
        follow_redirects=True,
    )
    assert opened.status_code == 200 and "Maintenance is off" in opened.text, opened.text
    return csrf(opened.text)


def stored(url: str) -> Any:
    from sqlalchemy import create_engine

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return storage.read_facts(conn, define_tables()).states[0]
    finally:
        engine.dispose()


def test_the_console_needs_the_key_and_a_csrf_token(
    console: tuple[Client, str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    client, url, tmp_path = console
    assert client.get("/upgrader/admin").status_code == 308
    assert client.get(ADMIN).headers["Location"].endswith("/upgrader/admin/key")
    form = client.get(ADMIN + "key")
    assert form.headers["Cache-Control"] == "no-store"
    assert form.headers["X-Frame-Options"] == "DENY"
    wrong = client.post(ADMIN + "key", data={"key": "guess", "csrf_token": csrf(form.text)})
    assert wrong.status_code == 403 and "not the console key" in wrong.text
    # Nothing of the console without the key, and no change through a forged form.
    assert client.get(ADMIN, follow_redirects=True).request.path.endswith("/key")
    assert client.post(ADMIN + "on", data={"level": "block"}).status_code == 400
    token = open_console(client, url, tmp_path)
    forged = client.post(ADMIN + "on", data={"level": "block", "csrf_token": "forged"})
    assert forged.status_code == 400 and "expired" in forged.text
    assert stored(url).maintenance.mode == "off"
    assert client.get("/").status_code == 200
    # A new key ends every session opened with the old one.
    (tmp_path / "backups" / ".admin-key").unlink()
    assert client.post(ADMIN + "off", data={"csrf_token": token}).status_code == 302
    assert client.get(ADMIN).headers["Location"].endswith("/key")


def test_the_console_switches_maintenance_as_the_cli_does(
    console: tuple[Client, str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    client, url, tmp_path = console
    token = open_console(client, url, tmp_path)
    caplog.set_level(logging.INFO, "upgrader")
    on = client.post(
        ADMIN + "on",
        data={
            "csrf_token": token, "when": "now", "level": "block", "message": "Disk swap",
            "until": "+1h", "allow": "203.0.113.7, 2001:db8::/32",
        },
        follow_redirects=True,
    )  # fmt: skip
    assert on.status_code == 200 and "Maintenance is on (block)" in on.text
    assert "in force now" in on.text and "Disk swap" in on.text
    assert "on (block); message &#39;Disk swap&#39;" in on.text  # listed among the changes
    state = stored(url).maintenance
    assert (state.mode, state.message, state.allow) == (
        "block",
        "Disk swap",
        ("203.0.113.7", "2001:db8::/32"),
    )
    assert state.set_by == "console key holder (web, 127.0.0.1)"
    assert (
        "maintenance on (block); message 'Disk swap'; until " in caplog.text
        and "; let through 203.0.113.7, 2001:db8::/32, by console key holder (web, 127.0.0.1)"
        in caplog.text
    )
    entry = journal_of(url)[0]  # the change is journalled beside the runs
    assert (entry["kind"], entry["trigger"], entry["actor"]) == (
        "maintenance",
        "web",
        "console key holder (web, 127.0.0.1)",
    )
    assert entry["note"].startswith("on (block); message 'Disk swap'; until ")
    blocked = client.get("/")  # this process sees the change at once
    assert blocked.status_code == 503 and "Disk swap" in blocked.text
    assert 3500 < int(blocked.headers["Retry-After"]) <= 3600
    # `maintenance status` reads what the console wrote.
    status = run_cli(*cli_args(url), "maintenance", "status")
    assert "Disk swap" in status.output and "allow    2001:db8::/32" in status.output

    bad = client.post(
        ADMIN + "on", data={"csrf_token": token, "when": "now", "until": "tomorrow-ish"}
    )
    assert bad.status_code == 400 and "use an ISO time" in bad.text
    assert stored(url).maintenance.message == "Disk swap"  # a refused form changes nothing

    window = client.post(
        ADMIN + "on",
        data={
            "csrf_token": token, "when": "window", "level": "block", "start": "+1d",
            "end": "+1d", "message": "Server move",
        },
    )  # fmt: skip
    assert window.status_code == 400 and "ends before it starts" in window.text
    window = client.post(
        ADMIN + "on",
        data={
            "csrf_token": token, "when": "window", "level": "block", "start": "+1d",
            "end": "+2d", "message": "Server move",
        },
        follow_redirects=True,
    )  # fmt: skip
    assert "Maintenance window scheduled" in window.text and "scheduled" in window.text
    assert "Cancel the window" in window.text
    visitor = client.get("/")
    assert visitor.status_code == 200  # announced, not yet in force
    cancelled = client.post(ADMIN + "off", data={"csrf_token": token}, follow_redirects=True)
    assert "Maintenance is off" in cancelled.text
    assert stored(url).maintenance.start is None
    assert "maintenance off, by console key holder (web, 127.0.0.1)" in caplog.text

    rotated = client.post(ADMIN + "secret", data={"csrf_token": token})
    assert rotated.status_code == 200 and "New bypass URL" in rotated.text
    shown = re.search(r"<code>(http://[^<]*/upgrader/bypass/([^<]+))</code>", rotated.text)
    assert shown, rotated.text
    url_shown = shown.group(1)
    assert "bypass secret rotated by console key holder" in caplog.text
    assert url_shown.rsplit("/", 1)[1] not in caplog.text  # never a secret in a log
    assert "New bypass URL" not in client.get(ADMIN).text  # shown once
    again = client.post(ADMIN + "on", data={"csrf_token": token, "when": "now", "level": "block"})
    assert again.status_code == 302, again.text
    assert client.get("/").status_code == 503
    client.get(url_shown.split("127.0.0.1", 1)[-1] if "127.0.0.1" in url_shown else url_shown)
    assert client.get("/").status_code == 200  # the new secret lets its holder through


def test_maintenance_changes_never_hide_a_failed_upgrade(db_url: str, tmp_path: Path) -> None:
    """More switches than the diagnosis reads journal rows: the failed run stays in sight."""
    install(db_url, "1.0.0")
    add_run(db_url, status="failed", error="IntegrityError: duplicate key", finished_at=None)
    assert status_of(db_url, tmp_path)["state"] == "upgrade_failed"
    for _ in range(5):
        for switch in ("on", "off"):
            assert run_cli(*cli_args(db_url), "maintenance", switch).exit_code == 0
    journal = journal_of(db_url)
    assert [e["kind"] for e in journal[:10]] == ["maintenance"] * 10
    assert [e["note"] for e in journal[:2]] == ["off", "on (block)"]
    assert journal[0]["actor"].endswith("(cli)") and journal[0]["trigger"] == "cli"
    status = status_of(db_url, tmp_path)
    assert status["state"] == "upgrade_failed", status
    assert "IntegrityError: duplicate key" in " ".join(status["details"])
    history = run_cli(*cli_args(db_url), "history")
    assert "  maintenance on (block)  (cli " in history.output


def test_the_cli_rotates_the_bypass_secret_through_the_same_path(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    from upgrader.core.maintenance import check_secret

    install(db_url, CURRENT)
    caplog.set_level(logging.INFO, "upgrader")
    rotated = run_cli(*cli_args(db_url), "maintenance", "secret")
    assert rotated.exit_code == 0, rotated.output
    secret = re.search(r"/upgrader/bypass/(\S+)", rotated.output)
    assert secret, rotated.output
    state = stored(db_url).maintenance
    assert state.mode == "off"  # a new secret switches nothing on
    assert check_secret(secret.group(1), state.secret_hash)
    assert journal_of(db_url)[0]["note"] == "new bypass secret"
    assert "bypass secret rotated by" in caplog.text and secret.group(1) not in caplog.text
    again = run_cli(*cli_args(db_url), "maintenance", "secret")
    assert not check_secret(secret.group(1), stored(db_url).maintenance.secret_hash)
    assert again.exit_code == 0


def test_the_console_says_what_upgrade_online_will_refuse(db_url: str, tmp_path: Path) -> None:
    """A pending revision declared online that drops a column the previous release reads:
    the console says, before anyone clicks, that `upgrade --online` will refuse it (the check
    runs in a child process: the application's env.py never runs in the web server)."""
    migrations = lint_chain(tmp_path / "m")
    base = ["--database-url", db_url, "--migrations", str(migrations), "--code-version", "2.0.0"]
    env = {"UPGRADER_RELEASES": "1.0.0=r2", "UPGRADER_BACKUP_DIR": str(tmp_path / "backups")}
    installed = run_cli(*base, "install", "--release", "1.0.0", "--yes", env=env)
    assert installed.exit_code == 0, installed.output
    settings = resolve(
        {
            "database_url": db_url,
            "migrations": str(migrations),
            "code_version": "2.0.0",
            "releases": {"1.0.0": "r2"},
            "installer_dir": str(tmp_path / "none"),
            "backup_dir": str(tmp_path / "backups"),
        },
        environ={},
    )
    guarded = UpgraderMiddleware(plain_app, settings)

    def from_localhost(environ: dict[str, Any], start_response: Any) -> Any:
        environ["REMOTE_ADDR"] = "127.0.0.1"
        return guarded(environ, start_response)

    client = Client(from_localhost)
    open_console(client, db_url, tmp_path)
    shown = client.get(ADMIN).text
    assert "<code>upgrade --online</code> will refuse:" in shown, shown
    assert "<code>r3</code> [contract]" in shown and "DROP COLUMN isbn" in shown
    assert "r4" not in shown.split('id="online-check"')[1].split("</div>")[0]  # not online
