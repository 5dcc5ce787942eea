"""The wizard's locks: the upgrade key, throttling, CSRF, self-lock, and no key anywhere."""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import Client

from tests.helpers import MIGRATIONS, ROOT, cli_args, install, run_cli
from upgrader.core.keys import UPGRADE_KEY as KEY_FILE
from upgrader.sample.releases import CURRENT
from upgrader.settings import resolve
from upgrader.web.middleware import UpgraderMiddleware


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"the application"]


def site(db_url: str, tmp_path: Path, **extra: Any) -> tuple[Any, Path]:
    """A guarded application with the installer's files in tmp_path/install: the settings
    are made once, so each call with them is another process of the same server."""
    installer = tmp_path / "install"
    if not installer.exists():
        shutil.copytree(ROOT / "install", installer, ignore=shutil.ignore_patterns(".*"))
    values: dict[str, Any] = {
        "database_url": db_url,
        "migrations": str(MIGRATIONS),
        "code_version": CURRENT,
        "installer_dir": str(installer),
        "backup_dir": str(tmp_path / "backups"),
        "cache_ttl": 0.1,
        **extra,
    }
    return resolve(values, environ={}), installer


@pytest.fixture
def wizard(db_url: str, tmp_path: Path) -> tuple[Client, Path, str]:
    settings, installer = site(db_url, tmp_path)
    return Client(UpgraderMiddleware(app, settings)), installer, db_url


def csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, html
    return match.group(1)


def log_in(client: Client, installer: Path) -> None:
    page = client.get("/install/key")
    key = (installer / KEY_FILE).read_text().strip()
    answer = client.post("/install/key", data={"key": key, "csrf_token": csrf(page.text)})
    assert answer.status_code == 302, answer.text


def test_nothing_is_reachable_without_the_key(wizard: tuple[Client, Path, str]) -> None:
    client, installer, url = wizard
    install(url, "1.0.0")
    for path in (
        "/install",
        "/install/",
        "/install/eula",
        "/install/checks",
        "/install/progress",
        "/install/done",
        "/install/failed",
    ):
        answer = client.get(path)
        assert answer.status_code in (301, 302, 308), path
        assert answer.headers["Location"].endswith("/install/key"), path
    key_page = client.get("/install/key")
    assert key_page.status_code == 200 and "upgrade key" in key_page.text
    assert (installer / KEY_FILE).stat().st_mode & 0o777 == 0o600
    refused = client.post("/install/start", data={"backup": "auto"})
    assert refused.status_code == 400  # no CSRF token: refused before anything else
    token = csrf(client.get("/install/key").text)
    assert client.post("/install/start", data={"csrf_token": token}).status_code == 302
    assert run_cli(*cli_args(url), "history", "--json").output.strip() == "[]"


def test_wrong_keys_are_throttled(wizard: tuple[Client, Path, str]) -> None:
    client, installer, url = wizard
    install(url, "1.0.0")
    token = csrf(client.get("/install/key").text)
    for _ in range(5):
        wrong = client.post("/install/key", data={"key": "guess", "csrf_token": token})
        assert wrong.status_code == 403 and "not the upgrade key" in wrong.text
    key = (installer / KEY_FILE).read_text().strip()
    locked = client.post("/install/key", data={"key": key, "csrf_token": token})
    assert locked.status_code == 429 and int(locked.headers["Retry-After"]) >= 29
    assert "Too many wrong keys" in locked.text
    other = Client(client.application)  # throttling is per client address, not global
    other_token = csrf(other.get("/install/key", environ_base={"REMOTE_ADDR": "10.1.1.1"}).text)
    ok = other.post(
        "/install/key",
        data={"key": key, "csrf_token": other_token},
        environ_base={"REMOTE_ADDR": "10.1.1.1"},
    )
    assert ok.status_code == 302


