"""What the request guard costs, measured side by side in one run.

1. Steady state, WSGI loop, Flask's hello world (the research notes, §5.3): bare, with
   the Flask extension (`Upgrader().init_app(app)`), wrapped in `UpgraderMiddleware`, and a
   peer: a middleware that checks a maintenance flag file on every request (what many
   maintenance modes do). Interleaved rounds (bare, variant, bare, variant…), the ratio of
   each pair, then the median and spread of those ratios. The TTL is the default (2 s), so
   the refreshes a process really makes are in the figures. Target: >= 0.97.
2. Refresh CPU: one diagnosis refresh (what a process does once per TTL), in CPU time,
   in interleaved pairs: without the node registry (what a refresh cost before it) against
   one that also writes this process's node row (made once per 10 s by default), and
   against one in `post_deploy_pending` (a rollout: the decision also reads the live
   nodes). Goal: <= 2 ms on SQLite.
3. Blocked-request CPU: a request answered "Down for Maintenance (Err2)" from the cached
   diagnosis, in CPU time. Goal: <= 10 µs.
4. Database queries per request in steady state (counted with SQLAlchemy's events): 0.
5. Where a refresh's CPU goes (with the node row): the CPU from each statement, commit,
   rollback or return to the pool to the next, the median of each over the refreshes,
   beside a bare round trip through the driver (`SELECT 1` on its own cursor). No goal: it
   shows what a refresh is made of on each database.

Each measurement uses a database of its own (SQLite in a temporary directory;
PostgreSQL and MariaDB through TEST_POSTGRESQL_URL / TEST_MYSQL_URL for the refresh).

    .venv/bin/python benchmarks/guard_overhead.py [--rounds 15] [--requests 20000]
        [--backends sqlite,postgresql,mysql] [--parts 1,2,3,5]
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TEST_POSTGRESQL_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
os.environ.setdefault("TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test")

from sqlalchemy import create_engine, event  # noqa: E402

from benchmarks.pairs import interleaved, spread  # noqa: E402
from tests.conftest import fresh_server_database  # noqa: E402
from tests.helpers import MIGRATIONS, install  # noqa: E402
from upgrader.sample.releases import CURRENT, RELEASES  # noqa: E402
from upgrader.settings import resolve  # noqa: E402
from upgrader.web.flask import Upgrader  # noqa: E402
from upgrader.web.middleware import UpgraderMiddleware  # noqa: E402

App = Callable[..., Iterable[bytes]]


def flask_hello(config: dict[str, Any] | None = None) -> Any:
    from flask import Flask

    app = Flask("hello")
    app.config.update(config or {})
    app.get("/")(lambda: "Hello, World!")
    return app


def settings_for(database: str, **extra: Any) -> Any:
    values = {
        "database_url": database,
        "migrations": str(MIGRATIONS),
        "code_version": CURRENT,
        "installer_dir": "/nonexistent",
        "releases": RELEASES,
        **extra,
    }
    return resolve(values, environ={})


def with_extension(database: str) -> Any:
    app = flask_hello(
        {
            "SQLALCHEMY_DATABASE_URI": database,
            "UPGRADER_MIGRATIONS": str(MIGRATIONS),
            "UPGRADER_CODE_VERSION": CURRENT,
            "UPGRADER_INSTALLER_DIR": "/nonexistent",
        }
    )
    Upgrader().init_app(app)
    return app


class FlagFile:
    """The peer: a maintenance mode that checks for a flag file on every request."""

    def __init__(self, app: App, flag: Path) -> None:
        self.app, self.flag = app, str(flag)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if os.path.exists(self.flag):
            start_response("503 Service Unavailable", [("Retry-After", "120")])
            return [b"Down for maintenance"]
        return self.app(environ, start_response)


def environ() -> dict[str, Any]:
    return {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/",
        "REMOTE_ADDR": "127.0.0.1",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "wsgi.url_scheme": "http",
        "wsgi.input": None,
        "wsgi.errors": sys.stderr,
    }


def loop(app: App, n: int) -> float:
    """Seconds for n requests (the garbage collector kept out of the window: its pauses
    land on whichever side of a pair happens to allocate past its threshold)."""
    env = environ()

    def start_response(status: str, headers: list[tuple[str, str]], exc: Any = None) -> None:
        pass

    gc.collect()
    gc.disable()
    try:
        started = time.perf_counter()
        for _ in range(n):
            body = app(dict(env), start_response)
            for _chunk in body:
                pass
            close = getattr(body, "close", None)
            if close:
                close()
        return time.perf_counter() - started
    finally:
        gc.enable()


def pairs(bare: App, variant: App, n: int, rounds: int) -> str:
    loop(bare, 200)
    loop(variant, 200)  # warm: the first request reads the database
    times = interleaved(lambda: loop(bare, n), lambda: loop(variant, n), rounds)
    return f"ratio {spread([a / b for a, b in times])}"  # the variant's throughput / bare's


@contextmanager
def database(backend: str, tmp: Path, release: str = CURRENT) -> Any:
    if backend == "sqlite":
        url = f"sqlite:///{tmp / f'{backend}-{release}-{time.monotonic_ns()}.db'}"
        install(url, release)
        yield url
        return
    for url in fresh_server_database(backend):
        install(url, release)
        yield url


def refresher(url: str, beat: float, **extra: Any) -> Callable[[], float]:
    """One refresh, timed in CPU seconds. `beat`: how often it also writes this process's
    node row (inf: never, what refreshes cost before the registry; 0: every time)."""
    guard = UpgraderMiddleware(flask_hello(), settings_for(url, **extra))
    cache = guard.cache
    cache.registration.every = beat
    cache.get()

    def once() -> float:
        cache.invalidate()
        started = time.process_time()
        cache.get()
        return time.process_time() - started

    once.state = cache.get().state.value  # type: ignore[attr-defined]
    return once


def refresh_pairs(base: Callable[[], float], variant: Callable[[], float], rounds: int) -> str:
    """Interleaved rounds of 10 refreshes each side: the medians of each side, and the
    per-pair ratios with their spread."""
    times = interleaved(
        lambda: statistics.median(base() for _ in range(10)),
        lambda: statistics.median(variant() for _ in range(10)),
        rounds,
    )
    a, b = (statistics.median(t[i] for t in times) * 1000 for i in (0, 1))
    return f"{a:.2f} ms -> {b:.2f} ms CPU, ratio {spread([y / x for x, y in times], '{:.2f}')}"


def post_deploy_code(tmp: Path) -> Path:
    """The sample's migrations with its last revision declared post-deploy: a database at
    1.1.0 under this code is `post_deploy_pending`, the state whose refresh reads the nodes."""
    code = tmp / "post-deploy-migrations"
    if not code.exists():
        shutil.copytree(MIGRATIONS, code, ignore=shutil.ignore_patterns("__pycache__"))
        last = code / "versions" / "0003_sort_names.py"
        last.write_text(last.read_text() + '\nupgrader_phase = "post-deploy"\n')
    return code


def blocked_cpu(url: str, n: int) -> str:
    guard = UpgraderMiddleware(flask_hello(), settings_for(url, cache_ttl=3600))
    loop(guard, 10)
    assert guard.cache.get().state.value == "upgrade_pending"
    samples = []
    for _ in range(7):
        c = time.process_time()
        loop(guard, n)
        samples.append((time.process_time() - c) / n)
    guard.cache.close()
    return f"{statistics.median(samples) * 1e6:.1f} µs CPU per blocked request (median of 7)"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--backends", default="sqlite,postgresql,mysql")
    parser.add_argument("--parts", default="1,2,3", help="which measurements (4 goes with 1)")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    with tempfile.TemporaryDirectory(prefix="upgrader-guard-") as tmp_name:
        tmp = Path(tmp_name)
        if "1" in parts:
            steady(tmp, args)
        if "2" in parts:
            refresh(tmp, args)
        if "3" in parts:
            with database("sqlite", tmp, release="1.0.0") as url:
                print("3. Blocked request (Err2, page from memory)   goal <= 10 µs")
                print(f"   {blocked_cpu(url, args.requests)}")
        if "5" in parts:
            breakdown(tmp, args)


def steady(tmp: Path, args: argparse.Namespace) -> None:
    """Parts 1 and 4: the steady state's throughput, and its queries."""
    with database("sqlite", tmp) as url:
        hello = flask_hello()
        n = args.requests  # about a second of Flask requests per side of a pair
        print(
            f"1. Steady state, Flask hello world: {args.rounds} interleaved pairs of "
            f"{n} requests, TTL 2 s (refreshes included)"
        )
        print(
            f"   Flask extension         {pairs(hello, with_extension(url), n, args.rounds)}"
            "   target >= 0.97"
        )
        wrapped = UpgraderMiddleware(flask_hello(), settings_for(url))
        print(
            f"   UpgraderMiddleware      {pairs(hello, wrapped, n, args.rounds)}   target >= 0.97"
        )
        peer = FlagFile(flask_hello(), tmp / "maintenance.flag")
        print(f"   peer: flag-file check   {pairs(hello, peer, n, args.rounds)}")

        queries = 0

        def count(*_: Any) -> None:
            nonlocal queries
            queries += 1

        guard = UpgraderMiddleware(flask_hello(), settings_for(url, cache_ttl=3600))
        loop(guard, 10)
        event.listen(guard.cache.engine, "before_cursor_execute", count)
        loop(guard, args.requests)
        print(
            f"4. Queries per request in steady state: {queries / args.requests:g} "
            f"({queries} in {args.requests})   target 0"
        )
        guard.cache.invalidate()
        loop(guard, 1)
        print(f"   one refresh (once per TTL per process) makes {queries} queries")


