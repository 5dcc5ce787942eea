"""What the request guard costs a trivial application, measured side by side in one run.

The trivial application is Flask's hello world (as in the research notes, §5.3).

1. A WSGI-level loop: the application called directly and through UpgraderMiddleware,
   in steady state (state ok, diagnosis cached), interleaved rounds. Also shown: the
   guard's absolute cost per request, against a bare WSGI callable that does nothing.
2. A real server under a load generator: waitress serving each variant on its own port,
   `wrk` (Debian package) driving both, interleaved rounds.
3. Database queries per request in steady state, counted with SQLAlchemy's events.

Targets: throughput ratio guarded / unguarded >= 0.97, and zero queries per request.

    .venv/bin/python benchmarks/guard_overhead.py [--requests 50000] [--rounds 7] [--seconds 5]
"""

from __future__ import annotations

import argparse
import multiprocessing
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import event  # noqa: E402

from tests.helpers import free_port, install, wait_for_port  # noqa: E402
from upgrader.sample.releases import CURRENT  # noqa: E402
from upgrader.settings import resolve  # noqa: E402
from upgrader.web.middleware import UpgraderMiddleware  # noqa: E402

BODY = [b"Hello, World!"]


def flask_hello() -> Any:
    from flask import Flask

    app = Flask("hello")
    app.get("/")(lambda: "Hello, World!")
    return app


def bare(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """A WSGI callable that does nothing: only for the guard's absolute cost."""
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return BODY


def guarded(app: Any, database: str, ttl: float = 2.0) -> UpgraderMiddleware:
    settings = resolve(
        {"database_url": database, "installer_dir": "/nonexistent", "cache_ttl": ttl}, environ={}
    )
    return UpgraderMiddleware(app, settings)


def environ() -> dict[str, Any]:
    return {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/",
        "REMOTE_ADDR": "127.0.0.1",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "wsgi.url_scheme": "http",
    }


def loop(app: Callable[..., Iterable[bytes]], n: int) -> float:
    env = environ()

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        pass

    started = time.perf_counter()
    for _ in range(n):
        for _chunk in app(dict(env), start_response):
            pass
    return n / (time.perf_counter() - started)


def serve(which: str, database: str, port: int) -> None:
    import logging

    import waitress

    logging.getLogger("waitress").setLevel(logging.ERROR)  # "task queue depth" under load

    app = guarded(flask_hello(), database) if which == "guarded" else flask_hello()
    waitress.serve(app, host="127.0.0.1", port=port, threads=4, _quiet=True)


def wrk(port: int, seconds: int) -> float:
    out = subprocess.run(
        ["wrk", "-t1", "-c16", f"-d{seconds}s", f"http://127.0.0.1:{port}/"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert match, out
    return float(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="upgrader-bench-") as tmp:
        database = f"sqlite:///{Path(tmp) / 'app.db'}"
        install(database, CURRENT)

        # 1. WSGI loop
        hello = flask_hello()
        app = guarded(hello, database, ttl=600)
        loop(app, 1000)  # warm: the first request reads the database
        n = args.requests // 10  # a Flask request costs tens of microseconds
        plain, guard = [], []
        for _ in range(args.rounds):
            plain.append(loop(hello, n))
            guard.append(loop(app, n))
        p, g = statistics.median(plain), statistics.median(guard)
        print(f"WSGI loop, Flask hello world ({n} requests x {args.rounds} rounds, medians)")
        print(
            f"  unguarded {p:10,.0f} req/s   guarded {g:10,.0f} req/s   ratio {g / p:.3f}"
            "   target >= 0.97"
        )
        around_bare = guarded(bare, database, ttl=600)
        loop(around_bare, 1000)
        raw = [loop(bare, args.requests) for _ in range(args.rounds)]
        wrapped = [loop(around_bare, args.requests) for _ in range(args.rounds)]
        added = 1e9 / statistics.median(wrapped) - 1e9 / statistics.median(raw)
        print(f"  the guard's own cost per request (around a bare callable): {added:.0f} ns")

        # 3. queries per request in steady state (within the TTL)
        queries = 0

        def count(*_: Any) -> None:
            nonlocal queries
            queries += 1

        event.listen(app.cache.engine, "before_cursor_execute", count)
        n = 20_000
        loop(app, n)
        print(
            f"Queries per request in steady state: {queries / n:g} ({queries} in {n} requests)"
            "   target 0"
        )
        app.cache.invalidate()
        loop(app, 1)
        print(f"  (one cache refresh, once per TTL per process, costs {queries} queries)")

        # 2. a real server under wrk
        if not shutil.which("wrk"):
            print("wrk is not installed (apt-get install wrk): real-server comparison skipped")
            return
        ports = {"plain": free_port(), "guarded": free_port()}
        ctx = multiprocessing.get_context("spawn")
        servers = [
            ctx.Process(target=serve, args=(which, database, port), daemon=True)
            for which, port in ports.items()
        ]
        for s in servers:
            s.start()
        for port in ports.values():
            wait_for_port(port)
        results: dict[str, list[float]] = {"plain": [], "guarded": []}
        rounds = max(3, args.rounds // 2)
        for _ in range(rounds):
            for which, port in ports.items():
                results[which].append(wrk(port, args.seconds))
        for s in servers:
            s.terminate()
        p, g = statistics.median(results["plain"]), statistics.median(results["guarded"])
        print(f"waitress under wrk (-c16, {args.seconds}s x {rounds} rounds each, medians)")
        print(
            f"  unguarded {p:12,.0f} req/s   guarded {g:12,.0f} req/s   ratio {g / p:.3f}"
            "   target >= 0.97"
        )


if __name__ == "__main__":
    main()
