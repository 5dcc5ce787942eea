"""Every state and every oddity, built for real on each database, read through `status --json`."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select

from tests.helpers import SAMPLE, add_run, cli_args, execute, install, migrate, run_cli
from upgrader.core import times
from upgrader.core.tables import define_tables, ensure_tables
from upgrader.engine.locks import upgrade_lock
from upgrader.sample.releases import CURRENT


def nothing(url: str, tmp_path: Path) -> None:
    pass


def installed(release: str, **kw: bool) -> Callable[[str, Path], None]:
    def setup(url: str, tmp_path: Path) -> None:
        install(url, release, **kw)

    return setup


def then(*steps: Callable[[str, Path], None]) -> Callable[[str, Path], None]:
    def setup(url: str, tmp_path: Path) -> None:
        for step in steps:
            step(url, tmp_path)

    return setup


def sql(*statements: str) -> Callable[[str, Path], None]:
    return lambda url, tmp_path: execute(url, *statements)


def run(**values: object) -> Callable[[str, Path], None]:
    return lambda url, tmp_path: add_run(url, **values)


_HELD = contextlib.ExitStack()


@pytest.fixture(autouse=True)
def _release_held_locks() -> Iterator[None]:
    yield
    _HELD.close()


def alive(url: str, tmp_path: Path) -> None:
    """A run is alive while its process holds the upgrade lock: hold it like one."""
    engine = create_engine(url)
    _HELD.callback(engine.dispose)
    _HELD.enter_context(upgrade_lock(engine))


def foreign_tables(url: str, tmp_path: Path) -> None:
    execute(url, "CREATE TABLE customers (id INTEGER PRIMARY KEY, name VARCHAR(50))")


def guard_tables(url: str, tmp_path: Path) -> None:
    engine = create_engine(url)
    ensure_tables(engine, define_tables())
    engine.dispose()


def damaged_state_table(url: str, tmp_path: Path) -> None:
    execute(url, "ALTER TABLE upgrader_state DROP COLUMN updated_at")


EXPIRED = times.utcnow() - dt.timedelta(minutes=10)


@dataclass
class Case:
    setup: Callable[[str, Path], None]
    state: str
    exit: int
    code: str | None = None
    release: str = CURRENT  # the code deployed
    fix: tuple[str, ...] = ()  # substrings the fix must contain
    details: tuple[str, ...] = ()  # substrings the details must contain
    fields: dict[str, object] = field(default_factory=dict)


CASES: dict[str, Case] = {
    "ok": Case(
        installed(CURRENT), "ok", 0, fields={"schema_version": CURRENT, "pending_revisions": []}
    ),
    "not_installed_empty": Case(nothing, "not_installed", 4, fix=("/install", " install`")),
    "not_installed_foreign_tables": Case(
        foreign_tables, "not_installed", 4, details=("customers", "no version information")
    ),
    "upgrade_pending": Case(
        installed("1.0.0"),
        "upgrade_pending",
        2,
        "Err2",
        fix=(" upgrade`", "/install"),
        fields={"schema_version": "1.0.0", "database_revisions": ["0001_initial"]},
    ),
    "upgrade_running": Case(
        then(installed("1.0.0"), run(), alive),
        "upgrade_running",
        2,
        "Err2",
        fix=("web-1", "4242"),
        details=("step 1 of 2",),
    ),
    "upgrade_interrupted": Case(
        then(installed("1.0.0"), run(lease_expires_at=EXPIRED)),
        "upgrade_interrupted",
        2,
        "Err2",
        fix=("resumes from revision 0001_initial",),
        details=("stopped at step 1 of 2",),
    ),
    "upgrade_failed": Case(
        then(
            installed("1.0.0"),
            run(
                status="failed", error="IntegrityError: duplicate key", backup_path="/srv/b.sqlite"
            ),
        ),
        "upgrade_failed",
        2,
        "Err2",
        fix=("/srv/b.sqlite", " restore "),
        details=("IntegrityError: duplicate key",),
    ),
    "database_ahead_revision": Case(
        installed(CURRENT),
        "database_ahead",
        3,
        "Err3",
        release="1.1.0",
        fix=("Deploy version 2.0.1",),
        details=("0003_sort_names",),
    ),
    "database_ahead_version_only": Case(
        installed(CURRENT),
        "database_ahead",
        3,
        "Err3",
        release="2.0.0",
        fix=("Deploy version 2.0.1",),
        details=("revisions agree",),
    ),
    "unknown_revision": Case(
        then(installed("1.1.0"), sql("UPDATE alembic_version SET version_num = 'ffff0000'")),
        "schema_unknown",
        3,
        "Err3",
        details=("ffff0000", "not part of this code"),
    ),
    "several_state_rows": Case(
        then(
            installed(CURRENT),
            sql(
                "INSERT INTO upgrader_state (id, schema_version, "
                "maintenance_mode) VALUES (2, '1.0.0', 'off')"
            ),
        ),
        "schema_unknown",
        3,
        "Err3",
        fix=("adopt --version 2.0.1",),
        details=("2 rows",),
    ),
    "unparseable_version": Case(
        then(
            installed(CURRENT), sql("UPDATE upgrader_state SET schema_version = '8.6.2-release.1'")
        ),
        "schema_unknown",
        3,
        "Err3",
        fix=("adopt --version",),
        details=("'8.6.2-release.1'", "PEP 440"),
    ),
    "state_without_alembic_version": Case(
        then(installed(CURRENT), sql("DROP TABLE alembic_version")),
        "schema_unknown",
        3,
        "Err3",
        fix=(" stamp 0003_sort_names`",),
        details=("alembic_version is missing",),
    ),
    "overlapping_database_heads": Case(
        then(
            installed("1.1.0"),
            sql("INSERT INTO alembic_version (version_num) VALUES ('0001_initial')"),
        ),
        "schema_unknown",
        3,
        "Err3",
        fix=("stamp --purge 0002_loans_isbn",),
        details=("overlapping",),
    ),
    "unadopted_at_head": Case(
        installed(CURRENT, record=False),
        "upgrade_pending",
        2,
        "Err2",
        fix=(" adopt`",),
        details=("no upgrader state",),
    ),
    "unadopted_behind": Case(
        installed("1.0.0", record=False),
        "upgrade_pending",
        2,
        "Err2",
        fix=("adopts the database and applies 2",),
    ),
    "alembic_version_empty": Case(
        then(lambda url, p: migrate(url, "0001_initial"), sql("DELETE FROM alembic_version")),
        "not_installed",
        4,
        details=("alembic_version exists but is empty",),
    ),
    "maintenance": Case(
        then(
            installed(CURRENT),
            sql(
                "UPDATE upgrader_state SET maintenance_mode = 'block', "
                "maintenance_message = 'Back at 9pm'"
            ),
        ),
        "maintenance",
        5,
        fix=("maintenance off",),
        fields={"summary": "Back at 9pm"},
    ),
    "maintenance_banner_keeps_site_up": Case(
        then(installed(CURRENT), sql("UPDATE upgrader_state SET maintenance_mode = 'banner'")),
        "ok",
        0,
    ),
    "corrupt_maintenance_mode_blocks": Case(
        then(installed(CURRENT), sql("UPDATE upgrader_state SET maintenance_mode = 'sometimes'")),
        "maintenance",
        5,
        details=("unknown maintenance mode 'sometimes'",),
    ),
    "damaged_state_table": Case(
        then(installed(CURRENT), damaged_state_table),
        "schema_unknown",
        3,
        "Err3",
        details=("cannot be read",),
    ),
    "install_running_on_empty_database": Case(
        then(
            guard_tables,
            run(kind="install", from_version=None, step=0, steps=3),
            alive,
        ),
        "upgrade_running",
        2,
        "Err2",
    ),
    "interrupted_run_that_had_finished": Case(
        then(installed(CURRENT), run(lease_expires_at=EXPIRED)),
        "ok",
        0,
        details=("never closed",),
    ),
    "old_failure_superseded_by_success": Case(
        then(installed(CURRENT), run(status="failed"), run(status="succeeded")),
        "ok",
        0,
    ),
}


@pytest.mark.parametrize("name", CASES)
def test_state(name: str, db_url: str, tmp_path: Path) -> None:
    case = CASES[name]
    case.setup(db_url, tmp_path)
    result = run_cli(*cli_args(db_url, tmp_path, case.release), "status", "--json")
    status = json.loads(result.output)
    assert (status["state"], status["code"], result.exit_code) == (case.state, case.code, case.exit)
    assert status["code_version"] == case.release
    for part in case.fix:
        assert part in status["fix"], status["fix"]
    for part in case.details:
        assert any(part in d for d in status["details"]), status["details"]
    for key, value in case.fields.items():
        assert status[key] == value
    for key in (
        "state",
        "code",
        "code_version",
        "schema_version",
        "database_revisions",
        "code_heads",
        "pending_revisions",
        "maintenance",
        "run",
        "installer_present",
        "summary",
        "fix",
    ):
        assert key in status
    # The human form agrees with the JSON form.
    text = run_cli(*cli_args(db_url, tmp_path, case.release), "status")
    assert text.exit_code == case.exit
    assert case.state in text.output


def test_pending_lists_revisions_with_messages(db_url: str, tmp_path: Path) -> None:
    install(db_url, "1.0.0")
    status = json.loads(run_cli(*cli_args(db_url, tmp_path), "status", "--json").output)
    assert status["pending_revisions"] == [
        {
            "revision": "0002_loans_isbn",
            "message": "Release 1.1.0: loans table and an ISBN for each book",
            "phase": "blocking",  # the sample declares nothing: the site waits for them
        },
        {
            "revision": "0003_sort_names",
            "message": "Release 2.0.0: file authors by family name, ISBN-13 everywhere",
            "phase": "blocking",
        },
    ]


def test_release_without_migrations_is_recorded_once(db_url: str, tmp_path: Path) -> None:
    install(db_url, "2.0.0")  # 2.0.1 ships no migration
    first = run_cli(*cli_args(db_url, tmp_path), "status", "--json")
    status = json.loads(first.output)
    assert (status["state"], status["schema_version"], first.exit_code) == ("ok", "2.0.1", 0)
    assert any("adds no migrations" in d for d in status["details"])
    run_cli(*cli_args(db_url, tmp_path), "status", "--json")
    engine = create_engine(db_url)
    with engine.connect() as conn:
        runs = define_tables().runs
        rows = conn.execute(select(runs.c.kind, runs.c.from_version, runs.c.to_version)).all()
    engine.dispose()
    assert [tuple(r) for r in rows] == [("version", "2.0.0", "2.0.1")]


def test_doctor_does_not_record(db_url: str, tmp_path: Path) -> None:
    install(db_url, "2.0.0")
    report = json.loads(run_cli(*cli_args(db_url, tmp_path), "doctor", "--json").output)
    assert report["status"]["schema_version"] == "2.0.0"
    assert any("is to be recorded" in d for d in report["status"]["details"])
    assert report["runs"] == []


def test_adopt_an_alembic_database(db_url: str, tmp_path: Path) -> None:
    install(db_url, CURRENT, record=False)
    args = cli_args(db_url, tmp_path)
    assert run_cli(*args, "adopt", input="n\n").exit_code == 1  # declined: nothing written
    assert run_cli(*args, "status").exit_code == 2
    result = run_cli(*args, "adopt", "--yes")
    assert result.exit_code == 0, result.output
    status = json.loads(run_cli(*args, "status", "--json").output)
    assert (status["state"], status["schema_version"]) == ("ok", CURRENT)
    assert status["run"]["kind"] == "adopt"


def test_adopt_repairs_several_rows_and_keeps_maintenance(db_url: str, tmp_path: Path) -> None:
    install(db_url, CURRENT)
    execute(
        db_url,
        "UPDATE upgrader_state SET maintenance_mode = 'banner', maintenance_message = 'Friday'",
        "INSERT INTO upgrader_state (id, schema_version, maintenance_mode) "
        "VALUES (7, 'junk', 'off')",
    )
    args = cli_args(db_url, tmp_path)
    assert run_cli(*args, "adopt", "--yes", "--version", CURRENT).exit_code == 0
    status = json.loads(run_cli(*args, "status", "--json").output)
    assert status["state"] == "ok"
    assert status["maintenance"]["mode"] == "banner"
    assert status["maintenance"]["message"] == "Friday"


def test_adopt_refuses_a_false_version(db_url: str, tmp_path: Path) -> None:
    install(db_url, "1.0.0", record=False)
    args = cli_args(db_url, tmp_path)
    refused = run_cli(*args, "adopt", "--yes")
    assert refused.exit_code == 1 and "not at the code's head" in refused.output
    wrong = run_cli(*args, "--app", SAMPLE, "adopt", "--yes", "--version", "1.1.0")
    assert wrong.exit_code == 1 and "ends at revision 0002_loans_isbn" in wrong.output
    assert run_cli(*args, "status").exit_code == 2
    right = run_cli(*args, "adopt", "--yes", "--version", "1.0.0")
    assert right.exit_code == 0, right.output
    status = json.loads(run_cli(*args, "status", "--json").output)
    assert (status["state"], status["schema_version"]) == ("upgrade_pending", "1.0.0")
