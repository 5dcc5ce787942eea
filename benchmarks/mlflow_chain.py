"""upgrader on a public project's chain, against the project's own upgrade command.

MLflow's tracking database (mlflow-skinny 3.18.0) has an Alembic chain of 70 revisions,
with its own env.py and a revision that imports MLflow itself. Each measurement gets a
database of its own at revision 31 (`bda7b8c39065`, "release 1.0.0" here), with data in
the tables that exist there (experiments, runs and their metrics, latest metrics,
parameters and tags), recorded by `upgrader adopt`; then 39 revisions are pending:

- A: MLflow's own upgrade function, `mlflow.store.db.utils._upgrade_db(engine)`
  (`alembic upgrade heads` through its env.py on one connection), called from a
  three-line `python -c`; and `mlflow db upgrade URL`, the command MLflow documents,
  which loads much more of MLflow;
- B: `upgrader upgrade --yes --no-backup` with UPGRADER_MIGRATIONS naming MLflow's
  migrations, as installed by pip.

Interleaved pairs (A, B, then B, A…), CPU (the commands' and their children's) beside wall
time; the median of the per-pair ratios B/A with their spread. Goal: <= 1.05.

    python3 benchmarks/mlflow_chain.py [--rounds 15] [--runs 2000]
        [--backends sqlite,postgresql,mysql] [--against "_upgrade_db(),mlflow db upgrade"]

MLflow is not one of upgrader's dependencies: the script makes a virtual environment of
its own (~/.cache/upgrader-benchmarks/mlflow-3.18.0: mlflow-skinny, this checkout with its
database drivers, pytest for the tests' helpers) on first use, and runs itself there.
PostgreSQL and MariaDB are reached through TEST_POSTGRESQL_URL / TEST_MYSQL_URL (defaults:
this machine's servers).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MLFLOW = "mlflow-skinny==3.18.0"
VENV = Path.home() / ".cache" / "upgrader-benchmarks" / "mlflow-3.18.0"
BASE = "bda7b8c39065"  # revision 31 of 70
HEAD = "f4a9b2c7d1e6"
HEAD_COUNT, PENDING = 70, 39


def in_own_environment() -> None:
    """Run this script in a virtual environment that has MLflow, made on first use."""
    python = VENV / "bin" / "python"
    if Path(sys.executable).parent == python.parent:
        return
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", MLFLOW, "pytest",
             "-e", f"{ROOT}[postgresql,mysql]"],
            check=True,
        )  # fmt: skip
    os.execv(str(python), [str(python), __file__, *sys.argv[1:]])


if __name__ == "__main__":
    in_own_environment()

sys.path.insert(0, str(ROOT))
os.environ.setdefault("TEST_POSTGRESQL_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
os.environ.setdefault("TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test")

from alembic import command  # noqa: E402
from sqlalchemy import Engine, MetaData, create_engine, insert, text  # noqa: E402

from benchmarks.chain_overhead import environ as chain_environ  # noqa: E402
from benchmarks.chain_overhead import summary  # noqa: E402
from benchmarks.pairs import Cost, as_installed, cost, interleaved  # noqa: E402
from benchmarks.upgrade_overhead import fresh_database  # noqa: E402

BIN = Path(sys.executable).parent


def migrations() -> Path:
    import mlflow.store.db_migrations  # MLflow is there only in the benchmark's environment

    return Path(mlflow.store.db_migrations.__file__).parent


def environ(url: str, workdir: Path) -> dict[str, str]:
    """upgrader's settings for MLflow's chain: release 1.0.0 is BASE, the code is 2.0.0."""
    return chain_environ(url, migrations(), workdir, BASE)


def prepare(url: str, runs: int, workdir: Path) -> None:
    """MLflow's first schema, its chain up to BASE, data, and upgrader's record of it."""
    from mlflow.store.db.utils import _get_alembic_config
    from mlflow.store.tracking.dbmodels.initial_models import Base as InitialBase

    engine = create_engine(url)
    InitialBase.metadata.create_all(engine)
    config = _get_alembic_config(url)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, BASE)
    fill(engine, runs)
    engine.dispose()
    cost([str(BIN / "upgrader"), "adopt", "--version", "1.0.0", "--yes"], environ(url, workdir))


def fill(engine: Engine, runs: int) -> None:
    """Experiments, runs, and per run metrics, latest metrics, parameters and tags."""
    md = MetaData()
    md.reflect(engine)
    t = md.tables
    start = 1_700_000_000_000
    experiments = [
        {"experiment_id": i, "name": f"experiment {i}", "artifact_location": f"/a/{i}",
         "lifecycle_stage": "active", "creation_time": start, "last_update_time": start}
        for i in range(1, 21)
    ]  # fmt: skip
    run_rows, metrics, latest, params, tags = [], [], [], [], []
    for r in range(runs):
        run = uuid.UUID(int=r + 1).hex
        run_rows.append(
            {"run_uuid": run, "name": f"run {r}", "source_type": "LOCAL", "source_name": "x.py",
             "entry_point_name": "main", "user_id": "bench", "status": "FINISHED",
             "start_time": start + r, "end_time": start + r + 1000, "source_version": "1",
             "lifecycle_stage": "active", "artifact_uri": f"/a/{run}",
             "experiment_id": r % 20 + 1}
        )  # fmt: skip
        for k in range(5):
            for step in range(2):
                metrics.append(
                    {"key": f"m{k}", "value": r * 0.5 + k, "timestamp": start + step,
                     "step": step, "is_nan": False, "run_uuid": run}
                )  # fmt: skip
            latest.append(
                {"key": f"m{k}", "value": r * 0.5 + k, "timestamp": start + 1, "step": 1,
                 "is_nan": False, "run_uuid": run}
            )  # fmt: skip
            params.append({"key": f"p{k}", "value": str(r * k), "run_uuid": run})
        tags += [{"key": f"t{k}", "value": f"tag {r}", "run_uuid": run} for k in range(3)]
    with engine.begin() as conn:
        for name, rows in (
            ("experiments", experiments), ("runs", run_rows), ("metrics", metrics),
            ("latest_metrics", latest), ("params", params), ("tags", tags),
        ):  # fmt: skip
            conn.execute(insert(t[name]), rows)


OWN_FUNCTION = (
    "import sys; from sqlalchemy import create_engine; "
    "from mlflow.store.db.utils import _upgrade_db; _upgrade_db(create_engine(sys.argv[1]))"
)


def command_of(which: str, url: str) -> list[str]:
    if which == "upgrader":
        return [str(BIN / "upgrader"), "upgrade", "--yes", "--no-backup"]
    if which == "mlflow db upgrade":
        return [str(BIN / "mlflow"), "db", "upgrade", url]
    return [str(BIN / "python"), "-c", OWN_FUNCTION, url]  # the function alone


def measure(backend: str, runs: int, workdir: Path, which: str) -> Cost:
    """(CPU, wall) of one upgrade on a fresh database, which must end at MLflow's head."""
    with fresh_database(backend, workdir) as url:
        prepare(url, runs, workdir)
        spent = cost(command_of(which, url), environ(url, workdir))
        engine = create_engine(url)
        with engine.connect() as conn:
            at = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
        engine.dispose()
        assert at == [HEAD], (which, at)
        return spent


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--backends", default="sqlite,postgresql,mysql")
    parser.add_argument("--against", default="_upgrade_db(),mlflow db upgrade")
    args = parser.parse_args()
    as_installed({}, ROOT / "upgrader", migrations())
    print(
        f"MLflow ({MLFLOW}): {PENDING} of {HEAD_COUNT} revisions pending, {args.runs} runs "
        f"with {args.runs * 10} metrics; {args.rounds} interleaved pairs; goal <= 1.05"
    )
    with tempfile.TemporaryDirectory(prefix="upgrader-mlflow-") as tmp:
        for backend in args.backends.split(","):
            for theirs in args.against.split(","):
                pairs = interleaved(
                    lambda: measure(backend, args.runs, Path(tmp), theirs),  # noqa: B023
                    lambda: measure(backend, args.runs, Path(tmp), "upgrader"),  # noqa: B023
                    args.rounds,
                )
                print(f"{backend:<11} upgrade vs {theirs:<18} {summary(pairs)}", flush=True)


if __name__ == "__main__":
    main()
