"""The guard under attack and outage: one deadline for Err1, no queue behind a refresh, and
each of the security promises of docs/embedding.md, docs/maintenance.md, docs/installer.md."""

from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from werkzeug.test import Client

from tests.helpers import (
    MIGRATIONS,
    SAMPLE,
    books_locked,
    cli_args,
    dump_running,
    free_port,
    install,
    programs_started,
    run_cli,
    wait_for_port,
)
from tests.test_guard import ADMIN_PAGE, guard
from tests.test_unavailable import silent_port, url_with_password  # noqa: F401 (fixture)
from tests.test_wizard_security import app, csrf, log_in, site, wizard  # noqa: F401
from upgrader.core import clients, keys
from upgrader.core.keys import UPGRADE_KEY as KEY_FILE
from upgrader.engine import backup as backup_module
from upgrader.sample.releases import CURRENT
from upgrader.web.middleware import UpgraderMiddleware

# ------------------------------------------------------------------------ outage


def test_a_silent_server_is_err1_within_the_deadline(
    server_backend: str,
    silent_port: int,  # noqa: F811
    tmp_path: Path,
) -> None:
    url = url_with_password(server_backend, silent_port)
    middleware = guard(url, tmp_path, connect_timeout=2)
    started = time.monotonic()
    first = Client(middleware).get("/")
    assert first.status_code == 503 and first.headers["X-Upgrader-State"] == "database_unavailable"
    assert time.monotonic() - started < 3, "the first request waited past the deadline + 1 s"
    started = time.monotonic()
    result = run_cli(*cli_args(url), "status", "--json", env={"UPGRADER_CONNECT_TIMEOUT": "2"})
    assert json.loads(result.output)["state"] == "database_unavailable"
    assert time.monotonic() - started < 3, "status waited past the deadline + 1 s"


def test_a_cold_process_answers_everybody_during_an_outage(
    server_backend: str,
    silent_port: int,  # noqa: F811
    tmp_path: Path,
) -> None:
    url = url_with_password(server_backend, silent_port)
    middleware = guard(url, tmp_path, connect_timeout=2)
    started = time.monotonic()

    def request(_: int) -> tuple[int, float]:
        answer = Client(middleware).get("/")
        return answer.status_code, time.monotonic() - started

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(request, range(8)))
    assert all(code == 503 for code, _ in answers), answers
    assert max(t for _, t in answers) < 3, answers  # nobody queued behind the first refresh
    assert sum(1 for _, t in answers if t < 1.5) >= 7  # the others did not wait the deadline


# ---------------------------------------------------------------------- bypass


