"""upgrader on a long chain, against plain Alembic, measured in interleaved pairs.

1. A synthetic chain of 64 revisions (tables created with rows, columns added and filled,
   indexes, data rewritten), from its 4th revision to its head, on a fresh database per
   measurement, through Alembic's generic env.py:
   - `upgrader upgrade --yes --no-backup` against `alembic upgrade heads`;
   - `upgrader upgrade --yes` (verified backup first) against the raw dump tool followed
     by `alembic upgrade heads`.
   Each round runs A then B (and the next round B then A), each pair on databases made
   the same way; the figure is the median of the per-pair ratios B/A, with their spread,
   for CPU time (the commands' and their children's) and for wall time. Target: <= 1.10.
2. Linearity: chains of 10, 100 and 500 trivial revisions, all pending, upgrader against
   Alembic, so a cost per revision that grows with the chain would show.

    .venv/bin/python benchmarks/chain_overhead.py [--rounds 15] [--rows 2000]
        [--backends sqlite,postgresql,mysql] [--sizes 10,100,500] [--size-rounds 5]
        [--linearity-only]

upgrader and the chains are byte-compiled first, as pip compiles an installed wheel
(benchmarks/pairs.py `as_installed`).

PostgreSQL and MariaDB are reached through TEST_POSTGRESQL_URL / TEST_MYSQL_URL
(defaults: this machine's servers). The machine is noisy: only ratios of pairs measured
side by side mean anything.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import uuid
from pathlib import Path

from sqlalchemy import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TEST_POSTGRESQL_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
os.environ.setdefault("TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test")

from benchmarks.pairs import Cost, as_installed, cost, measured, ratios  # noqa: E402
from benchmarks.upgrade_overhead import fresh_database, raw_backup  # noqa: E402
from tests.chains import long_chain, trivial_chain  # noqa: E402

BIN = Path(sys.executable).parent


def environ(url: str, chain: Path, workdir: Path, base: str) -> dict[str, str]:
    env = as_installed({k: v for k, v in os.environ.items() if not k.startswith("UPGRADER_")})
    env.update(
        UPGRADER_DATABASE_URL=url,
        UPGRADER_MIGRATIONS=str(chain),
        UPGRADER_CODE_VERSION="2.0.0",
        UPGRADER_RELEASES=f"1.0.0={base}",
        UPGRADER_BACKUP_DIR=str(workdir / "backups"),
        UPGRADER_INSTALLER_DIR=str(workdir / "none"),
    )
    return env


def install_base(url: str, chain: Path, workdir: Path, base: str) -> None:
    """The database at release 1.0.0 (revision `base`), recorded by upgrader."""
    cost(
        [str(BIN / "upgrader"), "install", "--release", "1.0.0", "--yes"],
        environ(url, chain, workdir, base),
    )


def alembic(url: str, chain: Path, workdir: Path) -> list[str]:
    ini = workdir / f"alembic-{uuid.uuid4().hex[:6]}.ini"
    ini.write_text(
        f"[alembic]\nscript_location = {chain}\n"
        f"sqlalchemy.url = {make_url(url).render_as_string(hide_password=False)}\n"
    )
    return [str(BIN / "alembic"), "-c", str(ini), "upgrade", "heads"]


def pair(
    backend: str, chain: Path, base: str, workdir: Path, backup: bool, swap: bool
) -> tuple[Cost, Cost]:
    """((CPU, wall) plain, (CPU, wall) upgrader), each on a fresh database made the same way."""
    costs: dict[str, Cost] = {}
    for which in ("upgrader", "plain") if swap else ("plain", "upgrader"):
        with fresh_database(backend, workdir) as url:
            install_base(url, chain, workdir, base)
            env = environ(url, chain, workdir, base)
            if which == "upgrader":
                argv = [str(BIN / "upgrader"), "upgrade", "--yes"]
                costs[which] = cost(argv if backup else [*argv, "--no-backup"], env)
            else:
                costs[which] = plain(url, chain, workdir, env, backup)
        shutil.rmtree(workdir / "backups", ignore_errors=True)
    return costs["plain"], costs["upgrader"]


def plain(url: str, chain: Path, workdir: Path, env: dict[str, str], backup: bool) -> Cost:
    """The raw tools: the dump (with `backup`), then `alembic upgrade heads`; the CPU
    and wall seconds of their processes."""

    def both() -> None:
        if backup:
            raw_backup(url, workdir / f"raw-{make_url(url).get_backend_name()}.backup")()
        cost(alembic(url, chain, workdir), env)

    return measured(both)


def summary(pairs: list[tuple[Cost, Cost]]) -> str:
    """Median seconds of each side and the per-pair ratios, CPU then wall."""
    plain = statistics.median(a[1] for a, _ in pairs)
    ours = statistics.median(b[1] for _, b in pairs)
    return f"wall {plain:.2f}s -> {ours:.2f}s; {ratios(pairs)}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--backends", default="sqlite,postgresql,mysql")
    parser.add_argument("--sizes", default="10,100,500")
    parser.add_argument("--size-rounds", type=int, default=5, help="pairs for 500 and more")
    parser.add_argument("--linearity-only", action="store_true", help="part 2 alone")
    args = parser.parse_args()
    as_installed({}, ROOT / "upgrader")
    with tempfile.TemporaryDirectory(prefix="upgrader-chain-") as tmp:
        workdir = Path(tmp)
        if not args.linearity_only:
            long_chain_part(workdir, args)
        print(
            f"Linearity: trivial revisions, all pending; {args.rounds} pairs per line "
            f"({args.size_rounds} from 500 revisions); goal <= 1.05"
        )
        for backend in args.backends.split(","):
            for size in (int(s) for s in args.sizes.split(",")):
                chain = trivial_chain(workdir / f"trivial-{size}", size)
                as_installed({}, chain)
                rounds = args.size_rounds if size >= 500 else args.rounds
                pairs = [
                    pair(backend, chain, "v0001", workdir, False, swap=i % 2 == 1)
                    for i in range(rounds)
                ]
                per = statistics.median(b[1] for _, b in pairs) / size * 1000
                print(
                    f"{backend:<11} {f'{size} revisions':<36} {summary(pairs)}   "
                    f"{per:.2f} ms per revision",
                    flush=True,
                )


def long_chain_part(workdir: Path, args: argparse.Namespace) -> None:
    chain = long_chain(workdir / "chain", 64, rows=args.rows)
    as_installed({}, chain)
    print(
        f"64-revision chain, 60 pending, {args.rows} rows per table; "
        f"{args.rounds} interleaved pairs per line"
    )
    print(f"{'backend':<11} {'what':<36} {'plain':>9} {'upgrader':>9}")
    for backend in args.backends.split(","):
        for backup in (False, True):
            pairs = [
                pair(backend, chain, "l004", workdir, backup, swap=i % 2 == 1)
                for i in range(args.rounds)
            ]
            what = "upgrade + verified backup vs dump+alembic" if backup else "upgrade vs alembic"
            print(f"{backend:<11} {what:<36} {summary(pairs)}   target <= 1.10")
    print()


if __name__ == "__main__":
    main()
