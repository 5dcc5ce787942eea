"""What upgrader adds over the raw tools on the sample's own chain, side by side in one run.

(benchmarks/chain_overhead.py measures a 64-revision chain, with and without the backup.)

1. `upgrader upgrade --yes --no-backup` against plain `alembic upgrade head`, both as
   commands (each pays for starting Python), on the same chain (the sample
   application 1.0.0 -> 2.0.1, whose 2.0.0 data migration rewrites every row) and
   the same data, each on a fresh database of its own, in pairs whose order alternates;
   the median of the per-pair ratios, with their range.
2. upgrader's verified backup (the library call the engine makes: dump, then
   verify and checksum) against the raw tool alone (`sqlite3 .backup`,
   `pg_dump -Fc`, `mariadb-dump --single-transaction`) on the same database.

    .venv/bin/python benchmarks/upgrade_overhead.py [--rows 5000] [--repeat 15]
        [--backends sqlite,postgresql,mysql] [--backup-only]

PostgreSQL and MariaDB are reached through TEST_POSTGRESQL_URL / TEST_MYSQL_URL
(defaults: this machine's servers). Medians are printed; the machine is noisy,
so only ratios measured in the same run mean anything.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from sqlalchemy import column, create_engine, make_url, table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# The servers, as the tests reach them (read by tests.conftest when imported).
os.environ.setdefault("TEST_POSTGRESQL_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
os.environ.setdefault("TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test")

from benchmarks.pairs import Cost, as_installed, cost, interleaved, measured, ratios  # noqa: E402
from tests.conftest import fresh_server_database  # noqa: E402
from upgrader.core import storage  # noqa: E402
from upgrader.core.revisions import alembic_config  # noqa: E402
from upgrader.core.tables import define_tables, ensure_tables  # noqa: E402
from upgrader.engine.backup import create_backup  # noqa: E402
from upgrader.sample.data import AUTHORS, BOOKS  # noqa: E402

BIN = Path(sys.executable).parent


@contextmanager
def fresh_database(backend: str, workdir: Path) -> Iterator[str]:
    """A database of its own per measurement, as the tests make them."""
    if backend == "sqlite":
        path = workdir / f"{uuid.uuid4().hex[:8]}.db"
        try:
            yield f"sqlite:///{path}"
        finally:
            path.unlink(missing_ok=True)
        return
    yield from fresh_server_database(backend)


def prepare(url: str, rows: int) -> None:
    """Release 1.0.0 with `rows` authors and `rows` books, recorded as upgrader would."""
    cfg = alembic_config(ROOT / "migrations")
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["configure_logger"] = False
    command.upgrade(cfg, "0001_initial")
    engine = create_engine(url)
    authors = table("authors", column("id"), column("name"))
    books = table("books", column("id"), column("title"), column("author_id"), column("year"))
    with engine.begin() as conn:
        conn.execute(
            authors.insert(),
            [{"id": i + 1, "name": f"{AUTHORS[i % len(AUTHORS)][1]} {i}"} for i in range(rows)],
        )
        conn.execute(
            books.insert(),
            [
                {
                    "id": i + 1,
                    "title": BOOKS[i % len(BOOKS)][1],
                    "author_id": i + 1,
                    "year": BOOKS[i % len(BOOKS)][3],
                }
                for i in range(rows)
            ],
        )
    tables = define_tables()
    ensure_tables(engine, tables)
    with engine.begin() as conn:
        storage.write_single_state(conn, tables, "1.0.0")
    engine.dispose()


def environment(url: str, workdir: Path) -> dict[str, str]:
    env = as_installed({k: v for k, v in os.environ.items() if not k.startswith("UPGRADER_")})
    env.update(
        UPGRADER_APP="upgrader.sample:create_app",
        SHELF_DATABASE_URL=url,
        UPGRADER_BACKUP_DIR=str(workdir / "backups"),
    )
    return env


def bench_upgrade(backend: str, rows: int, repeat: int, workdir: Path) -> list[tuple[Cost, Cost]]:
    """(alembic, upgrader) pairs, each on a fresh database; the order alternates per round."""
    commands = {
        "alembic": [
            str(BIN / "alembic"),
            "-c",
            str(ROOT / "migrations" / "alembic.ini"),
            "upgrade",
            "head",
        ],
        "upgrader": [str(BIN / "upgrader"), "upgrade", "--yes", "--no-backup"],
    }
    pairs: list[tuple[Cost, Cost]] = []
    for i in range(repeat):
        times: dict[str, Cost] = {}
        for which in ("alembic", "upgrader") if i % 2 == 0 else ("upgrader", "alembic"):
            with fresh_database(backend, workdir) as url:
                prepare(url, rows)
                times[which] = cost(commands[which], environment(url, workdir))
        pairs.append((times["alembic"], times["upgrader"]))
    return pairs


def summary(pairs: list[tuple[Cost, Cost]]) -> str:
    """Median wall seconds of each side, then the per-pair ratios of CPU and of wall time."""
    theirs, ours = (statistics.median(p[i][1] for p in pairs) for i in (0, 1))
    return f"{theirs:>7.3f}s {ours:>7.3f}s  {ratios(pairs)}"


def raw_backup(url: str, out: Path) -> Callable[[], object]:
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        return lambda: subprocess.run(["sqlite3", u.database or "", f".backup '{out}'"], check=True)
    if u.get_backend_name() == "postgresql":
        return lambda: subprocess.run(
            [
                "pg_dump",
                "--format=custom",
                "--no-password",
                f"--host={u.host}",
                f"--port={u.port or 5432}",
                f"--username={u.username}",
                f"--file={out}",
                f"--dbname={u.database}",
            ],
            check=True,
        )
    tool = shutil.which("mariadb-dump") or "mysqldump"
    return lambda: subprocess.run(
        [
            tool,
            f"--host={u.host}",
            f"--port={u.port or 3306}",
            f"--user={u.username}",
            "--single-transaction",
            "--routines",
            "--triggers",
            "--events",
            "--hex-blob",
            f"--result-file={out}",
            u.database or "",
        ],
        check=True,
    )


def bench_backup(backend: str, rows: int, repeat: int, workdir: Path) -> list[tuple[Cost, Cost]]:
    """(raw tool, upgrader) CPU and wall seconds per pair, the order alternating. upgrader's
    backup is the library call the engine makes, so its CPU is this process's and its
    children's (the dump tool's)."""
    with fresh_database(backend, workdir) as url:
        prepare(url, rows)
        engine = create_engine(url)
        # a file per backend: sqlite3 .backup refuses to overwrite another tool's dump
        raw = raw_backup(url, workdir / f"raw-{backend}.backup")
        labels = itertools.count()

        def ours() -> Cost:
            return measured(
                lambda: create_backup(engine, workdir / "backups", label=f"bench{next(labels)}"),
                own=True,
            )

        pairs = interleaved(lambda: measured(raw, own=True), ours, repeat)
        engine.dispose()
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--backends", default="sqlite,postgresql,mysql")
    parser.add_argument("--backup-only", action="store_true", help="part 2 alone")
    args = parser.parse_args()
    print(
        f"rows: {args.rows} authors + {args.rows} books; {args.repeat} interleaved pairs "
        "(median of the per-pair ratios)"
    )
    print(f"{'backend':<11} {'what':<34} {'raw tool':>8} {'upgrader':>8}  (wall; upgrader/raw)")
    as_installed({}, ROOT / "upgrader", ROOT / "migrations")
    with tempfile.TemporaryDirectory(prefix="upgrader-bench-") as tmp:
        workdir = Path(tmp)
        for backend in args.backends.split(","):
            if not args.backup_only:
                pairs = bench_upgrade(backend, args.rows, args.repeat, workdir)
                print(f"{backend:<11} {'upgrade 1.0.0 -> 2.0.1, no backup':<34} {summary(pairs)}")
            pairs = bench_backup(backend, args.rows, args.repeat, workdir)
            print(f"{backend:<11} {'verified backup vs raw dump':<34} {summary(pairs)}")


if __name__ == "__main__":
    main()
