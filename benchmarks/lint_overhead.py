"""`upgrader lint --all` against `alembic upgrade heads --sql` on the same chain: what reading
every revision's SQL costs beyond rendering it. Goal: <= 2x.

A chain of trivial revisions (tests/chains.py; each adds and fills nothing worth a finding
but one UPDATE), PostgreSQL's dialect (so squawk's rules run too, where installed), offline:
no database is reached. Interleaved pairs (Alembic, upgrader, then upgrader, Alembic…); the
per-pair ratios of wall and CPU time, median and IQR.

    .venv/bin/python benchmarks/lint_overhead.py [--rounds 15] [--size 500]
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--size", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="upgrader-lint-") as tmp:
        work = Path(tmp)
        chain = trivial_chain(work / "chain", args.size)
        as_installed({}, ROOT / "upgrader", chain)
        url = "postgresql://nobody@127.0.0.1:1/offline"  # never reached: offline
        env = environ(url, chain, work, "v0001")
        theirs = [*alembic(url, chain, work), "--sql"]
        ours = [str(BIN / "upgrader"), "lint", "--all", "--dialect", "postgresql"]
        lint = subprocess.run(ours, env=env, capture_output=True, text=True)
        print(lint.stdout.splitlines()[0], f"(exit {lint.returncode})")
        pairs = interleaved(
            lambda: cost(theirs, env), lambda: cost(ours, env, ok=(0, 1)), args.rounds
        )
        wall_a = statistics.median(a[1] for a, _ in pairs)
        wall_b = statistics.median(b[1] for _, b in pairs)
        print(
            f"{args.size} revisions: alembic --sql {wall_a:.2f} s, upgrader lint {wall_b:.2f} s; "
            f"{ratios(pairs)}   goal <= 2"
        )


if __name__ == "__main__":
    main()
