"""What the ASGI guard costs, measured side by side in one run, in process (no server, no
socket: what is measured is the middleware, not uvicorn).

1. Steady state, hello world: bare Starlette against Starlette with
   `Middleware(UpgraderMiddleware, settings=...)`, and bare FastAPI against FastAPI with the
   guard and with the peer, fastapi-maintenance's `MaintenanceModeMiddleware` (a
   `BaseHTTPMiddleware`, maintenance off). Interleaved rounds (bare, variant, bare,
   variant…), the throughput ratio of each pair, then their median and spread. The TTL is the
   default (2 s): the refreshes a process makes (in a worker thread) are in the figures.
   Goal: >= 0.98.
2. Own cost: a raw ASGI hello world (two `send` calls, nothing else) bare against wrapped;
   per pair, the difference in µs per request. Goal: <= 1 µs. Beside it the floor: a
   middleware that only awaits the application.
3. Blocked request: "Down for Maintenance (Err2)" answered from the cached diagnosis, in CPU
   time per request. Goal: <= 10 µs.
4. Database queries per request in steady state (SQLAlchemy's events): 0.
5. Served: the Starlette hello world under uvicorn (one worker, httptools), bare and guarded,
   each in a server of its own, loaded in turn by ApacheBench (`ab -k -c 8`, from Debian's
   apache2-utils; skipped when ab is missing): requests per second, ratio per pair, and the
   server's CPU per request (/proc), difference per pair.

Each variant has a SQLite database of its own, installed at the code's release (or the
oldest, for the blocked request).

    .venv/bin/python benchmarks/asgi_overhead.py [--rounds 15] [--requests 20000] [--served 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fastapi import FastAPI  # noqa: E402
from fastapi.responses import PlainTextResponse as FastText  # noqa: E402
from fastapi_maintenance import MaintenanceModeMiddleware  # noqa: E402
from sqlalchemy import event  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.middleware import Middleware  # noqa: E402
from starlette.responses import PlainTextResponse  # noqa: E402
from starlette.routing import Route  # noqa: E402

from benchmarks import pairs  # noqa: E402
from benchmarks.pairs import spread  # noqa: E402
from tests.helpers import MIGRATIONS, install  # noqa: E402
from upgrader.asgi import UpgraderMiddleware  # noqa: E402
from upgrader.sample.releases import CURRENT, RELEASES  # noqa: E402
from upgrader.settings import Settings, resolve  # noqa: E402

App = Callable[..., Awaitable[None]]
LOOP = asyncio.new_event_loop()  # one loop for every side: the guard keeps its refresher's


def settings_for(url: str, **extra: Any) -> Settings:
    values = {
        "database_url": url,
        "migrations": str(MIGRATIONS),
        "code_version": CURRENT,
        "installer_dir": "/nonexistent",
        "releases": RELEASES,
        **extra,
    }
    return resolve(values, environ={})


def database(tmp: Path, release: str = CURRENT) -> str:
    url = f"sqlite:///{tmp / f'{release}-{time.monotonic_ns()}.db'}"
    install(url, release)
    return url


async def hello_route(request: Any) -> PlainTextResponse:
    return PlainTextResponse("Hello, World!")


def starlette(middleware: list[Middleware] | None = None) -> Starlette:
    return Starlette(routes=[Route("/", hello_route)], middleware=middleware)


def fastapi(middleware: list[Middleware] | None = None) -> FastAPI:
    app = FastAPI(middleware=middleware, openapi_url=None, docs_url=None, redoc_url=None)
    app.get("/", response_class=FastText)(hello_endpoint)
    return app


async def hello_endpoint() -> str:
    return "Hello, World!"


async def raw_hello(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"Hello, World!"})


class PassThrough:
    """The floor: a pure ASGI middleware that only awaits the application."""

    def __init__(self, app: App) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


SCOPE: dict[str, Any] = {
    "type": "http",
    "asgi": {"version": "3.0"},
    "http_version": "1.1",
    "method": "GET",
    "scheme": "http",
    "path": "/",
    "raw_path": b"/",
    "root_path": "",
    "query_string": b"",
    "headers": [(b"host", b"localhost"), (b"accept", b"text/html")],
    "client": ("127.0.0.1", 50000),
    "server": ("localhost", 80),
}


async def _requests(app: App, n: int) -> tuple[float, float]:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        pass

    cpu, started = time.process_time(), time.perf_counter()
    for _ in range(n):
        await app(dict(SCOPE), receive, send)
    return time.perf_counter() - started, time.process_time() - cpu


def timed(app: App, n: int) -> tuple[float, float]:
    """Wall and CPU seconds for n requests, the garbage collector kept out of the window."""
    gc.collect()
    gc.disable()
    try:
        return LOOP.run_until_complete(_requests(app, n))
    finally:
        gc.enable()


def loop(app: App, n: int) -> float:
    return timed(app, n)[0]


def interleaved(bare: App, variant: App, n: int, rounds: int) -> list[tuple[float, float]]:
    loop(bare, 200)
    loop(variant, 200)  # warm: the first request primes the diagnosis
    LOOP.run_until_complete(asyncio.sleep(1.2))  # the first refresh has ended
    return pairs.interleaved(lambda: loop(bare, n), lambda: loop(variant, n), rounds)


def ratio(bare: App, variant: App, n: int, rounds: int) -> str:
    times = interleaved(bare, variant, n, rounds)
    per = statistics.median(a for a, _ in times) / n * 1e6
    own = statistics.median(b for _, b in times) / n * 1e6
    return f"ratio {spread([a / b for a, b in times])}  [{per:.1f} -> {own:.1f} µs]"


def own_cost(bare: App, variant: App, n: int, rounds: int) -> str:
    times = interleaved(bare, variant, n, rounds)
    return spread([(b - a) / n * 1e6 for a, b in times], "{:.2f}")


def blocked_cpu(app: App, n: int) -> str:
    loop(app, 10)
    samples = [timed(app, n)[1] / n for _ in range(7)]
    return f"{statistics.median(samples) * 1e6:.1f} µs CPU per blocked request (median of 7)"


def queries_per_request(url: str, n: int) -> str:
    guard = UpgraderMiddleware(raw_hello, settings_for(url, cache_ttl=3600))
    loop(guard, 10)
    LOOP.run_until_complete(asyncio.sleep(1.2))
    queries = 0

    def count(*_: Any) -> None:
        nonlocal queries
        queries += 1

    event.listen(guard.cache.engine, "before_cursor_execute", count)
    loop(guard, n)
    return f"{queries / n:g} ({queries} in {n})"


def served_app(kind: str, url: str) -> Starlette:
    return starlette(guard(url) if kind == "guard" else None)


def guard(url: str) -> list[Middleware]:
    return [Middleware(UpgraderMiddleware, settings=settings_for(url))]


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int


def serve(kind: str, url: str) -> Server:
    """A uvicorn server of the hello world on a port of its own, started and answering."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = (
        f"import sys; sys.path.insert(0, {str(ROOT)!r}); import uvicorn; "
        f"from benchmarks.asgi_overhead import served_app; "
        f"uvicorn.run(served_app({kind!r}, {url!r}), host='127.0.0.1', port={port}, "
        "log_level='warning', access_log=False, http='httptools', loop='asyncio')"
    )
    server = subprocess.Popen([sys.executable, "-c", code])
    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).read()
            return Server(server, port)
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise RuntimeError(f"the {kind} server did not answer")