def test_posts_without_their_csrf_token_are_refused(wizard: tuple[Client, Path, str]) -> None:
    client, installer, url = wizard
    install(url, "1.0.0")
    log_in(client, installer)
    assert client.post("/install/eula", data={"accept": "yes"}).status_code == 400
    assert (
        client.post("/install/eula", data={"accept": "yes", "csrf_token": "forged"}).status_code
        == 400
    )
    page = client.get("/install/eula")
    assert (
        client.post(
            "/install/eula", data={"accept": "yes", "csrf_token": csrf(page.text)}
        ).status_code
        == 302
    )


def test_the_wizard_refuses_to_run_when_all_is_well(wizard: tuple[Client, Path, str]) -> None:
    client, installer, url = wizard
    install(url, CURRENT)
    log_in(client, installer)
    page = client.get("/install/", follow_redirects=True)
    assert "Nothing needs doing" in page.text and "rm -r" in page.text
    token = csrf(client.get("/install/eula").text)
    client.post("/install/eula", data={"accept": "yes", "csrf_token": token})
    started = client.post("/install/start", data={"backup": "auto", "csrf_token": token})
    assert started.status_code == 302 and started.headers["Location"].endswith("/install/")
    assert client.get("/install/checks").headers["Location"].endswith("/install/")
    assert run_cli(*cli_args(url), "history", "--json").output.strip() == "[]"


def test_the_key_appears_in_no_response_and_no_log(
    wizard: tuple[Client, Path, str], caplog: pytest.LogCaptureFixture
) -> None:
    client, installer, url = wizard
    install(url, "1.0.0")
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    for path in ("/", "/install/", "/install/key"):
        answer = client.get(path)
        seen.append(answer.text + str(answer.headers))
    log_in(client, installer)
    key = (installer / KEY_FILE).read_text().strip()
    for path in ("/install/", "/install/eula", "/install/checks", "/upgrader/status"):
        answer = client.get(path, follow_redirects=True)
        seen.append(answer.text + str(answer.headers))
    assert all(key not in page for page in seen)
    assert key not in caplog.text
    assert run_cli(*cli_args(url), "doctor").output.count(key) == 0


def test_deleting_install_removes_the_wizard_at_once(wizard: tuple[Client, Path, str]) -> None:
    client, installer, url = wizard
    install(url, "1.0.0")
    assert client.get("/install/key").status_code == 200
    shutil.rmtree(installer)
    gone = client.get("/install/key")
    assert gone.status_code == 404 and "removed" in gone.text


def test_demo_serves_err2_and_the_wizard(tmp_path: Path) -> None:
    """`upgrader demo`: the oldest release with data, the current code, the key printed."""
    import os
    import subprocess
    import sys
    import urllib.error
    import urllib.request

    from tests.helpers import free_port, wait_for_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("UPGRADER_")}
    demo = subprocess.Popen(
        [sys.executable, "-m", "upgrader", "demo", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for_port(port, timeout=30)
        with pytest.raises(urllib.error.HTTPError) as blocked:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/")
        assert blocked.value.code == 503
        assert "Down for Maintenance (Err2)" in blocked.value.read().decode()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/install") as page:
            assert page.url.endswith("/install/key")
    finally:
        demo.terminate()
        output = demo.communicate(timeout=10)[0]
    from upgrader.sample import create_app

    instance = Path(create_app().instance_path)
    key = (instance / "install" / KEY_FILE).read_text().strip()
    assert f"the upgrade key: {key}" in output
    assert "Shelf 1.0.0 is installed" in output
    # Enough rows that the 2.0.0 migration (which rewrites every author) takes long enough
    # for a newcomer to watch its progress.
    from sqlalchemy import create_engine, text

    from upgrader.sample.data import DEMO_AUTHORS

    engine = create_engine(f"sqlite:///{instance / 'shelf.db'}")
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM authors")) > DEMO_AUTHORS
    engine.dispose()


def test_unwritable_install_directory_is_explained(
    wizard: tuple[Client, Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, _, url = wizard
    install(url, "1.0.0")
    from upgrader.core import keys as access

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(access.os, "open", refuse)  # as root, chmod cannot make it unwritable
    answer = client.get("/install/key")
    assert answer.status_code == 500
    assert "must be able to write its keys" in answer.text and "Traceback" not in answer.text