def refresh(tmp: Path, args: argparse.Namespace) -> None:
    """Part 2: one refresh's CPU, with and without the node row, and in a rollout."""
    print("2. Refresh CPU (one diagnosis, as made once per TTL)   goal <= 2 ms")
    print("   before the node registry -> with its write / in a rollout (reads the nodes)")
    for backend in args.backends.split(","):
        with database(backend, tmp) as url:
            before = refresher(url, float("inf"))
            writing = refresher(url, 0.0)
            print(f"   {backend:<11} {refresh_pairs(before, writing, args.rounds)}  + node row")
        with database(backend, tmp) as url, database(backend, tmp, "1.1.0") as rollout:
            before = refresher(url, float("inf"))
            reading = refresher(rollout, float("inf"), migrations=str(post_deploy_code(tmp)))
            assert reading.state == "post_deploy_pending", reading.state  # type: ignore[attr-defined]
            print(f"   {'':<11} {refresh_pairs(before, reading, args.rounds)}  post-deploy")


def breakdown(tmp: Path, args: argparse.Namespace) -> None:
    """Part 5: a refresh with its node row, step by step, on each database."""
    print("5. Where a refresh's CPU goes, with the node row: from each step to the next")
    for backend in args.backends.split(","):
        with database(backend, tmp) as url:
            total, steps = refresh_steps(url, args.rounds * 10)
            bare = round_trip(url, args.rounds)
            print(
                f"   {backend:<11} {total * 1000:.2f} ms in all (median of {args.rounds * 10});"
                f" a bare round trip {bare * 1000:.3f} ms"
            )
            for label, seconds, seen in steps:
                print(f"   {'':<11} {seconds * 1000:6.3f} ms  {label}{seen}")


