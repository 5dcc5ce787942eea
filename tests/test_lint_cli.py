"""`upgrader lint` on a chain nobody here wrote the way the sample is written (Alembic's
generic env.py): findings per revision, acknowledgements, a revision that cannot be
rendered offline, the exit statuses a project's CI reads, and the printed output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests import chains
from tests.helpers import MIGRATIONS
from upgrader.sample.releases import CURRENT

REVISIONS = [
    ("r1", 'op.create_table("books", sa.Column("id", sa.Integer, primary_key=True),\n'
           '    sa.Column("title", sa.String(200)), sa.Column("isbn", sa.String(20)))\n'),
    ("r2", 'op.add_column("books", sa.Column("pages", sa.Integer))\n'),
    ("r3", 'op.drop_column("books", "isbn")\n'),
    ("r4", 'op.create_index("ix_books_title", "books", ["title"])\n'),
    ("r5", 'rows = op.get_bind().execute(sa.text("SELECT id FROM books")).fetchall()\n'),
]  # fmt: skip
EXTRA = {
    "r3": 'upgrader_phase = "online"\n',
    "r4": 'upgrader_safe = {"index-not-concurrent": "books holds 40 rows", '
    '"require-concurrent-index-creation": "books holds 40 rows"}\n',
}


def chain(root: Path) -> Path:
    chains.environment(root)
    down = None
    for revision, body in REVISIONS:
        chains.write_revision(root / "versions", revision, down, body)
        path = root / "versions" / f"{revision}.py"
        path.write_text(path.read_text() + "\n\n" + EXTRA.get(revision, ""))
        down = revision
    return root


def upgrader(tmp: Path, migrations: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UPGRADER_")}
    env.update(
        UPGRADER_DATABASE_URL=f"sqlite:///{tmp / 'app.db'}",
        UPGRADER_MIGRATIONS=str(migrations),
        UPGRADER_CODE_VERSION="1.0.0",
        UPGRADER_INSTALLER_DIR=str(tmp / "none"),
    )
    return subprocess.run(
        [sys.executable, "-m", "upgrader", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp,
    )


def by_revision(out: str) -> dict[str, dict[str, object]]:
    return {r["revision"]: r for r in json.loads(out)["revisions"]}


def test_findings_per_revision_on_postgresql(tmp_path: Path) -> None:
    done = upgrader(tmp_path, chain(tmp_path / "m"), "lint", "--all", "--dialect", "postgresql",
                    "--json")  # fmt: skip
    assert done.returncode == 1, done.stderr
    found = by_revision(done.stdout)
    assert found["r1"]["findings"] == [] and found["r1"]["suggested_phase"] == "online"
    assert found["r2"]["findings"] == []  # a nullable column: expand
    r3 = found["r3"]
    assert r3["declared_phase"] == "online" and r3["suggested_phase"] == "post-deploy"
    assert {f["kind"] for f in r3["findings"]} == {"contract"}  # type: ignore[attr-defined]
    assert any("isbn" in f["statement"] for f in r3["findings"])  # type: ignore[attr-defined]
    r4 = found["r4"]["findings"]
    assert r4 and all(f["acknowledged"] == "books holds 40 rows" for f in r4)  # type: ignore[attr-defined]
    assert found["r4"]["suggested_phase"] == "online"
    assert "not checked" in str(found["r5"]["not_checked"])


def test_the_printed_report_and_each_dialect(tmp_path: Path) -> None:
    migrations = chain(tmp_path / "m")
    done = upgrader(tmp_path, migrations, "lint", "r3", "--dialect", "mysql")
    assert done.returncode == 1
    assert "r3  revision r3  (declared online, suggested post-deploy)" in done.stdout
    assert "[contract] drop-column: ALTER TABLE books DROP COLUMN isbn" in done.stdout
    assert "safe way: stop using the column first" in done.stdout
    sqlite = upgrader(tmp_path, migrations, "lint", "r4", "--dialect", "sqlite", "--json")
    assert sqlite.returncode == 0  # no lock worth a finding on SQLite
    assert by_revision(sqlite.stdout)["r4"]["findings"] == []


def test_clean_revisions_exit_0_and_usage_64(tmp_path: Path) -> None:
    migrations = chain(tmp_path / "m")
    clean = upgrader(tmp_path, migrations, "lint", "r1", "r2", "--dialect", "postgresql")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "Clean: nothing breaks the release still serving." in clean.stdout
    unknown = upgrader(tmp_path, migrations, "lint", "nope")
    assert unknown.returncode == 64
    assert "unknown revision(s): nope" in unknown.stderr
    dialect = upgrader(tmp_path, migrations, "lint", "--all", "--dialect", "oracle")
    assert dialect.returncode == 64


def test_pending_revisions_by_default(tmp_path: Path) -> None:
    migrations = chain(tmp_path / "m")
    installed = upgrader(tmp_path, migrations, "install", "--release", "1.0.0", "--yes")
    assert installed.returncode == 0, installed.stdout + installed.stderr
    nothing = upgrader(tmp_path, migrations, "lint")
    assert nothing.returncode == 0
    assert "Nothing to lint: no revision is pending." in nothing.stdout


def test_the_sample_chain_lints_without_an_error(tmp_path: Path) -> None:
    for dialect in ("postgresql", "mysql", "sqlite"):
        env = {k: v for k, v in os.environ.items() if not k.startswith("UPGRADER_")}
        env.update(
            UPGRADER_DATABASE_URL=f"sqlite:///{tmp_path / 'shelf.db'}",
            UPGRADER_MIGRATIONS=str(MIGRATIONS),
            UPGRADER_CODE_VERSION=CURRENT,
        )
        done = subprocess.run(
            [sys.executable, "-m", "upgrader", "lint", "--all", "--dialect", dialect, "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode in (0, 1), done.stderr  # findings, not an error
        report = json.loads(done.stdout)
        assert [r["revision"] for r in report["revisions"]] == [
            "0001_initial",
            "0002_loans_isbn",
            "0003_sort_names",
        ]
        # 2.0.0's data migration computes values in Python: said, not passed
        assert "not checked" in report["revisions"][2]["not_checked"]


def test_an_env_py_that_fails_before_any_revision_is_said_plainly(tmp_path: Path) -> None:
    migrations = chain(tmp_path / "m")
    env_py = migrations / "env.py"
    env_py.write_text("import the_application_package  # not installed here\n" + env_py.read_text())
    done = upgrader(tmp_path, migrations, "lint", "--all", "--dialect", "postgresql")
    assert done.returncode == 1
    assert "internal error" not in done.stderr
    assert "env.py failed in Alembic's offline mode before any revision" in done.stderr
    assert "ModuleNotFoundError" in done.stderr
