"""The upgrade engine on SQLite, PostgreSQL and MariaDB: real runs, real failures, real kills."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select

from tests.helpers import (
    MIGRATIONS,
    SAMPLE,
    add_run,
    cli_args,
    code_with,
    content,
    execute,
    extra_revision,
    install,
    journal_of,
    progress_lines,
    run_cli,
    status_of,
)
from upgrader.core.tables import define_tables
from upgrader.engine.locks import upgrade_lock
from upgrader.sample.data import AUTHORS, BOOKS
from upgrader.sample.releases import CURRENT
from upgrader.sample.text import isbn13, sort_name
from upgrader.settings import resolve


def upgrade_args(
    url: str, tmp_path: Path, migrations: Path = MIGRATIONS, version: str = CURRENT
) -> list[str]:
    return ["--database-url", url, "--migrations", str(migrations), "--code-version", version]


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"UPGRADER_BACKUP_DIR": str(tmp_path / "backups"), **extra}


journal = journal_of


def steps(url: str) -> list[dict[str, Any]]:
    engine = create_engine(url)
    tables = define_tables()
    try:
        with engine.connect() as conn:
            return [dict(r) for r in conn.execute(select(tables.steps)).mappings()]
    finally:
        engine.dispose()


def test_full_upgrade_from_the_oldest_release_keeps_the_content(
    db_url: str, tmp_path: Path
) -> None:
    install(db_url, "1.0.0")
    before = content(db_url)
    result = run_cli(*upgrade_args(db_url, tmp_path), "upgrade", "--yes", env=env_for(tmp_path))
    assert result.exit_code == 0, result.output
    assert "[1/2] 0002_loans_isbn" in result.output and "[2/2] 0003_sort_names" in result.output
    # the sample's env.py commits each revision on its own (transaction_per_migration), on
    # PostgreSQL too: each is "done" before the next begins
    assert progress_lines(result.output) == ["[1/2]", "done in", "[2/2]", "done in"], result.output
    status = status_of(db_url, tmp_path)
    assert (status["state"], status["schema_version"]) == ("ok", CURRENT)
    after = content(db_url)
    assert len(after["authors"]) == len(before["authors"]) == len(AUTHORS)
    assert len(after["books"]) == len(before["books"]) == len(BOOKS)
    engine = create_engine(db_url)
    with engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT id, name, sort_name FROM authors").all()
        books = conn.exec_driver_sql("SELECT id, title, author_id, year FROM books").all()
    engine.dispose()
    assert {r[0]: (r[1], r[2]) for r in rows} == {i: (n, sort_name(n)) for i, n in AUTHORS}
    assert sorted(tuple(b) for b in books) == sorted((i, t, a, y) for i, t, a, y, _ in BOOKS)
    run = journal(db_url)[0]
    assert (run["kind"], run["status"], run["step"], run["steps"]) == ("upgrade", "succeeded", 2, 2)
    assert run["from_version"] == "1.0.0" and run["to_version"] == CURRENT
    assert run["backup_path"] and Path(run["backup_path"]).is_file()
    assert run["backup_checksum"] and run["backup_size"] > 0
    recorded = steps(db_url)
    assert [(s["position"], s["revision"], s["status"]) for s in recorded] == [
        (1, "0002_loans_isbn", "succeeded"),
        (2, "0003_sort_names", "succeeded"),
    ]
    assert all(s["duration"] is not None for s in recorded)


def test_data_migration_rewrites_isbns_of_existing_rows(db_url: str, tmp_path: Path) -> None:
    install(db_url, "1.1.0")
    result = run_cli(*upgrade_args(db_url, tmp_path), "upgrade", "--yes", "--no-backup")
    assert result.exit_code == 0, result.output
    got = {k: v for k, v in content(db_url).items() if k == "books"}["books"]
    assert sorted(r[-1] for r in got) == sorted(str(isbn13(b[4])) for b in BOOKS)


def test_failing_migration_then_fix_then_retry(db_url: str, tmp_path: Path) -> None:
    install(db_url, CURRENT)
    failing = extra_revision(
        '    op.add_column("books", sa.Column("shelf", sa.String(20)))\n'
        '    raise RuntimeError("disk quota exceeded while copying rows")'
    )
    code = code_with(tmp_path, "code-2.1.0", extra=failing)
    args = upgrade_args(db_url, tmp_path, code, "2.1.0")
    result = run_cli(*args, "upgrade", "--yes", env=env_for(tmp_path))
    assert result.exit_code == 1
    assert "disk quota exceeded" in result.output
    status = status_of(db_url, tmp_path, code, "2.1.0")
    assert (status["state"], status["code"]) == ("upgrade_failed", "Err2")
    assert any("disk quota exceeded" in d for d in status["details"])
    assert " restore " in status["fix"] and status["run"]["backup_path"] in status["fix"]
    assert status["run"]["step"] == 1 and status["run"]["revision"] == "0004_extra"
    if db_url.startswith("mysql"):
        assert "partly applied" in status["run"]["error"]
    # The lock is free again.
    engine = create_engine(db_url)
    with upgrade_lock(engine):
        pass
    engine.dispose()
    # Fix the migration (idempotent, as MySQL needs after a partial DDL) and retry.
    fixed = extra_revision(
        "    columns = sa.inspect(op.get_bind()).get_columns('books')\n"
        "    if 'shelf' not in [c['name'] for c in columns]:\n"
        '        op.add_column("books", sa.Column("shelf", sa.String(20)))'
    )
    (code / "versions" / "0004_extra.py").write_text(fixed)
    retry = run_cli(*args, "upgrade", "--yes", env=env_for(tmp_path))
    assert retry.exit_code == 0, retry.output
    status = status_of(db_url, tmp_path, code, "2.1.0")
    assert (status["state"], status["schema_version"]) == ("ok", "2.1.0")
    assert [r["status"] for r in journal(db_url)[:2]] == ["succeeded", "failed"]


def _spawn_upgrade(
    url: str, code: Path, tmp_path: Path, *extra: str, lease: str = "2"
) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UPGRADER_")}
    env.update(
        UPGRADER_DATABASE_URL=url,
        UPGRADER_MIGRATIONS=str(code),
        UPGRADER_CODE_VERSION=CURRENT,
        UPGRADER_LEASE_SECONDS=lease,
        UPGRADER_BACKUP_DIR=str(tmp_path / "backups"),
        UPGRADER_INSTALLER_DIR=str(tmp_path / "none"),
    )
    return subprocess.Popen(
        [sys.executable, "-m", "upgrader", "upgrade", "--yes", *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_for(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
@pytest.mark.parametrize("kill_at", [1, 2])
def test_sigkill_at_each_step_then_resume(kill_at: int, db_url: str, tmp_path: Path) -> None:
    install(db_url, "1.0.0")
    before = content(db_url)
    code = code_with(tmp_path, "slow", sleep=1.5)
    process = _spawn_upgrade(db_url, code, tmp_path, "--no-backup")

    def in_step() -> bool:
        try:
            runs = journal(db_url)
        except Exception:
            return False
        return bool(runs) and runs[0]["status"] == "running" and runs[0]["step"] == kill_at

    _wait_for(in_step, 60, f"step {kill_at}")
    process.send_signal(signal.SIGKILL)
    process.wait()
    # The lock dies with the process (SQLite's file lock, the server's session lock): the
    # run is interrupted at once, however long its lease.
    interrupted = status_of(db_url, tmp_path, code)
    assert interrupted["state"] == "upgrade_interrupted", interrupted
    assert interrupted["code"] == "Err2"
    expected_revision = "0001_initial" if kill_at == 1 else "0002_loans_isbn"
    assert interrupted["database_revisions"] == [expected_revision]
    assert f"resumes from revision {expected_revision}" in interrupted["fix"]
    rerun = _spawn_upgrade(db_url, code, tmp_path, "--no-backup")
    output, _ = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, output
    assert status_of(db_url, tmp_path, code)["state"] == "ok"
    after = content(db_url)
    assert {r[0]: r[1] for r in after["authors"]} == {r[0]: r[1] for r in before["authors"]}
    assert [r[:4] for r in after["books"]] == [r[:4] for r in before["books"]]
    statuses = [r["status"] for r in journal(db_url)]
    assert statuses[:2] == ["succeeded", "interrupted"]


@pytest.mark.slow
def test_eight_upgrades_at_once_one_runs(db_url: str, tmp_path: Path) -> None:
    install(db_url, "1.0.0")
    code = code_with(tmp_path, "slow", sleep=4)
    processes = [
        _spawn_upgrade(db_url, code, tmp_path, "--no-backup", lease="30") for _ in range(8)
    ]
    results = [(p.wait(timeout=180), p.stdout.read() if p.stdout else "") for p in processes]
    winners = [out for rc, out in results if rc == 0]
    losers = [(rc, out) for rc, out in results if rc != 0]
    assert len(winners) == 1, results
    assert "Upgraded to 2.0.1" in winners[0]
    assert len(losers) == 7
    for rc, out in losers:
        assert rc == 75, out
        assert "already running" in out
    assert status_of(db_url, tmp_path, code)["state"] == "ok"
    assert [r["kind"] for r in journal(db_url)] == ["upgrade"]


def test_backup_and_restore_round_trip(db_url: str, tmp_path: Path) -> None:
    install(db_url, CURRENT)
    before = content(db_url)
    args = upgrade_args(db_url, tmp_path)
    made = run_cli(*args, "backup", env=env_for(tmp_path))
    assert made.exit_code == 0, made.output
    path = made.output.splitlines()[0]
    execute(
        db_url,
        "DELETE FROM loans",
        "UPDATE books SET title = 'lost'",
        "CREATE TABLE scratch (id INTEGER PRIMARY KEY)",
    )
    assert content(db_url) != before
    declined = run_cli(*args, "restore", path, input="n\n", env=env_for(tmp_path))
    assert declined.exit_code == 1
    restored = run_cli(*args, "restore", "--yes", path, env=env_for(tmp_path))
    assert restored.exit_code == 0, restored.output
    assert content(db_url) == before
    assert journal(db_url)[0]["kind"] == "restore"
    assert status_of(db_url, tmp_path)["state"] == "ok"


def test_a_restore_is_an_entry_of_its_own_and_rewrites_no_history(
    db_url: str, tmp_path: Path
) -> None:
    """The upgrade's backup holds the journal as it was when it was taken: its own run, open
    at step 0. Restoring it leaves every earlier run as it ended (the upgrade succeeded),
    adds the restore, and the next run still gets an id of its own."""
    install(db_url, "1.0.0")
    args = upgrade_args(db_url, tmp_path)
    upgraded = run_cli(*args, "upgrade", "--yes", env=env_for(tmp_path))
    assert upgraded.exit_code == 0, upgraded.output
    before = journal(db_url)
    run = before[0]
    assert (run["kind"], run["status"], run["step"]) == ("upgrade", "succeeded", 2)
    restored = run_cli(*args, "restore", "--yes", run["backup_path"], env=env_for(tmp_path))
    assert restored.exit_code == 0, restored.output
    after = journal(db_url)
    assert after[0]["kind"] == "restore" and after[1:] == before
    history = run_cli(*args, "history", env=env_for(tmp_path)).output
    assert f"#{run['id']}" in history and "aborted" not in history, history
    assert "upgrade succeeded" in history and "restore succeeded" in history, history
    doctor = run_cli(*args, "doctor", "--json", env=env_for(tmp_path)).output
    runs = json.loads(doctor)["runs"]
    assert [(r["kind"], r["status"]) for r in runs[:2]] == [
        ("restore", "succeeded"),
        ("upgrade", "succeeded"),
    ]
    assert status_of(db_url, tmp_path)["state"] == "upgrade_pending"  # back at 1.0.0
    again = run_cli(*args, "upgrade", "--yes", "--no-backup", env=env_for(tmp_path))
    assert again.exit_code == 0, again.output
    ids = [r["id"] for r in journal(db_url)]
    assert len(ids) == len(set(ids)) and ids[0] == max(ids)


def test_restore_refuses_a_foreign_or_damaged_backup(db_url: str, tmp_path: Path) -> None:
    install(db_url, CURRENT)
    args = upgrade_args(db_url, tmp_path)
    path = Path(run_cli(*args, "backup", env=env_for(tmp_path)).output.splitlines()[0])
    sidecar = json.loads(Path(str(path) + ".json").read_text())
    sidecar["database"] = "someone_else"
    Path(str(path) + ".json").write_text(json.dumps(sidecar))
    foreign = run_cli(*args, "restore", "--yes", str(path), env=env_for(tmp_path))
    assert foreign.exit_code == 1 and "someone_else" in foreign.output
    with open(path, "ab") as handle:
        handle.write(b"tampered")
    damaged = run_cli(*args, "restore", "--yes", str(path), env=env_for(tmp_path))
    assert damaged.exit_code == 1 and "checksum" in damaged.output


def test_preflight_stops_before_anything_changes(db_url: str, tmp_path: Path) -> None:
    install(db_url, "1.0.0")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    args = upgrade_args(db_url, tmp_path)
    result = run_cli(
        *args, "upgrade", "--yes", env={"UPGRADER_BACKUP_DIR": str(blocker / "backups")}
    )
    assert result.exit_code == 73
    assert "not writable" in result.output and "nothing was changed" in result.output
    assert status_of(db_url, tmp_path)["state"] == "upgrade_pending"
    assert journal(db_url) == []


def test_missing_dump_tool_is_reported_first(
    server_db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(server_db_url, "1.0.0")
    monkeypatch.setenv("PATH", str(tmp_path))  # no pg_dump, no mariadb-dump
    result = run_cli(
        *upgrade_args(server_db_url, tmp_path), "upgrade", "--yes", env=env_for(tmp_path)
    )
    assert result.exit_code == 73
    assert "is installed" in result.output or "is not installed" in result.output
    assert "dump" in result.output
    monkeypatch.undo()
    assert status_of(server_db_url, tmp_path)["state"] == "upgrade_pending"


def test_install_fresh_older_release_and_refusals(db_url: str, tmp_path: Path) -> None:
    args = [*upgrade_args(db_url, tmp_path), "--app", SAMPLE]
    old = run_cli(*args, "install", "--yes", "--release", "1.1.0")
    assert old.exit_code == 0, old.output
    status = status_of(db_url, tmp_path)
    assert (status["state"], status["schema_version"], status["database_revisions"]) == (
        "upgrade_pending",
        "1.1.0",
        ["0002_loans_isbn"],
    )
    again = run_cli(*args, "install", "--yes")
    assert again.exit_code == 1 and "already installed" in again.output
    assert run_cli(*args, "install", "--yes", "--release", "9.9").exit_code == 1


def test_install_refuses_a_database_with_data(db_url: str, tmp_path: Path) -> None:
    execute(db_url, "CREATE TABLE customers (id INTEGER PRIMARY KEY)")
    result = run_cli(*upgrade_args(db_url, tmp_path), "install", "--yes")
    assert result.exit_code == 1 and "customers" in result.output
    fresh = tmp_path / "fresh"
    if db_url.startswith("sqlite"):
        url = f"sqlite:///{fresh}/app.db"
        assert run_cli(*upgrade_args(url, tmp_path), "install", "--yes").exit_code == 0
        assert status_of(url, tmp_path)["state"] == "ok"


def test_plan_sql_and_refusal_when_ahead(db_url: str, tmp_path: Path) -> None:
    install(db_url, "1.0.0")
    args = upgrade_args(db_url, tmp_path)
    plan = run_cli(*args, "upgrade", "--plan")
    assert plan.exit_code == 0
    assert "1. 0002_loans_isbn  Release 1.1.0" in plan.output and "1.0.0 → 2.0.1" in plan.output
    sql = run_cli(*cli_args(db_url, tmp_path, "1.1.0"), "upgrade", "--sql")
    assert sql.exit_code == 0, sql.output
    assert "CREATE TABLE loans" in sql.output and "0002_loans_isbn" in sql.output
    data = run_cli(*args, "upgrade", "--sql")  # 2.0.0 rewrites rows in Python: online only
    assert data.exit_code == 1
    assert data.stdout == ""  # `upgrade --sql > f.sql` writes no half script (an open BEGIN)
    assert "revision 0003_sort_names cannot be written out as SQL" in data.stderr
    assert "Nothing was written" in data.stderr
    assert status_of(db_url, tmp_path)["database_revisions"] == ["0001_initial"]
    run_cli(*args, "upgrade", "--yes", "--no-backup")
    old_code = cli_args(db_url, tmp_path, "1.1.0")
    refused = run_cli(*old_code, "upgrade", "--yes")
    assert refused.exit_code == 3
    assert "Deploy version 2.0.1" in refused.output


def test_release_without_migrations_needs_no_run(db_url: str, tmp_path: Path) -> None:
    install(db_url, "2.0.0")
    result = run_cli(*upgrade_args(db_url, tmp_path), "upgrade", "--yes")
    assert result.exit_code == 0
    assert [r["kind"] for r in journal(db_url)] == ["version"]


def test_upgrade_keeps_the_administrators_maintenance(db_url: str, tmp_path: Path) -> None:
    install(db_url, "1.0.0")
    execute(
        db_url,
        "UPDATE upgrader_state SET maintenance_mode = 'banner', "
        "maintenance_message = 'Move to new server on Friday'",
    )
    assert (
        run_cli(*upgrade_args(db_url, tmp_path), "upgrade", "--yes", "--no-backup").exit_code == 0
    )
    status = status_of(db_url, tmp_path)
    assert status["maintenance"]["mode"] == "banner"
    assert status["maintenance"]["message"] == "Move to new server on Friday"


@contextlib.contextmanager
def holding_the_lock(url: str) -> Iterator[None]:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from sqlalchemy import create_engine\n"
            "from upgrader.engine.locks import upgrade_lock\n"
            "with upgrade_lock(create_engine(sys.argv[1])):\n"
            "    print('held', flush=True)\n"
            "    time.sleep(120)\n",
            url,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        yield
    finally:
        holder.kill()
        holder.wait()


def test_unlock_clears_only_a_stale_run(db_url: str, tmp_path: Path) -> None:
    install(db_url, "1.0.0")
    add_run(db_url)  # a run with a live lease, as another node's upgrade has
    args = upgrade_args(db_url, tmp_path)
    with holding_the_lock(db_url):  # the lock a live run holds, in a process of its own
        refused = run_cli(*args, "unlock")
        assert refused.exit_code == 1 and "alive" in refused.output
        busy = run_cli(*args, "upgrade", "--yes", "--no-backup")
        assert busy.exit_code == 75 and "web-1 (pid 4242)" in busy.output
        # --force ends a live run, and says how; a SQLite lock held by a process of
        # another host cannot be ended from here.
        forced = run_cli(*args, "unlock", "--force", "--yes")
        if db_url.startswith("sqlite"):
            assert forced.exit_code == 1 and "this host cannot end it" in forced.output
        else:
            assert forced.exit_code == 0, forced.output
            assert "database session(s)" in forced.output and "were ended" in forced.output
    # With the lock free the run is over, whatever its lease says: no --force needed. It
    # was cut off inside its step 1, so the state says so (closed by unlock, or not yet).
    assert status_of(db_url, tmp_path)["state"] == "upgrade_interrupted"
    closed = run_cli(*args, "unlock")
    assert closed.exit_code == 0, closed.output
    assert status_of(db_url, tmp_path)["state"] == "upgrade_interrupted"
    assert run_cli(*args, "upgrade", "--yes", "--no-backup").exit_code == 0


@pytest.mark.slow
def test_detached_run_finishes_on_its_own(db_url: str, tmp_path: Path) -> None:
    from upgrader.engine.detach import start_detached

    install(db_url, "1.0.0")
    settings = resolve(
        {
            "database_url": db_url,
            "migrations": str(MIGRATIONS),
            "code_version": CURRENT,
            "backup_dir": str(tmp_path / "backups"),
        },
        environ={},
    )
    process = start_detached(settings, backup=True, trigger="web")
    assert process.wait(timeout=120) == 0
    status = status_of(db_url, tmp_path)
    assert status["state"] == "ok"
    assert status["run"]["trigger"] == "web"
    assert (tmp_path / "backups" / "upgrade.log").is_file()


def test_upgrade_through_a_flask_migrate_env_py(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The application's own env.py, which ignores sqlalchemy.url and needs current_app."""
    install(db_url, "1.0.0")
    code = code_with(tmp_path, "flask-migrate")
    (code / "env.py").write_text(
        (Path(__file__).parent / "fixtures" / "flask_migrate_env.py").read_text()
    )
    (code / "alembic.ini").unlink()
    monkeypatch.setenv("FM_DATABASE_URL", db_url)
    monkeypatch.setenv("FM_MIGRATIONS", str(code))
    args = ["--app", "tests.fixtures.flask_migrate_app:create_app"]
    status = json.loads(run_cli(*args, "status", "--json").output)
    assert status["state"] == "upgrade_pending"
    result = run_cli(*args, "upgrade", "--yes", "--no-backup")
    assert result.exit_code == 0, result.output
    assert json.loads(run_cli(*args, "status", "--json").output)["state"] == "ok"
    assert [s["status"] for s in steps(db_url)] == ["succeeded", "succeeded"]


def test_too_little_disk_is_reported_before_anything_changes(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil as real_shutil

    from upgrader.engine import backup

    install(db_url, "1.0.0")
    usage = real_shutil.disk_usage(tmp_path)
    monkeypatch.setattr(
        backup.shutil, "disk_usage", lambda path: usage._replace(free=1024 * 1024)
    )  # 1 MB left
    result = run_cli(*upgrade_args(db_url, tmp_path), "upgrade", "--yes", env=env_for(tmp_path))
    assert result.exit_code == 73
    assert "too little disk space" in result.output and "1 MB free" in result.output
    assert journal(db_url) == []
    assert status_of(db_url, tmp_path)["state"] == "upgrade_pending"