def refresh_steps(url: str, n: int) -> tuple[float, list[tuple[str, float, str]]]:
    """A refresh's CPU, and each step's (medians): SQLAlchemy's events mark where each
    statement, commit, rollback, checkout and return to the pool begins (in whichever
    thread), a listener where the diagnosis is made, and a wrapper where the node row's
    beat begins. After the read's return to the pool comes the thread's hand-back, the
    decision and its explanation. A label seen again in one refresh is numbered: the node
    row's connection."""
    cache = UpgraderMiddleware(flask_hello(), settings_for(url)).cache
    cache.registration.every = 0.0
    cache.get()
    marks: list[tuple[str, float]] = []

    def mark(label: str) -> Callable[..., None]:
        return lambda *a: marks.append((label or _label(a[2]), time.process_time()))

    event.listen(cache.engine, "before_cursor_execute", mark(""))
    event.listen(cache.engine, "commit", mark("COMMIT"))
    event.listen(cache.engine, "rollback", mark("ROLLBACK"))
    event.listen(cache.engine.pool, "checkout", mark("checkout, to the first statement"))
    event.listen(cache.engine.pool, "reset", mark("return to the pool, and on"))
    cache.listeners.append(mark("the diagnosis's listeners"))
    beat = cache.registration.beat

    def marked_beat(*a: Any, **k: Any) -> None:
        marks.append(("node row: the beat", time.process_time()))
        beat(*a, **k)

    cache.registration.beat = marked_beat  # type: ignore[method-assign]
    totals: list[float] = []
    costs: dict[str, list[float]] = {}
    for _ in range(n):
        marks.clear()
        cache.invalidate()
        started = time.process_time()
        cache.get()
        ended = time.process_time()
        totals.append(ended - started)
        for label, seconds in _steps(marks, started, ended).items():
            costs.setdefault(label, []).append(seconds)
    cache.close()
    steps = [
        (label, statistics.median(v), "" if len(v) == n else f"  (in {len(v)} of {n})")
        for label, v in costs.items()
    ]
    return statistics.median(totals), steps


def _steps(marks: list[tuple[str, float]], started: float, ended: float) -> dict[str, float]:
    """Each mark's CPU until the next one (the last one's until the refresh ended)."""
    here: dict[str, float] = {"before the first step": marks[0][1] - started}
    for (label, at), (_, after) in zip(marks, [*marks[1:], ("", ended)], strict=True):
        name, k = label, 2
        while name in here:
            name, k = f"{label} ({k})", k + 1
        here[name] = after - at
    return here


def _label(statement: str) -> str:
    """A statement's verb and first table: enough to tell a refresh's statements apart."""
    found = re.search(r"\b(?:FROM|INTO)\s+([`\"\w.]+)", statement)
    return f"{statement.split()[0]} {found.group(1) if found else '...'}"


def round_trip(url: str, rounds: int) -> float:
    """The CPU of `SELECT 1` on the driver's own cursor, nothing of SQLAlchemy's around it."""
    engine = create_engine(url)
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()

        def hundred() -> float:
            started = time.process_time()
            for _ in range(100):
                cursor.execute("SELECT 1")
                cursor.fetchall()
            return (time.process_time() - started) / 100

        hundred()
        return statistics.median(hundred() for _ in range(rounds))
    finally:
        raw.close()
        engine.dispose()


if __name__ == "__main__":
    main()
