"""The request guard of two versions of upgrader, side by side: did a change cost anything?

Each round runs one process per version, alternately (A, B, B, A, A, B…), each on databases
of its own (SQLite, or with `--backend` PostgreSQL or MariaDB through TEST_POSTGRESQL_URL /
TEST_MYSQL_URL), measuring in that process:

- steady state: seconds for `--requests` requests of Flask's hello world through
  `UpgraderMiddleware` (the site open, the diagnosis fresh: what every request pays);
- blocked: CPU per request answered "Down for Maintenance (Err2)" from the cached
  diagnosis (what every request pays during an upgrade);
- refresh: CPU of one diagnosis refresh (what a process pays once per TTL);
- beat: the same, on the beat that also writes the process's node row.

Then the per-pair ratios (B / A: below 1 means B is faster), their median and spread.
A version is a git revision: it is checked out into a temporary worktree, and its own
`upgrader` and `tests.helpers` are imported from there.

    .venv/bin/python benchmarks/before_after.py BASE [HEAD] [--rounds 15] [--requests 20000]
        [--backend sqlite|postgresql|mysql]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
METRICS = ("steady_s", "blocked_us", "refresh_ms", "beat_ms")
SERVERS = {
    "postgresql": ("TEST_POSTGRESQL_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
    "mysql": ("TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test"),
}


# ---------------------------------------------------------------- in the child process


def hello() -> Any:
    from flask import Flask  # heavy: imported where the tree's path is set

    app = Flask("hello")
    app.get("/")(lambda: "Hello, World!")
    return app


def requests(app: Any, n: int) -> float:
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/",
        "REMOTE_ADDR": "127.0.0.1",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "wsgi.url_scheme": "http",
        "wsgi.input": None,
        "wsgi.errors": sys.stderr,
    }

    def start_response(status: str, headers: list[tuple[str, str]], exc: Any = None) -> None:
        pass

    gc.collect()
    gc.disable()
    try:
        started = time.perf_counter()
        for _ in range(n):
            body = app(dict(environ), start_response)
            for _chunk in body:
                pass
            getattr(body, "close", lambda: None)()
        return time.perf_counter() - started
    finally:
        gc.enable()


def child(tree: Path, n: int, backend: str) -> dict[str, float]:
    sys.path.insert(0, str(tree))
    import upgrader  # heavy: the tree's own
    from tests.conftest import fresh_server_database  # heavy: the tree's own
    from tests.helpers import MIGRATIONS, install  # heavy: the tree's own
    from upgrader.sample.releases import CURRENT, RELEASES  # heavy: the tree's own
    from upgrader.settings import resolve  # heavy: the tree's own
    from upgrader.web.middleware import UpgraderMiddleware  # heavy: the tree's own

    assert Path(upgrader.__file__).is_relative_to(tree), upgrader.__file__
    work = Path(tempfile.mkdtemp(prefix="before-after-"))
    databases = contextlib.ExitStack()

    def guard(release: str, ttl: float) -> Any:
        url = f"sqlite:///{work / f'{release}.db'}"
        if backend != "sqlite":
            url = databases.enter_context(contextlib.contextmanager(fresh_server_database)(backend))
        install(url, release)
        settings = resolve(
            {
                "database_url": url,
                "migrations": str(MIGRATIONS),
                "code_version": CURRENT,
                "installer_dir": str(work / "no-installer"),
                "backup_dir": str(work),
                "releases": RELEASES,
                "cache_ttl": ttl,
            },
            environ={},
        )
        made = UpgraderMiddleware(hello().wsgi_app, settings)
        databases.callback(made.cache.close)  # before its database is dropped
        return made

    with databases:
        open_site = guard(CURRENT, 2.0)  # the default TTL: refreshes as a process makes them
        requests(open_site, 500)
        steady = requests(open_site, n)
        pending = guard("1.0.0", 3600.0)
        requests(pending, 50)
        assert pending.cache.get().state.value == "upgrade_pending"
        cpu = time.process_time()
        requests(pending, n // 4)
        blocked = (time.process_time() - cpu) / (n // 4)
        refresh = refreshes(pending.cache, 20)
        pending.cache.registration.every = 0.0  # the node row on every refresh
        beat = refreshes(pending.cache, 20)
    return {
        "steady_s": steady,
        "blocked_us": blocked * 1e6,
        "refresh_ms": refresh * 1e3,
        "beat_ms": beat * 1e3,
    }


def refreshes(cache: Any, n: int) -> float:
    """The median CPU of `n` refreshes."""
    cpu = []
    for _ in range(n):
        cache.invalidate()
        started = time.process_time()
        cache.get()
        cpu.append(time.process_time() - started)
    return statistics.median(cpu)


# --------------------------------------------------------------------- in the parent


def worktree(revision: str, place: Path) -> Path:
    tree = place / revision.replace("/", "_")
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(tree), revision],
        check=True,
    )
    return tree


@contextlib.contextmanager
def worktrees(revisions: list[str], place: Path) -> Iterator[list[Path]]:
    """Each revision checked out under `place`, removed again afterwards."""
    trees: list[Path] = []
    try:
        for revision in revisions:
            trees.append(worktree(revision, place))
        yield trees
    finally:
        for tree in trees:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False
            )


def measure(tree: Path, n: int, backend: str) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UPGRADER_")}
    env.update({name: os.environ.get(name, url) for name, url in SERVERS.values()})
    done = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            str(tree),
            "--requests",
            str(n),
            "--backend",
            backend,
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise SystemExit(f"{tree}: {done.stderr}")
    result: dict[str, float] = json.loads(done.stdout.splitlines()[-1])
    return result


def report(name: str, a: list[float], b: list[float]) -> str:
    ratios = sorted(y / x for x, y in zip(a, b, strict=True))
    q = statistics.quantiles(ratios, n=4)
    return (
        f"{name:11} A {statistics.median(a):9.3f}  B {statistics.median(b):9.3f}  "
        f"B/A {statistics.median(ratios):.3f} (IQR {q[0]:.3f}-{q[2]:.3f}, "
        f"range {ratios[0]:.3f}-{ratios[-1]:.3f}, n={len(ratios)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("base", nargs="?", help="A: the git revision to compare against")
    parser.add_argument("head", nargs="?", default="HEAD", help="B (default: HEAD)")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--backend", default="sqlite", choices=("sqlite", *SERVERS))
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child.resolve(), args.requests, args.backend)))
        return
    if not args.base:
        parser.error("name the revision to compare against")
    place = Path(tempfile.mkdtemp(prefix="before-after-trees-"))
    with worktrees([args.base, args.head], place) as trees:
        results: list[list[dict[str, float]]] = [[], []]
        for i in range(args.rounds):
            order = (0, 1) if i % 2 == 0 else (1, 0)
            for side in order:
                results[side].append(measure(trees[side], args.requests, args.backend))
            print(f"round {i + 1}/{args.rounds}", file=sys.stderr)
        print(
            f"A = {args.base}, B = {args.head}, on {args.backend}; "
            f"{args.requests} requests per steady round"
        )
        for metric in METRICS:
            a = [r[metric] for r in results[0]]
            b = [r[metric] for r in results[1]]
            print(report(metric, a, b))


if __name__ == "__main__":
    main()
