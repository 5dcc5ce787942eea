"""The decision itself, on plain facts: version semantics and code-side oddities."""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
from pathlib import Path

import pytest

from tests.helpers import MIGRATIONS, code_with, extra_revision, run_cli
from upgrader.core.diagnosis import CodeFacts, State, decide, load_code_facts
from upgrader.core.facts import DatabaseFacts
from upgrader.core.records import Maintenance, StateRow
from upgrader.core.revisions import Revision, RevisionGraph
from upgrader.core.versions import compare, parse_version
from upgrader.settings import resolve

NOW = dt.datetime(2026, 11, 21, 12, 0, 0)
GRAPH = RevisionGraph(
    {
        "a": Revision("a", "first", (), 0),
        "b": Revision("b", "second", ("a",), 1),
    },
    ("b",),
)


def facts(
    version: str, revisions: tuple[str, ...] = ("b",), **maintenance: object
) -> DatabaseFacts:
    row = StateRow(1, version, NOW, NOW, Maintenance(**maintenance))  # type: ignore[arg-type]
    return DatabaseFacts(
        tables=("alembic_version", "upgrader_state"),
        has_version_table=True,
        revisions=revisions,
        has_state_table=True,
        states=(row,),
    )


def state(code_version: str, stored: str, revisions: tuple[str, ...] = ("b",)) -> State:
    code = CodeFacts(parse_version(code_version), GRAPH)
    return decide(code, facts(stored, revisions), now=NOW).state


@pytest.mark.parametrize(
    ("code", "stored", "expected"),
    [
        ("2.0.1", "2.0.1", State.OK),
        ("2.0.1+deb12u1", "2.0.1", State.OK),  # a local rebuild is the same release
        ("2.0.1", "2.0.1+deb12u1", State.OK),
        ("2.0.1", "2.0.1.0", State.OK),  # 2.0.1 == 2.0.1.0 under PEP 440
        ("2.0.1", "v2.0.1", State.OK),
        ("2.0.1", "2.0.1.post1", State.DATABASE_AHEAD),
        ("2.0.1", "2.0.2rc1", State.DATABASE_AHEAD),
        ("2.0.10", "2.0.9", State.OK),  # newer release without migration: recorded, ok
        ("2.0.9", "2.0.10", State.DATABASE_AHEAD),  # numeric, not string, order
        ("2.0.1", "2.0.1rc1", State.OK),  # final after its release candidate: recorded
        ("2.0.1", "2.0.1.dev3", State.OK),
        ("2.0.1", "8.6.2-release.1", State.SCHEMA_UNKNOWN),
        ("2.0.1", "", State.SCHEMA_UNKNOWN),
        ("latest", "2.0.1", State.SCHEMA_UNKNOWN),
    ],
)
def test_version_semantics_with_matching_revisions(code: str, stored: str, expected: State) -> None:
    assert state(code, stored) is expected


def test_newer_release_without_migration_is_marked_for_recording() -> None:
    d = decide(CodeFacts(parse_version("2.0.10"), GRAPH), facts("2.0.9"), now=NOW)
    assert d.version_to_record == "2.0.10"
    same = decide(CodeFacts(parse_version("2.0.1+local"), GRAPH), facts("2.0.1"), now=NOW)
    assert same.version_to_record is None


def test_pending_with_older_stored_version() -> None:
    d = decide(CodeFacts(parse_version("2.0.0"), GRAPH), facts("1.0.0", ("a",)), now=NOW)
    assert d.state is State.UPGRADE_PENDING
    assert [r.id for r in d.pending_revisions] == ["b"]


def test_stored_version_ahead_but_schema_behind_is_unknown() -> None:
    assert state("1.0.0", "2.0.0", ("a",)) is State.SCHEMA_UNKNOWN


def test_compare_ignores_local_labels_and_refuses_garbage() -> None:
    assert compare(parse_version("1.0+a"), parse_version("1.0+b")) == 0
    assert compare(parse_version("1.0a1"), parse_version("1.0")) == -1
    assert compare(parse_version("junk"), parse_version("1.0")) is None
    assert parse_version("8.6.2-release.1").error == "'8.6.2-release.1' is not a PEP 440 version"


def test_scheduled_maintenance_window() -> None:
    code = CodeFacts(parse_version("1.0"), GRAPH)
    later = facts(
        "1.0", mode="block", start=NOW + dt.timedelta(hours=1), end=NOW + dt.timedelta(hours=2)
    )
    assert decide(code, later, now=NOW).state is State.OK
    assert decide(code, later, now=NOW + dt.timedelta(minutes=90)).state is State.MAINTENANCE
    assert decide(code, later, now=NOW + dt.timedelta(hours=3)).state is State.OK


