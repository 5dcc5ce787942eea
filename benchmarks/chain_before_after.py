"""`upgrader upgrade` of two versions of upgrader, side by side: did a change to the work
per revision cost or save anything?

Each version is a git revision checked out into a temporary worktree and byte-compiled (as
pip compiles a wheel). Each pair runs `upgrade --yes --no-backup` of each version (A, B,
then B, A…) on a chain of trivial revisions, all pending, each on a fresh database made the
same way; the figure is the median of the per-pair ratios B/A (below 1: B is faster), with
their spread, for CPU time (the command's and its children's) and for wall time.

A version runs as `python -P`, with the worktree first on its path: without -P the current
directory would come first, and a run from a checkout would import the checkout's upgrader
whatever the path says (the command asserts which one it imported).

    .venv/bin/python benchmarks/chain_before_after.py BASE [HEAD] [--rounds 15]
        [--revisions 500] [--backends sqlite,postgresql,mysql]

PostgreSQL and MariaDB are reached through TEST_POSTGRESQL_URL / TEST_MYSQL_URL (defaults:
this machine's servers).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TEST_POSTGRESQL_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
os.environ.setdefault("TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test")

from benchmarks.before_after import worktrees  # noqa: E402
from benchmarks.chain_overhead import environ, install_base  # noqa: E402
from benchmarks.pairs import Cost, as_installed, cost, ratios  # noqa: E402
from benchmarks.upgrade_overhead import fresh_database  # noqa: E402
from tests.chains import trivial_chain  # noqa: E402

COMMAND = (
    "import sys, upgrader; from pathlib import Path; "
    "assert Path(upgrader.__file__).is_relative_to(sys.argv[1]), upgrader.__file__; "
    "from upgrader.cli.script import main; sys.argv[0:2] = ['upgrader']; main()"
)


def upgrade(tree: Path, backend: str, chain: Path, workdir: Path) -> Cost:
    """One `upgrade` of `tree`'s upgrader on a fresh database at the chain's first revision."""
    with fresh_database(backend, workdir) as url:
        install_base(url, chain, workdir, "v0001")
        env = {**environ(url, chain, workdir, "v0001"), "PYTHONPATH": str(tree)}
        argv = [sys.executable, "-P", "-c", COMMAND, str(tree), "upgrade", "--yes", "--no-backup"]
        return cost(argv, env)


def compare(trees: list[Path], backend: str, chain: Path, rounds: int, workdir: Path) -> str:
    pairs: list[tuple[Cost, Cost]] = []
    for i in range(rounds):
        order = (0, 1) if i % 2 == 0 else (1, 0)
        spent = {side: upgrade(trees[side], backend, chain, workdir) for side in order}
        pairs.append((spent[0], spent[1]))
    return ratios(pairs)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("base", help="A: the git revision to compare against")
    parser.add_argument("head", nargs="?", default="HEAD", help="B (default: HEAD)")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--revisions", type=int, default=500)
    parser.add_argument("--backends", default="sqlite,postgresql,mysql")
    args = parser.parse_args()
    place = Path(tempfile.mkdtemp(prefix="chain-before-after-"))
    with worktrees([args.base, args.head], place) as trees:
        chain = trivial_chain(place / "chain", args.revisions)
        as_installed({}, chain, *(tree / "upgrader" for tree in trees))
        print(f"A = {args.base}, B = {args.head}; {args.revisions} trivial revisions, B/A")
        for backend in args.backends.split(","):
            line = compare(trees, backend, chain, args.rounds, place)
            print(f"{backend:<11} {line}", flush=True)


if __name__ == "__main__":
    main()
