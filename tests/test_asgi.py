"""The ASGI guard on its own terms: WebSockets, the lifespan, the banner, an application
that fails while its database goes, the event loop while the database hangs, the wrong
kind of application, and Starlette and Litestar applications.

What every state answers is held by tests/test_guard.py, which asks the ASGI guard the
same questions as the WSGI one on the same database (tests/test_fastapi_app.py serves a
FastAPI application with uvicorn).
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import re
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from flask import Flask
from litestar import Litestar, get, websocket_listener
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.pool import NullPool
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from tests.asgi import call, scope_of, websocket
from tests.asgi import get as asgi_get
from tests.helpers import cli_args, install, run_cli
from tests.proxy import proxied
from tests.test_guard import guard_settings
from upgrader.asgi import UpgraderMiddleware
from upgrader.sample.releases import CURRENT
from upgrader.web.middleware import UpgraderMiddleware as WsgiGuard

PAGE = b"<!doctype html><html><body><h1>The application</h1></body></html>"


class Plain:
    """A plain ASGI application: an HTML page, a JSON one, a gzipped one, a WebSocket that
    answers "pong", and the lifespan; it notes what reached it."""

    def __init__(self) -> None:
        self.sockets = 0
        self.lifespan: list[str] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                self.lifespan.append(message["type"])
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        if scope["type"] == "websocket":
            self.sockets += 1
            await receive()
            await send({"type": "websocket.accept"})
            message = await receive()
            await send({"type": "websocket.send", "text": message.get("text", "") + " pong"})
            await send({"type": "websocket.close", "code": 1000})
            return
        kind, body = {
            "/api": (b"application/json", b'{"ok": true}'),
            "/zipped": (b"text/html", gzip.compress(PAGE)),
        }.get(scope["path"], (b"text/html; charset=utf-8", PAGE))
        headers = [(b"content-type", kind), (b"content-length", str(len(body)).encode())]
        if scope["path"] == "/zipped":
            headers.append((b"content-encoding", b"gzip"))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def upgrade(db_url: str, guard: UpgraderMiddleware) -> None:
    result = run_cli(*cli_args(db_url), "upgrade", "--yes", "--no-backup")
    assert result.exit_code == 0, result.output
    guard.cache.invalidate()


def test_websockets_wait_while_the_site_is_blocked(db_url: str, tmp_path: Path) -> None:
    install(db_url, "1.0.0")  # the code is the current release: Err2
    app = Plain()
    guard = UpgraderMiddleware(app, guard_settings(db_url, tmp_path))
    denied = websocket(guard)  # a server that offers the HTTP denial (uvicorn does)
    assert [m["type"] for m in denied] == [
        "websocket.http.response.start",
        "websocket.http.response.body",
    ]
    headers = dict(denied[0]["headers"])
    assert denied[0]["status"] == 503 and headers[b"x-upgrader-state"] == b"upgrade_pending"
    assert b"Down for Maintenance (Err2)" in denied[1]["body"]
    closed = websocket(guard, denial=False)  # one that does not: accepted, closed with 1013
    assert [m["type"] for m in closed] == ["websocket.accept", "websocket.close"]
    assert closed[1]["code"] == 1013 and "upgrade_pending" in closed[1]["reason"]
    assert app.sockets == 0  # the application never saw a socket
    upgrade(db_url, guard)
    served = websocket(guard)
    assert [m.get("text") for m in served if m["type"] == "websocket.send"] == ["ping pong"]
    assert app.sockets == 1
    guard.cache.close()


def test_the_lifespan_passes_through_and_primes_the_diagnosis(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    install(url, CURRENT)
    app = Plain()
    guard = UpgraderMiddleware(app, guard_settings(url, tmp_path))

    async def lifespan() -> list[str]:
        inbox = [{"type": "lifespan.startup"}]
        sent: list[str] = []
        primed = asyncio.Event()

        async def receive() -> dict[str, Any]:
            if inbox:
                return inbox.pop(0)
            for _ in range(200):  # the first diagnosis, made in a thread meanwhile
                if guard.cache.answered:
                    break
                await asyncio.sleep(0.025)
            primed.set()
            return {"type": "lifespan.shutdown"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message["type"])

        await guard({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
        assert primed.is_set()
        return sent

    sent = asyncio.run(lifespan())
    assert app.lifespan == ["lifespan.startup", "lifespan.shutdown"]
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert guard.cache.answered and guard.cache.current() is not None
    assert guard.cache.current().state.value == "ok"  # type: ignore[union-attr]
    guard.cache.close()


def test_the_banner_goes_into_html_pages_only(db_url: str, tmp_path: Path) -> None:
    install(db_url, CURRENT)
    guard = UpgraderMiddleware(Plain(), guard_settings(db_url, tmp_path))
    banner = ("--level", "banner", "--message", "Read-only tonight")
    result = run_cli(*cli_args(db_url), "maintenance", "on", *banner)
    assert result.exit_code == 0, result.output
    page = asgi_get(guard, "/")
    assert page.status == 200 and b'<body><div role="status" class="upgrader-banner"' in page.body
    assert "Read-only tonight" in page.text
    assert int(page.headers["content-length"]) == len(page.body)
    api = asgi_get(guard, "/api", {"Accept": "application/json"})
    assert api.body == b'{"ok": true}'
    zipped = asgi_get(guard, "/zipped")
    assert gzip.decompress(zipped.body) == PAGE  # a compressed page is left as it is
    guard.cache.close()


class NeedsItsDatabase:
    """An application that queries its database on every request: 500 without it (as a
    framework answers an unhandled error); /raise raises."""

    def __init__(self, url: str) -> None:
        self.engine = create_engine(url, connect_args={"connect_timeout": 2}, poolclass=NullPool)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["path"] == "/raise":
            raise RuntimeError("a bug of the application's own")
        try:
            await asyncio.to_thread(self.query)
            status, body = 200, b"fine"
        except Exception:
            status, body = 500, b"Internal Server Error"
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": body})

    def query(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))


def test_an_application_failing_while_the_database_is_gone_gets_err1(
    server_db_url: str, tmp_path: Path
) -> None:
    install(server_db_url, CURRENT)
    real = make_url(server_db_url)
    with proxied(real.port or 0) as proxy:
        url = real.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        settings = guard_settings(url, tmp_path, connect_timeout=2, cache_ttl=60)
        guard = UpgraderMiddleware(NeedsItsDatabase(url), settings)
        assert asgi_get(guard, "/").status == 200
        proxy.refuse()
        down = asgi_get(guard, "/")
        assert (down.status, down.headers["x-upgrader-state"]) == (503, "database_unavailable")
        raised = asgi_get(guard, "/raise")
        assert (raised.status, raised.headers["x-upgrader-state"]) == (503, "database_unavailable")
        proxy.restore()
        guard.cache.invalidate()
        assert asgi_get(guard, "/").status == 200
        with pytest.raises(RuntimeError, match="own"):  # its own failure is its own
            asgi_get(guard, "/raise")
        guard.cache.close()


def test_the_event_loop_never_waits_for_a_hung_database(
    server_db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A blackholed database (connections accepted, nothing answered): the loop keeps
    turning (no sleeper wakes anywhere near as late as a database wait would make it; no
    step of the loop comes near one, asyncio's debug mode says), and visitors get Err1
    within the connect timeout."""
    install(server_db_url, CURRENT)
    real = make_url(server_db_url)
    timeout, ttl = 2.0, 0.5
    with proxied(real.port or 0) as proxy:
        url = real.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        guard = UpgraderMiddleware(
            Plain(), guard_settings(url, tmp_path, connect_timeout=timeout, cache_ttl=ttl)
        )
        assert asgi_get(guard, "/").status == 200

        async def visitors() -> tuple[list[tuple[float, int, str]], float, float]:
            loop = asyncio.get_running_loop()
            loop.set_debug(True)
            loop.slow_callback_duration = 0.02
            seen: list[tuple[float, int, str]] = []
            lags = [0.0]
            cut = time.monotonic()
            proxy.blackhole()
            end = cut + timeout + 3

            async def ticker() -> None:  # how late the loop wakes a sleeper
                while time.monotonic() < end:
                    asked = loop.time()
                    await asyncio.sleep(0.005)
                    lags.append(loop.time() - asked - 0.005)

            async def visitor() -> None:
                while time.monotonic() < end:
                    answer = await call(guard, scope_of("GET", "/", {"Accept": "text/html"}))
                    state = answer.headers.get("x-upgrader-state", "")
                    seen.append((time.monotonic(), answer.status, state))
                    await asyncio.sleep(0.01)

            await asyncio.gather(ticker(), visitor(), visitor())
            return seen, cut, max(lags)

        with caplog.at_level(logging.WARNING, logger="asyncio"):
            seen, cut, worst = asyncio.run(visitors())
        proxy.restore()
        guard.cache.close()
    slow = [
        r.getMessage() for r in caplog.records if r.name == "asyncio" and "took" in r.getMessage()
    ]
    # Steps over 20 ms are logged; on a loaded 2-core machine (CI runs 4 workers) a step was
    # seen at 27 ms from the scheduler alone. A step that waited for the database would take
    # the connect timeout (2 s): none may come near it.
    steps = [float(x) for m in slow for x in re.findall(r"took (\d+\.\d+) seconds", m)]
    assert max(steps, default=0.0) < 0.1, (steps, slow)
    unavailable = [t for t, status, state in seen if state == "database_unavailable"]
    assert unavailable, seen
    assert unavailable[0] - cut <= ttl + timeout + 1.0, unavailable[0] - cut
    assert all(status in (200, 503) for _, status, _ in seen)
    assert len(seen) > 50  # requests kept being answered all along
    # A loop that waited for the database would wake a sleeper a connect timeout (2 s) late;
    # the machine's own pauses (20-30 ms under CI's load) are far from that.
    assert worst < timeout / 4, worst