def test_the_bypass_cookie_survives_other_cookies_and_guessing_is_throttled(
    db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    install(db_url, CURRENT)
    run_cli(*cli_args(db_url), "maintenance", "on", "--secret", "open-sesame-42")
    middleware = guard(db_url, tmp_path)
    client = Client(middleware)
    granted = client.get("/upgrader/bypass/open-sesame-42")
    cookie = granted.headers["Set-Cookie"].split(";")[0].split("=", 1)[1]
    for header in (
        f'a={{"x":1}}; upgrader_bypass={cookie}',
        f"b=one two; upgrader_bypass={cookie}",
    ):
        fresh = Client(middleware, use_cookies=False)  # the header as a browser sends it
        assert fresh.get("/", headers={"Cookie": header}).status_code == 200, header
    caplog.set_level(logging.INFO, logger="upgrader")
    guesser = {"REMOTE_ADDR": "198.51.100.77"}
    for _ in range(5):
        assert client.get("/upgrader/bypass/guess", environ_base=guesser).status_code == 503
    late = client.get("/upgrader/bypass/open-sesame-42", environ_base=guesser)
    assert late.status_code == 503 and "Set-Cookie" not in late.headers  # throttled now
    other = client.get("/upgrader/bypass/open-sesame-42", environ_base={"REMOTE_ADDR": "10.1.1.1"})
    assert other.status_code == 303  # another client is not affected
    text = caplog.text
    assert "bypass refused to 198.51.100.77: wrong secret" in text
    assert "too many wrong secrets" in text and "bypass granted to 10.1.1.1" in text
    assert "open-sesame-42" not in text and "guess" not in text


def test_the_public_status_tells_no_versions(db_url: str, tmp_path: Path) -> None:
    install(db_url, "1.0.0")
    anonymous = Client(guard(db_url, tmp_path)).get("/upgrader/status").json
    assert "versions" not in anonymous and "diagnosis" not in anonymous
    public = Client(guard(db_url, tmp_path, public_versions=True)).get("/upgrader/status").json
    assert public["versions"] == {"code": CURRENT, "schema": "1.0.0"}
    admin = Client(guard(db_url, tmp_path, allow_ips="10.0.0.1")).get(
        "/upgrader/status", environ_base={"REMOTE_ADDR": "10.0.0.1"}
    )
    assert admin.json["versions"]["schema"] == "1.0.0" and "diagnosis" in admin.json
    assert admin.headers["X-Frame-Options"] == "DENY"
    page = Client(guard(db_url, tmp_path)).get("/")
    assert "few minutes" not in page.text and "administrator starts the update" in page.text
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]


def test_administrators_never_get_the_applications_bare_500(db_url: str, tmp_path: Path) -> None:
    """The sample at 1.0.0's schema, served by 2.0.1's code: its pages fail."""
    from upgrader.sample import create_app

    install(db_url, "1.0.0")
    app = create_app(
        {
            "SQLALCHEMY_DATABASE_URI": db_url,
            "UPGRADER_INSTALLER_DIR": str(tmp_path / "none"),
            "UPGRADER_ALLOW_IPS": "10.0.0.5",
        }
    )
    client = app.test_client()
    at = {"REMOTE_ADDR": "10.0.0.5"}
    first = client.get("/books/1", environ_base=at)
    assert ADMIN_PAGE in first.text and "upgrade_pending" in first.text
    client.get("/books/1?upgrader-continue", environ_base=at)
    failing = client.get("/books/1", environ_base=at)
    assert ADMIN_PAGE in failing.text and "The application failed" in failing.text
    assert "500" in failing.text and failing.status_code == 503
    app.extensions["upgrader"].cache.close()
    app.extensions["shelf.engine"].dispose()


# ---------------------------------------------------------------------- backups


