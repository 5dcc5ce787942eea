"""A cold `upgrader status` against `alembic current`, as a user would pick between them:
two commands, each a fresh Python process, on the same database and the same chain.

Interleaved pairs (A, B, then B, A…): the CPU time (user + system, of the child) and the
wall time of each, the per-pair ratios upgrader / Alembic with their median and IQR.
Goal: CPU ratio <= 1.00. Chains of trivial revisions (tests/chains.py), all applied, on
SQLite (each length a database of its own); `upgrader status` reads the revisions as
Alembic does, and its own tables besides. upgrader and the chain are byte-compiled first,
as pip compiles an installed wheel (benchmarks/pairs.py `as_installed`).

    .venv/bin/python benchmarks/cold_start.py [--rounds 15] [--sizes 10,100]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.chain_overhead import alembic, environ  # noqa: E402
from benchmarks.pairs import as_installed, cost, interleaved, ratios  # noqa: E402
from tests.chains import trivial_chain  # noqa: E402

BIN = Path(sys.executable).parent


def compare(size: int, rounds: int, workdir: Path) -> str:
    chain = trivial_chain(workdir / f"chain-{size}", size)
    as_installed({}, ROOT / "upgrader", chain)
    url = f"sqlite:///{workdir / f'status-{size}.db'}"
    env = environ(url, chain, workdir, f"v{size:04d}")
    subprocess.run(
        [str(BIN / "upgrader"), "install", "--yes"], env=env, check=True, stdout=subprocess.DEVNULL
    )
    ours = [str(BIN / "upgrader"), "status"]
    theirs = [*alembic(url, chain, workdir)[:-2], "current"]
    cost(ours, env), cost(theirs, env)  # warm: the page cache
    pairs = interleaved(lambda: cost(theirs, env), lambda: cost(ours, env), rounds)
    cpu_a = statistics.median(a[0] for a, _ in pairs) * 1000
    cpu_b = statistics.median(b[0] for _, b in pairs) * 1000
    return f"{size:>4} revisions  CPU {cpu_a:.0f} -> {cpu_b:.0f} ms, {ratios(pairs)}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--sizes", default="10,100")
    args = parser.parse_args()
    print(f"cold `upgrader status` / `alembic current`, SQLite, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="upgrader-cold-") as tmp:
        for size in (int(s) for s in args.sizes.split(",")):
            print(compare(size, args.rounds, Path(tmp)), flush=True)


if __name__ == "__main__":
    main()
