"""A database that cannot be reached: Err1 quickly, with no password anywhere in the output."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, make_url, text

from tests.conftest import SERVER_URLS
from tests.helpers import cli_args, install, run_cli
from upgrader.sample.releases import CURRENT

SECRET = "s3cr3t:p@ss/w%rd"  # characters that URL-encode differently


def url_with_password(backend: str, port: int, password: str = SECRET) -> str:
    base = make_url(SERVER_URLS[backend] or "")
    return base.set(host="127.0.0.1", port=port, password=password).render_as_string(
        hide_password=False
    )


def assert_no_secret(output: str, secret: str = SECRET) -> None:
    from urllib.parse import quote, quote_plus

    for form in (secret, quote(secret, safe=""), quote_plus(secret)):
        assert form not in output


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts TCP connections and then says nothing, like a hung server."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    listener.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_refused_connection_is_err1_without_password(server_backend: str, tmp_path: Path) -> None:
    url = url_with_password(server_backend, closed_port())
    result = run_cli(*cli_args(url, tmp_path), "status", "--json")
    status = json.loads(result.output)
    assert (status["state"], status["code"], result.exit_code) == (
        "database_unavailable",
        "Err1",
        1,
    )
    assert any("connecting failed" in d and "127.0.0.1" in d for d in status["details"])
    assert_no_secret(result.output)
    doctor = run_cli(*cli_args(url, tmp_path), "doctor")
    assert doctor.exit_code == 1
    assert "***" in doctor.output
    assert_no_secret(doctor.output)


def test_hung_server_gives_up_after_the_connect_timeout(
    server_backend: str, silent_port: int, tmp_path: Path
) -> None:
    url = url_with_password(server_backend, silent_port)
    started = time.monotonic()
    result = run_cli(
        *cli_args(url, tmp_path), "status", "--json", env={"UPGRADER_CONNECT_TIMEOUT": "1"}
    )
    elapsed = time.monotonic() - started
    assert json.loads(result.output)["state"] == "database_unavailable"
    assert elapsed < 15, f"status hung for {elapsed:.1f}s"
    assert_no_secret(result.output)


def test_sqlite_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    path.write_bytes(b"this is not a database file, it was overwritten by accident" * 100)
    result = run_cli(*cli_args(f"sqlite:///{path}", tmp_path), "status", "--json")
    status = json.loads(result.output)
    assert (status["state"], result.exit_code) == ("database_unavailable", 1)
    assert any("not a database" in d for d in status["details"])


@pytest.fixture
def password_url(server_backend: str, server_db_url: str) -> Iterator[str]:
    """A working URL to the test database that carries a real password."""
    if server_backend == "postgresql":  # trust auth accepts the password without checking it
        yield make_url(server_db_url).set(password=SECRET).render_as_string(hide_password=False)
        return
    user = f"u{uuid.uuid4().hex[:8]}"
    admin = create_engine(SERVER_URLS["mysql"] or "", isolation_level="AUTOCOMMIT")
    database = make_url(server_db_url).database
    with admin.connect() as conn:
        conn.execute(text(f"CREATE USER '{user}'@'%' IDENTIFIED BY :pw"), {"pw": SECRET})
        conn.execute(text(f"GRANT ALL ON {database}.* TO '{user}'@'%'"))
    try:
        yield (
            make_url(server_db_url)
            .set(username=user, password=SECRET)
            .render_as_string(hide_password=False)
        )
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP USER '{user}'@'%'"))
        admin.dispose()


def test_doctor_reports_everything_but_the_password(password_url: str, tmp_path: Path) -> None:
    install(password_url, "1.0.0")
    args = cli_args(password_url, tmp_path)
    report = run_cli(*args, "doctor", "--json")
    data = json.loads(report.output)
    assert report.exit_code == 2
    assert data["status"]["state"] == "upgrade_pending"
    assert data["database"]["server_version"]
    assert data["database"]["driver_version"]
    assert [p["revision"] for p in data["pending_revisions"]] == [
        "0002_loans_isbn",
        "0003_sort_names",
    ]
    assert data["configuration"]["database_url"]["source"] == "--database-url"
    assert "***" in data["configuration"]["database_url"]["value"]
    assert data["environment"]["alembic"]
    assert_no_secret(report.output)
    text_report = run_cli(*args, "doctor")
    assert "== Pending revisions (2)" in text_report.output
    assert_no_secret(text_report.output)
    status = run_cli(*args, "status", "--json")
    assert_no_secret(status.output)


def test_doctor_on_a_healthy_installation_lists_the_journal(db_url: str, tmp_path: Path) -> None:
    install(db_url, "2.0.0")
    args = cli_args(db_url, tmp_path)
    assert run_cli(*args, "status").exit_code == 0  # records 2.0.1 (no migrations)
    report = json.loads(run_cli(*args, "doctor", "--json").output)
    assert report["status"]["state"] == "ok"
    assert report["runs"][0]["kind"] == "version"
    assert report["runs"][0]["to_version"] == CURRENT
    assert report["code"]["heads"] == ["0003_sort_names"]