def ab(server: Server, n: int) -> tuple[float, float]:
    """Requests per second, and the server's CPU µs per request (Linux's /proc)."""
    before = _cpu(server.process.pid)
    out = subprocess.run(
        ["ab", "-q", "-k", "-c", "8", "-n", str(n), f"http://127.0.0.1:{server.port}/"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (rate,) = re.findall(r"Requests per second:\s+([\d.]+)", out)
    return float(rate), (_cpu(server.process.pid) - before) / n * 1e6


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def served(url: str, n: int, rounds: int) -> str:
    bare, guarded = serve("bare", url), serve("guard", url)
    try:
        for server in (bare, guarded):
            ab(server, n)  # warm
        rates = pairs.interleaved(lambda: ab(bare, n), lambda: ab(guarded, n), rounds)
    finally:
        for server in (bare, guarded):
            server.process.terminate()
            server.process.wait()
    ratio = spread([b[0] / a[0] for a, b in rates])
    cpu = spread([b[1] - a[1] for a, b in rates], "{:.1f}")
    bare_cpu = statistics.median(a[1] for a, _ in rates)
    return f"throughput ratio {ratio}\n   server CPU +{cpu} µs per request (bare {bare_cpu:.0f} µs)"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--served", type=int, default=5_000)
    args = parser.parse_args()
    n, rounds = args.requests, args.rounds
    with tempfile.TemporaryDirectory(prefix="upgrader-asgi-") as tmp_name:
        tmp = Path(tmp_name)

        print(f"1. Steady state, hello world: {rounds} interleaved pairs of {n} requests, TTL 2 s")
        guarded = starlette(guard(database(tmp)))
        print(f"   Starlette + guard        {ratio(starlette(), guarded, n, rounds)}  goal >= 0.98")
        guarded = fastapi(guard(database(tmp)))
        print(f"   FastAPI + guard          {ratio(fastapi(), guarded, n, rounds)}  goal >= 0.98")
        peer = fastapi([Middleware(MaintenanceModeMiddleware)])
        print(f"   FastAPI + peer           {ratio(fastapi(), peer, n, rounds)}")
        print("2. Own cost: raw ASGI hello world, bare -> wrapped (per pair, µs per request)")
        wrapped = UpgraderMiddleware(raw_hello, settings_for(database(tmp)))
        print(f"   guard          {own_cost(raw_hello, wrapped, n, rounds)}  goal <= 1 µs")
        print(f"   pass-through   {own_cost(raw_hello, PassThrough(raw_hello), n, rounds)}")
        print("3. Blocked request (Err2, page from memory)   goal <= 10 µs")
        old = database(tmp, "1.0.0")
        blocked = UpgraderMiddleware(raw_hello, settings_for(old, cache_ttl=3600))
        print(f"   {blocked_cpu(blocked, n)}")
        print(f"4. Queries per request in steady state: {queries_per_request(database(tmp), n)}")
        if shutil.which("ab"):
            print(f"5. Served by uvicorn: {rounds} interleaved pairs of {args.served} requests")
            print(f"   Starlette + guard        {served(database(tmp), args.served, rounds)}")


if __name__ == "__main__":
    main()