def test_backups_are_private_and_credentials_leave_no_trace(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(db_url, CURRENT)
    # a temporary directory of this test's own: other tests' commands sweep the shared one
    monkeypatch.setattr(backup_module.tempfile, "tempdir", str(tmp_path))
    secrets = Path(backup_module.tempfile.gettempdir()) / f"upgrader-{os.getuid()}"
    secrets.mkdir(mode=0o700, exist_ok=True)
    dead = secrets / "999999-left-by-a-killed-run"  # no such process
    dead.mkdir(exist_ok=True)
    (dead / "client.cnf").write_text("password=left over")
    seen = programs_started(monkeypatch)
    backups = tmp_path / "backups"
    doctor = run_cli(*cli_args(db_url), "doctor", env={"UPGRADER_BACKUP_DIR": str(backups)})
    assert f"LEFT BEHIND      {dead}" in doctor.output  # doctor reads, and says so
    assert dead.exists()
    result = run_cli(*cli_args(db_url), "backup", env={"UPGRADER_BACKUP_DIR": str(backups)})
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(backups.stat().st_mode) == 0o700
    for file in backups.iterdir():
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
    assert not dead.exists()  # the next command cleaned what a killed one left
    assert list(secrets.iterdir()) == []  # and left nothing of its own
    dumps = [a for a in seen if "--format=custom" in a or "--single-transaction" in a]
    if not db_url.startswith("sqlite"):
        assert dumps and all(argv[1:3] == ["--pdeathsig", "SIGKILL"] for argv in dumps), dumps


# ---------------------------------------------------------------------- wizard


def test_a_new_key_or_session_key_logs_everybody_out(
    wizard: tuple[Client, Path, str],  # noqa: F811
) -> None:
    client, installer, url = wizard
    install(url, "1.0.0")
    log_in(client, installer)
    assert client.get("/install/eula").status_code == 200
    (installer / KEY_FILE).write_text("a-new-key\n")
    assert client.get("/install/eula").headers["Location"].endswith("/install/key")
    log_in(client, installer)
    assert client.get("/install/eula").status_code == 200
    (installer / ".session-key").unlink()
    assert client.get("/install/eula").headers["Location"].endswith("/install/key")


def test_the_key_throttle_survives_a_restart_and_counts_real_clients(
    db_url: str, tmp_path: Path
) -> None:
    install(db_url, "1.0.0")
    settings, installer = site(db_url, tmp_path, trusted_proxies="127.0.0.1")

    def attempt(client: Client, who: str, key: str) -> int:
        at = {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": who}
        page = client.get("/install/key", environ_base=at)
        return client.post(
            "/install/key", data={"key": key, "csrf_token": csrf(page.text)}, environ_base=at
        ).status_code

    first = Client(UpgraderMiddleware(app, settings))
    for _ in range(5):
        assert attempt(first, "198.51.100.1", "wrong") == 403
    restarted = Client(UpgraderMiddleware(app, settings))  # a new process, the same server
    key = (installer / KEY_FILE).read_text().strip()
    assert attempt(restarted, "198.51.100.1", key) == 429
    assert attempt(restarted, "198.51.100.2", key) == 302  # the admin behind the same proxy


def test_wizard_pages_are_not_framed_secure_over_https_and_hide_server_paths(
    wizard: tuple[Client, Path, str],  # noqa: F811
) -> None:
    client, installer, url = wizard
    install(url, "1.0.0")
    page = client.get("/install/key", base_url="https://localhost")
    assert page.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    assert "Secure" in page.headers["Set-Cookie"]
    # the key's command names the key's directory (so it works pasted anywhere), nothing
    # of the application: no database, no migrations
    assert f"install-key --installer-dir {installer.resolve()}" in page.text
    assert str(MIGRATIONS) not in page.text and url.split("://")[-1] not in page.text


def test_a_missing_database_file_is_not_installed_unasked(tmp_path: Path) -> None:
    missing = tmp_path / "volume" / "app.db"
    settings, installer = site(f"sqlite:///{missing}", tmp_path)
    client = Client(UpgraderMiddleware(app, settings))
    visitor = client.get("/")
    assert visitor.status_code == 503 and "cannot find its database" in visitor.text
    log_in(client, installer)
    token = csrf(client.get("/install/eula").text)
    client.post("/install/eula", data={"accept": "yes", "csrf_token": token})
    checks = client.get("/install/checks")
    assert str(missing) in checks.text and "does not exist" in checks.text
    started = client.post("/install/start", data={"csrf_token": token})
    assert started.headers["Location"].endswith("/install/checks")
    time.sleep(1)
    assert not missing.exists()  # nothing was created without the confirmation


# --------------------------------------------------------------- serve, proxies


def test_upgrader_serve_believes_only_trusted_proxies(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    install(url, "1.0.0")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("UPGRADER_")}
    env.update(
        SHELF_DATABASE_URL=url,
        UPGRADER_APP=SAMPLE,
        UPGRADER_TRUSTED_PROXIES="127.0.0.1",
        UPGRADER_ALLOW_IPS="10.9.9.9",
        UPGRADER_INSTALLER_DIR=str(tmp_path / "none"),
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "upgrader", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        import urllib.error
        import urllib.request

        def get(forwarded: str) -> str:
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/", headers={"X-Forwarded-For": forwarded}
            )
            try:
                with urllib.request.urlopen(request, timeout=20) as answer:
                    return answer.read().decode()
            except urllib.error.HTTPError as error:
                return error.read().decode()

        assert ADMIN_PAGE in get("10.9.9.9")  # the proxy (127.0.0.1) vouches for 10.9.9.9
        assert ADMIN_PAGE not in get("192.0.2.1")
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_the_cookie_signature_needs_the_site_key(tmp_path: Path) -> None:
    key = keys.site_key(None, tmp_path)
    assert stat.S_IMODE((tmp_path / keys.SITE_KEY).stat().st_mode) == 0o600
    assert keys.site_key(None, tmp_path) == key  # kept, not made again
    value, _ = clients.make_cookie(key, "hmac-sha256$00$11", 60)
    assert clients.cookie_valid(key, value, "hmac-sha256$00$11")
    assert not clients.cookie_valid(keys.site_key("x", tmp_path), value, "hmac-sha256$00$11")
    assert not clients.cookie_valid(key, value, "hmac-sha256$00$22")  # a new bypass secret


PASSWORD = "k1ll-m3:n0w"
THIS = Path(__file__).name


def _with_password(url: str) -> str:
    """The same database through a user with a password (PostgreSQL's trust ignores it;
    MariaDB gets a user of its own), so the dump tools need one."""
    from sqlalchemy import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() == "mysql":
        from tests.helpers import execute

        execute(url, "CREATE USER IF NOT EXISTS 'killtest'@'%' IDENTIFIED BY 'k1ll-m3:n0w'")
        execute(url, f"GRANT ALL ON {parsed.database}.* TO 'killtest'@'%'")
        parsed = parsed.set(username="killtest")
    return parsed.set(password=PASSWORD).render_as_string(hide_password=False)


def _files_holding(secret: str, root: Path) -> list[Path]:
    """Files under `root` that hold `secret`, outside checkouts of this project (its
    tests name the secret), wherever they were cloned."""
    found = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = [d for d in subfolders if not Path(folder, d, "tests", THIS).exists()]
        for name in files:
            path = Path(folder, name)
            try:
                if path.is_file() and secret.encode() in path.read_bytes():
                    found.append(path)
            except OSError:
                continue
    return found


@pytest.mark.slow
def test_a_backup_killed_mid_dump_leaves_no_password_anywhere(
    server_db_url: str, tmp_path: Path
) -> None:
    """SIGKILL while the dump tool waits behind a table lock: nothing on disk ever held
    the password, during the dump or after; the next command finds nothing to clean."""
    import tempfile

    install(server_db_url, CURRENT)
    url = _with_password(server_db_url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("UPGRADER_")}
    env.update(
        UPGRADER_DATABASE_URL=url,
        UPGRADER_MIGRATIONS=str(MIGRATIONS),
        UPGRADER_CODE_VERSION=CURRENT,
        UPGRADER_BACKUP_DIR=str(tmp_path / "backups"),
        UPGRADER_INSTALLER_DIR=str(tmp_path / "none"),
    )
    with books_locked(server_db_url):
        process = subprocess.Popen(
            [sys.executable, "-m", "upgrader", "backup"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while not dump_running(process.pid):
            assert time.monotonic() < deadline, "the dump tool never started"
            time.sleep(0.05)
        time.sleep(0.5)
        temporary = Path(tempfile.gettempdir())
        assert _files_holding(PASSWORD, temporary) == []  # not even while it runs
        process.kill()
        process.wait(timeout=10)
    assert _files_holding(PASSWORD, temporary) == []
    assert _files_holding(PASSWORD, tmp_path) == []
    doctor = subprocess.run(
        [sys.executable, "-m", "upgrader", "doctor"], env=env, capture_output=True, text=True
    )
    assert "LEFT BEHIND" not in doctor.stdout and PASSWORD not in doctor.stdout