def test_an_accidental_split_of_one_branch_is_err3(tmp_path: Path) -> None:
    migrations = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, migrations, ignore=shutil.ignore_patterns("__pycache__"))
    (migrations / "versions" / "0003b_branch.py").write_text(
        '"""a hotfix branched off 1.1.0"""\nrevision = "0003b_branch"\n'
        'down_revision = "0002_loans_isbn"\nbranch_labels = None\ndepends_on = None\n\n'
        "def upgrade():\n    pass\n"
    )
    url = f"sqlite:///{tmp_path / 'app.db'}"
    result = run_cli(
        "--database-url", url, "--migrations", str(migrations), "--code-version", "2.0.1", "status"
    )
    assert result.exit_code == 3
    assert "split one branch" in result.output
    assert "0003_sort_names and 0003b_branch" in result.output
    assert "alembic merge -m merge 0003_sort_names 0003b_branch" in result.output


def test_missing_migrations_directory_is_err3(tmp_path: Path) -> None:
    settings = resolve(
        {"database_url": "sqlite://", "migrations": str(tmp_path / "nope"), "code_version": "1.0"},
        environ={},
    )
    code = load_code_facts(settings)
    assert code.error and "is not a directory" in code.error
    result = run_cli(
        "--database-url",
        f"sqlite:///{tmp_path}/x.db",
        "--migrations",
        str(tmp_path / "nope"),
        "--code-version",
        "1.0",
        "status",
    )
    assert result.exit_code == 3


def test_broken_revision_file_is_err3(tmp_path: Path) -> None:
    migrations = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, migrations, ignore=shutil.ignore_patterns("__pycache__"))
    (migrations / "versions" / "0004_broken.py").write_text(
        "revision = '0004'\nthis is not python\n"
    )
    result = run_cli(
        "--database-url",
        f"sqlite:///{tmp_path}/x.db",
        "--migrations",
        str(migrations),
        "--code-version",
        "2.0.1",
        "status",
        "--json",
    )
    assert result.exit_code == 3
    assert "migrations cannot be read" in result.output


def test_the_fix_names_the_web_installer_only_while_it_is_there() -> None:
    code = CodeFacts(parse_version("2.0.0"), GRAPH)
    facts_ = facts("1.0.0", ("a",))
    there = decide(code, facts_, now=NOW, installer_present=True)
    gone = decide(code, facts_, now=NOW, installer_present=False, installer_dir="/srv/i")
    assert there.fix == "Open /install in a browser, or run `upgrader upgrade`."
    assert gone.fix.startswith("Run `upgrader upgrade` on the server")
    assert "its directory /srv/i is not there; copy the release's install/" in gone.fix
    none = decide(code, facts_, now=NOW, installer_present=False)
    assert "no installer directory is configured" in none.fix


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('    op.drop_table("upgrader_runs")', {"upgrader_runs"}),
        (  # inside a block and a nested function, by keyword
            "    def inner():\n"
            '        with op.batch_alter_table("upgrader_state") as batch:\n'
            '            batch.drop_column("note")\n'
            '        op.drop_index("ix", table_name="upgrader_steps")\n'
            "    inner()",
            {"upgrader_state", "upgrader_steps"},
        ),
        ('    """Leaves upgrader_runs alone."""\n    op.drop_table("books")', set()),
        ('    # op.drop_table("upgrader_runs")\n    op.drop_table("books")', set()),
    ],
)
def test_a_revision_that_would_change_upgraders_tables_is_found(
    tmp_path: Path, body: str, expected: set[str]
) -> None:
    """Read from the literals of the upgrade() Alembic loaded, then from its source."""
    code = code_with(tmp_path, "code", extra=extra_revision(body))
    flags = {"database_url": "sqlite://", "migrations": str(code), "code_version": "2.1.0"}
    graph = load_code_facts(resolve(flags, environ={})).graph
    assert graph is not None
    revision = graph.revisions["0004_extra"]
    assert revision.code is not None
    ours = frozenset({"upgrader_runs", "upgrader_state", "upgrader_steps"})
    assert revision.changes(ours) == expected
    without_code = dataclasses.replace(revision, code=None)  # from the file's text alone
    assert without_code.changes(ours) == expected
