"""The database goes away under load: no visitor ever gets a 500 from the application.

The sample is served by `upgrader serve` (waitress) and reaches its database through a TCP
proxy (tests/proxy.py), which the test cuts and restores while a loop of visitors asks for
the sample's own pages. Between the outage and the guard's next refresh, the application
fails its requests; the guard answers them with Err1 instead. An application's own failure
while the database is fine passes unchanged.
"""

from __future__ import annotations

import http.client
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, make_url, text
from werkzeug.test import Client

from tests.helpers import MIGRATIONS, SAMPLE, install, serving
from tests.proxy import proxied
from upgrader.sample.releases import CURRENT
from upgrader.settings import resolve
from upgrader.web.middleware import UpgraderMiddleware

PAGES = ("/", "/authors", "/books/1", "/loans")


def visitors(port: int, stop: threading.Event, seen: list[tuple[float, int, str]]) -> None:
    """One visitor asking for the sample's pages in turn until `stop`."""
    n = 0
    while not stop.is_set():
        path = PAGES[n % len(PAGES)]
        n += 1
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        try:
            conn.request("GET", path)
            answer = conn.getresponse()
            answer.read()
            seen.append((time.monotonic(), answer.status, answer.getheader("X-Upgrader-State", "")))
        except OSError as exc:
            seen.append((time.monotonic(), 0, type(exc).__name__))
        finally:
            conn.close()


def test_an_outage_under_load_gives_visitors_err1_never_a_500(
    server_db_url: str, tmp_path: Path
) -> None:
    install(server_db_url, CURRENT)
    real = make_url(server_db_url)
    with proxied(real.port or 0) as proxy:
        url = real.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        env = {k: v for k, v in os.environ.items() if not k.startswith("UPGRADER_")}
        env.update(
            UPGRADER_APP=SAMPLE,
            UPGRADER_DATABASE_URL=url,
            SHELF_DATABASE_URL=url,
            UPGRADER_MIGRATIONS=str(MIGRATIONS),
            UPGRADER_INSTALLER_DIR=str(tmp_path / "no-installer"),
            UPGRADER_BACKUP_DIR=str(tmp_path / "backups"),
            UPGRADER_CONNECT_TIMEOUT="2",
        )
        with serving(1, env) as nodes:
            port = nodes[0][0]
            seen: list[tuple[float, int, str]] = []
            stop = threading.Event()
            loop = [threading.Thread(target=visitors, args=(port, stop, seen)) for _ in range(4)]
            for thread in loop:
                thread.start()
            try:
                time.sleep(1.5)
                cut = time.monotonic()
                proxy.refuse()
                time.sleep(3.5)
                back = time.monotonic()
                proxy.restore()
                time.sleep(4)
            finally:
                stop.set()
                for thread in loop:
                    thread.join()
    before = Counter(status for t, status, _ in seen if t < cut)
    during = Counter((status, state) for t, status, state in seen if cut <= t < back)
    after = [status for t, status, _ in seen if t > back + 3]
    assert before and set(before) == {200}, before
    assert (503, "database_unavailable") in during, during
    assert set(during) <= {(200, ""), (503, "database_unavailable")}, during
    assert not [s for _, s, _ in seen if s >= 500 and s != 503], Counter(s for _, s, _ in seen)
    assert after and set(after) == {200}, Counter(after)


def failing(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """An application with a page that fails on its own, and one that raises."""
    if environ["PATH_INFO"] == "/raise":
        raise RuntimeError("a bug of the application's own")
    if environ["PATH_INFO"] == "/broken":
        start_response("500 Internal Server Error", [("Content-Type", "text/plain")])
        return [b"the application's own error page"]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"fine"]


def guard_settings(url: str, tmp_path: Path) -> Any:
    """The sample's release, guarded, with no installer."""
    return resolve(
        {
            "database_url": url,
            "migrations": str(MIGRATIONS),
            "code_version": CURRENT,
            "installer_dir": str(tmp_path / "no-installer"),
        },
        environ={},
    )


def test_the_applications_own_failures_pass_when_the_database_is_fine(
    db_url: str, tmp_path: Path
) -> None:
    install(db_url, CURRENT)
    client = Client(UpgraderMiddleware(failing, guard_settings(db_url, tmp_path)))
    assert client.get("/").status_code == 200
    broken = client.get("/broken")
    assert (broken.status_code, broken.get_data()) == (500, b"the application's own error page")
    assert "X-Upgrader-State" not in broken.headers
    try:
        client.get("/raise")
    except RuntimeError as exc:
        assert "own" in str(exc)
    else:
        raise AssertionError("the application's exception was swallowed")


def test_a_restarted_server_costs_the_guard_no_refresh(server_db_url: str, tmp_path: Path) -> None:
    """The guard's pool does not ping before each read (a round trip of every refresh):
    when the server has closed its connections (a restart), the read is made again on a
    new one, and visitors never see Err1 for it."""
    install(server_db_url, CURRENT)
    client = Client(UpgraderMiddleware(failing, guard_settings(server_db_url, tmp_path)))
    assert client.get("/").status_code == 200
    ended = end_other_sessions(server_db_url)
    assert ended >= 1  # the guard's pooled connection
    time.sleep(0.2)
    for _ in range(3):
        client.application.cache.invalidate()  # type: ignore[attr-defined]
        answer = client.get("/")
        assert answer.status_code == 200, answer.get_data()
        assert client.application.cache.get().state.value == "ok"  # type: ignore[attr-defined]


def end_other_sessions(url: str) -> int:
    """Close every other session on this database, as a server restart would."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            if url.startswith("postgresql"):
                ended = conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                ).all()
                return len(ended)
            ids = conn.execute(
                text(
                    "SELECT ID FROM information_schema.PROCESSLIST "
                    "WHERE DB = DATABASE() AND ID <> CONNECTION_ID()"
                )
            ).scalars()
            count = 0
            for session in list(ids):
                conn.execute(text(f"KILL CONNECTION {int(session)}"))
                count += 1
            return count
    finally:
        engine.dispose()