def test_the_wrong_kind_of_application_fails_at_construction(tmp_path: Path) -> None:
    settings = guard_settings(f"sqlite:///{tmp_path / 'app.db'}", tmp_path)
    with pytest.raises(TypeError, match=r"is an ASGI application.*upgrader\.asgi\.Upgrader"):
        WsgiGuard(FastAPI(), settings)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"is a WSGI application.*upgrader\.web\.middleware"):
        UpgraderMiddleware(Flask("shop"), settings)  # type: ignore[arg-type]

    def wsgi(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        return []

    with pytest.raises(TypeError, match="is a WSGI application"):
        UpgraderMiddleware(wsgi, settings)  # type: ignore[arg-type]
    UpgraderMiddleware(Plain(), settings).cache.close()  # the right kinds are taken
    WsgiGuard(Flask("shop").wsgi_app, settings).cache.close()


# ------------------------------------------------------------ Starlette and Litestar


async def starlette_home(request: Any) -> PlainTextResponse:
    return PlainTextResponse("starlette home")


async def starlette_socket(socket: WebSocket) -> None:
    await socket.accept()
    said = await socket.receive_text()
    await socket.send_text(f"{said} pong")
    await socket.close()


@get("/")
async def litestar_home() -> str:
    return "litestar home"


@websocket_listener("/ws")
async def litestar_socket(data: str) -> str:
    return f"{data} pong"


def starlette(settings: Any) -> Any:
    routes = [Route("/", starlette_home), WebSocketRoute("/ws", starlette_socket)]
    return Starlette(routes=routes, middleware=[Middleware(UpgraderMiddleware, settings=settings)])


def litestar(settings: Any) -> Any:
    return UpgraderMiddleware(Litestar(route_handlers=[litestar_home, litestar_socket]), settings)


@pytest.mark.parametrize("framework", ["starlette", "litestar"])
def test_starlette_and_litestar_applications(framework: str, db_url: str, tmp_path: Path) -> None:
    install(db_url, "1.0.0")
    app = (starlette if framework == "starlette" else litestar)(guard_settings(db_url, tmp_path))
    page = asgi_get(app, "/", {"Accept": "text/html"})
    assert page.status == 503 and "<h1>Down for Maintenance (Err2)</h1>" in page.text
    assert page.headers["cache-control"] == "no-store" and int(page.headers["retry-after"]) > 0
    problem = asgi_get(app, "/", {"Accept": "application/json"})
    assert (problem.status, problem.headers["content-type"]) == (503, "application/problem+json")
    denied = websocket(app)
    assert denied[0]["type"] == "websocket.http.response.start" and denied[0]["status"] == 503
    result = run_cli(*cli_args(db_url), "upgrade", "--yes", "--no-backup")
    assert result.exit_code == 0, result.output
    guard = _guard_in(app)
    guard.cache.invalidate()
    home = asgi_get(app, "/")
    assert (home.status, home.text) == (200, f"{framework} home")
    served = websocket(app)
    assert [m.get("text") for m in served if m["type"] == "websocket.send"] == ["ping pong"]
    guard.cache.close()


def _guard_in(app: Any) -> UpgraderMiddleware:
    """The guard: the wrapper itself, or the one Starlette built into its stack."""
    found = app
    while not isinstance(found, UpgraderMiddleware):
        found = found.middleware_stack if hasattr(found, "middleware_stack") else found.app
    return found


def test_a_cold_process_answers_within_a_second_while_the_database_hangs(
    server_db_url: str, tmp_path: Path
) -> None:
    """No diagnosis yet, a database that never answers: a provisional Err1 after a second
    at most, for every request at once, and the loop free meanwhile."""
    real = make_url(server_db_url)
    with proxied(real.port or 0) as proxy:
        proxy.blackhole()
        url = real.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        guard = UpgraderMiddleware(Plain(), guard_settings(url, tmp_path, connect_timeout=5))

        async def many() -> tuple[list[Any], float]:
            started = time.monotonic()
            scope = scope_of("GET", "/", {"Accept": "application/json"})
            answers = await asyncio.gather(*(call(guard, dict(scope)) for _ in range(20)))
            return answers, time.monotonic() - started

        answers, took = asyncio.run(many())
        proxy.restore()
    assert took < 2.5, took
    assert {(a.status, a.headers["x-upgrader-state"]) for a in answers} == {
        (503, "database_unavailable")
    }
    guard.cache.close()
