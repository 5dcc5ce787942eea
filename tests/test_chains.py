"""Real migration chains, on SQLite, PostgreSQL and MariaDB: declared branches and plugins,
an accidental split, a long chain, and a SIGKILL inside every step of a chain whose env.py
leaves what real ones leave, each followed by the fix `status` prints, pasted as it is."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, make_url, select, text

from tests.chains import (
    RECOVERY,
    branched,
    long_chain,
    recovery_chain,
    trivial_chain,
    write_revision,
)
from tests.helpers import progress_lines, run_cli
from upgrader.core import processes
from upgrader.core.journal import steps_of
from upgrader.core.tables import define_tables


def config(url: str, migrations: Path, version: str) -> list[str]:
    return ["--database-url", url, "--migrations", str(migrations), "--code-version", version]


LAST_RUN_STEPS = (
    "SELECT revision, status FROM upgrader_steps WHERE run_id = "
    "(SELECT MAX(id) FROM upgrader_runs) ORDER BY position"
)


def status(url: str, migrations: Path, version: str) -> dict[str, Any]:
    return dict(json.loads(run_cli(*config(url, migrations, version), "status", "--json").output))


def rows(url: str, query: str) -> list[tuple[Any, ...]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(query))]
    finally:
        engine.dispose()


def test_branches_and_plugins_upgrade_together(db_url: str, tmp_path: Path) -> None:
    old = branched(tmp_path / "1.0.0", core=3, plugin=False)
    new = branched(tmp_path / "2.0.0")
    installed = run_cli(*config(db_url, old, "1.0.0"), "install", "--yes")
    assert installed.exit_code == 0, installed.output
    pending = status(db_url, new, "2.0.0")
    assert pending["state"] == "upgrade_pending", pending
    assert sorted(pending["code_heads"]) == ["c06", "p03"]
    order = [p["revision"] for p in pending["pending_revisions"]]
    # What `alembic upgrade heads` applies: nothing the database has, the plugin after the
    # core revision it depends on.
    assert sorted(order) == ["c04", "c05", "c06", "p01", "p02", "p03"]
    assert order.index("p01") < order.index("p02") < order.index("p03")
    upgraded = run_cli(*config(db_url, new, "2.0.0"), "upgrade", "--yes", "--no-backup")
    assert upgraded.exit_code == 0, upgraded.output
    assert "[6/6]" in upgraded.output
    done = status(db_url, new, "2.0.0")
    assert (done["state"], sorted(done["database_revisions"])) == ("ok", ["c06", "p03"])
    assert rows(db_url, "SELECT id, core_id, text FROM plugin_notes ORDER BY id") == [
        (1, 1, "hello"),
        (2, 2, "hello"),
    ]
    split = branched(tmp_path / "2.1.0", split=True)
    broken = status(db_url, split, "2.1.0")
    assert (broken["state"], broken["code"]) == ("schema_unknown", "Err3")
    assert "alembic merge -m merge s1 s2" in broken["fix"], broken["fix"]
    refused = run_cli(*config(db_url, split, "2.1.0"), "upgrade", "--yes")
    assert refused.exit_code == 3


def test_a_long_chain_in_one_pass(db_url: str, tmp_path: Path) -> None:
    chain = long_chain(tmp_path / "long", 64)
    env = {"UPGRADER_RELEASES": "1.0.0=l004", "UPGRADER_BACKUP_DIR": str(tmp_path / "b")}
    base = run_cli(
        *config(db_url, chain, "2.0.0"), "install", "--release", "1.0.0", "--yes", env=env
    )
    assert base.exit_code == 0, base.output
    assert len(status(db_url, chain, "2.0.0")["pending_revisions"]) == 60
    upgraded = run_cli(*config(db_url, chain, "2.0.0"), "upgrade", "--yes", env=env)
    assert upgraded.exit_code == 0, upgraded.output
    assert status(db_url, chain, "2.0.0")["state"] == "ok"
    steps = rows(
        db_url,
        "SELECT position, status FROM upgrader_steps WHERE run_id = "
        "(SELECT MAX(id) FROM upgrader_runs) ORDER BY position",
    )
    assert steps == [(i, "succeeded") for i in range(1, 61)]
    assert rows(db_url, "SELECT COUNT(*), MIN(n), MAX(twice) FROM t16") == [(200, 1001, 400)]
    # Each "done" follows the step it is about, once the database has committed it:
    # Alembic commits each revision on SQLite and MariaDB (no transactional DDL), and
    # its generic env.py runs the whole pass in one transaction on PostgreSQL.
    if db_url.startswith("postgresql"):
        expected = [f"[{k}/60]" for k in range(1, 61)] + ["done: steps 1 to 60"]
    else:
        expected = [line for k in range(1, 61) for line in (f"[{k}/60]", "done in")]
    assert progress_lines(upgraded.output) == expected, upgraded.output


def test_a_failure_after_quick_steps_journals_every_step(db_url: str, tmp_path: Path) -> None:
    """The finished steps' rows are written at most every half second: a failure right
    after twenty quick steps still leaves a row for each, marked as the database kept it."""
    chain = trivial_chain(tmp_path / "quick", 21)
    write_revision(chain / "versions", "v0022", "v0021", 'raise RuntimeError("out of disk")\n')
    env = {"UPGRADER_RELEASES": "1.0.0=v0001"}
    base = run_cli(
        *config(db_url, chain, "2.0.0"), "install", "--release", "1.0.0", "--yes", env=env
    )
    assert base.exit_code == 0, base.output
    failed = run_cli(*config(db_url, chain, "2.0.0"), "upgrade", "--yes", "--no-backup", env=env)
    assert failed.exit_code == 1 and "out of disk" in failed.output, failed.output
    # Alembic's generic env.py holds the whole pass in one transaction on PostgreSQL only
    kept = "rolled back" if db_url.startswith("postgresql") else "succeeded"
    expected = [(f"v{i:04d}", kept) for i in range(2, 22)] + [("v0022", "failed")]
    assert rows(db_url, LAST_RUN_STEPS) == expected


def test_a_long_step_after_quick_ones_is_named_while_it_runs(db_url: str, tmp_path: Path) -> None:
    """The journal writes a run's progress at most every half second (on SQLite not at all
    while a revision holds the write lock): `status` still names the step that runs, from
    the version table (committed with each revision) or the heartbeat's write."""
    chain = trivial_chain(tmp_path / "quick", 21)
    write_revision(chain / "versions", "v0022", "v0021", "import time\ntime.sleep(6)\n")
    env = {"UPGRADER_RELEASES": "1.0.0=v0001"}
    base = run_cli(
        *config(db_url, chain, "2.0.0"), "install", "--release", "1.0.0", "--yes", env=env
    )
    assert base.exit_code == 0, base.output
    process = spawn(db_url, chain, tmp_path, "none", "--no-backup", UPGRADER_RELEASES="1.0.0=v0001")
    try:
        wait_until_at(db_url, chain, process, "v0022")
        running = status(db_url, chain, "2.0.0")
        assert running["state"] == "upgrade_running", running
        run = running["run"]
        assert (run["step"], run["steps"], run["message"]) == (21, 21, "revision v0022"), run
        shown = run_cli(*config(db_url, chain, "2.0.0"), "history", "--json").output
        last = json.loads(shown)[0]
        assert (last["status"], last["step"], last["revision"]) == ("running", 21, "v0022")
        listed = run_cli(*config(db_url, chain, "2.0.0"), "history").output
        assert "step 21/21" in listed, listed
    finally:
        output = process.communicate(timeout=60)[0]
    assert process.returncode == 0, output
    assert status(db_url, chain, "2.0.0")["state"] == "ok"
    assert len(rows(db_url, LAST_RUN_STEPS)) == 21


@pytest.mark.parametrize("one_transaction", [False, True], ids=["as_alembic_writes_it", "held"])
def test_each_step_row_says_when_its_step_ran(
    db_url: str, tmp_path: Path, one_transaction: bool
) -> None:
    """A step's row is made from the moments the run noted as Alembic asked for each next
    revision: its start is the end of the step before, its times agree with its duration,
    and each row is written once, whether the env.py lets Alembic commit revision by
    revision or holds the whole pass in one transaction of its own. (A step that takes
    longer than the half second between writes makes a write in the middle of the run: on
    SQLite on the migration's own connection, inside its transaction or in one of its own.)
    """
    chain = trivial_chain(tmp_path / "timed", 6)
    versions = chain / "versions"
    write_revision(versions, "v0007", "v0006", "import time\ntime.sleep(0.8)\n")
    write_revision(versions, "v0008", "v0007", 'op.execute("UPDATE seed SET id = id")\n')
    write_revision(versions, "v0009", "v0008", 'op.execute("UPDATE seed SET id = id")\n')
    if one_transaction:
        env_py = (chain / "env.py").read_text()
        held = env_py.replace(
            "with connectable.connect() as connection:",
            "with connectable.connect() as connection, connection.begin():",
        )
        assert held != env_py
        (chain / "env.py").write_text(held)
    env = {"UPGRADER_RELEASES": "1.0.0=v0001"}
    base = run_cli(
        *config(db_url, chain, "2.0.0"), "install", "--release", "1.0.0", "--yes", env=env
    )
    assert base.exit_code == 0, base.output
    upgraded = run_cli(*config(db_url, chain, "2.0.0"), "upgrade", "--yes", "--no-backup", env=env)
    assert upgraded.exit_code == 0, upgraded.output
    shown = [line for line in progress_lines(upgraded.output) if line.startswith("[")]
    assert shown == [f"[{k}/8]" for k in range(1, 9)], upgraded.output
    engine = create_engine(db_url)
    try:
        tables = define_tables()
        with engine.connect() as conn:
            last = select(tables.runs).order_by(tables.runs.c.id.desc()).limit(1)
            run = dict(conn.execute(last).mappings().one())
        steps = steps_of(engine, tables, run["id"])
    finally:
        engine.dispose()
    assert [(s["position"], s["revision"], s["status"]) for s in steps] == [
        (k - 1, f"v{k:04d}", "succeeded") for k in range(2, 10)
    ]
    assert run["started_at"] <= steps[0]["started_at"]
    assert steps[-1]["finished_at"] <= run["finished_at"]
    for before, after in itertools.pairwise(steps):
        assert after["started_at"] == before["finished_at"], (before, after)
    for step in steps:  # the times are stored to the second, the duration to the millisecond
        took = (step["finished_at"] - step["started_at"]).total_seconds()
        assert abs(took - step["duration"]) < 1, step
    assert steps[5]["revision"] == "v0007" and steps[5]["duration"] >= 0.8, steps[5]


def test_sqlite_long_upgrade_with_a_short_lease(tmp_path: Path) -> None:
    """No lease is written during a SQLite run, so none can collide with a migration."""
    url = f"sqlite:///{tmp_path / 'app.db'}"
    chain = long_chain(tmp_path / "long", 120)
    env = {"UPGRADER_RELEASES": "1.0.0=l001", "UPGRADER_LEASE_SECONDS": "1"}
    base = run_cli(*config(url, chain, "2.0.0"), "install", "--release", "1.0.0", "--yes", env=env)
    assert base.exit_code == 0, base.output
    upgraded = run_cli(*config(url, chain, "2.0.0"), "upgrade", "--yes", "--no-backup", env=env)
    assert upgraded.exit_code == 0, upgraded.output
    assert status(url, chain, "2.0.0")["state"] == "ok"


# ------------------------------------------------------------------ killed runs


def spawn(
    url: str, migrations: Path, tmp_path: Path, sleep_at: str, *extra: str, **variables: str
) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UPGRADER_")}
    env.update(
        CHAIN_SLEEP_AT=sleep_at,
        UPGRADER_BACKUP_DIR=str(tmp_path / "backups"),
        UPGRADER_INSTALLER_DIR=str(tmp_path / "none"),
        **variables,
    )
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "upgrader",
            *config(url, migrations, "2.0.0"),
            "upgrade",
            "--yes",
            *extra,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


RECOVERY_ORDER = [revision for revision, _ in RECOVERY]


def running_at(url: str, migrations: Path) -> tuple[str | None, str | None]:
    """The revision the last run applies, and its status, as `status` tells them: on
    SQLite the journal writes its progress at most every half second, and the version
    table says the rest."""
    run = status(url, migrations, "2.0.0").get("run") or {}
    return run.get("revision"), run.get("status")


def wait_until_at(
    url: str, migrations: Path, process: subprocess.Popen[str], revision: str
) -> None:
    """Until the run applies `revision`."""
    deadline = time.monotonic() + 60
    while running_at(url, migrations)[0] != revision:
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.05)


def kill_inside(url: str, migrations: Path, process: subprocess.Popen[str], revision: str) -> None:
    """SIGKILL while `revision` sleeps between its two halves."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            found = running_at(url, migrations)
        except Exception:
            found = (None, None)
        if found == (revision, "running"):
            break
        assert process.poll() is None, process.communicate()[0]
        time.sleep(0.05)
    else:
        raise AssertionError(f"the run never reached {revision}")
    time.sleep(1.3)  # past the revision's first half, asleep before its second (status names it
    # as it starts, where the journal row came up to half a second later)
    process.send_signal(signal.SIGKILL)
    process.wait()


def follow(fix: str, cwd: Path) -> None:
    """Run the commands the fix names, in order, up to the upgrade, as pasted."""
    for command in re.findall(r"`([^`]+)`", fix):
        if command.startswith("kill "):
            continue
        done = subprocess.run(
            ["sh", "-c", command],
            cwd=cwd,
            input="y\n",
            capture_output=True,
            text=True,
            timeout=180,
            env={k: v for k, v in os.environ.items() if not k.startswith("UPGRADER_")},
        )
        assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
        if command.endswith(" upgrade"):
            return
    raise AssertionError(f"the fix names no upgrade: {fix}")


def seeded(url: str, tmp_path: Path) -> Path:
    base = recovery_chain(tmp_path / "1.0.0", upto=1)
    installed = run_cli(*config(url, base, "1.0.0"), "install", "--yes")
    assert installed.exit_code == 0, installed.output
    engine = create_engine(url)
    with engine.begin() as conn:
        for i in range(1, 31):
            conn.execute(
                text("INSERT INTO items (id, name) VALUES (:i, :n)"), {"i": i, "n": f"item {i}"}
            )
    engine.dispose()
    return recovery_chain(tmp_path / "2.0.0")


def assert_intact(url: str) -> None:
    items = rows(url, "SELECT id, name, price FROM items ORDER BY id")
    assert items == [(i, f"item {i}", i * 10) for i in range(1, 31)]
    assert rows(url, "SELECT COUNT(*), SUM(total) FROM orders") == [(30, sum(range(10, 310, 10)))]
    assert rows(url, "SELECT COUNT(*) FROM orders WHERE note = 'ok'") == [(30,)]


@pytest.mark.slow
@pytest.mark.parametrize("position", range(2, len(RECOVERY) + 1))
def test_sigkill_inside_each_step_then_the_printed_fix(
    position: int, db_url: str, tmp_path: Path
) -> None:
    full = seeded(db_url, tmp_path)
    revision = RECOVERY[position - 1][0]
    process = spawn(db_url, full, tmp_path, revision)
    kill_inside(db_url, full, process, revision)
    printed = process.communicate()[0]
    after = status(db_url, full, "2.0.0")
    assert after["state"] == "upgrade_interrupted", after
    assert any(f"step {position - 1} of 6 ({revision}" in d for d in after["details"]), after
    # the printed progress says "done" only of what the database holds
    committed = RECOVERY_ORDER.index(after["database_revisions"][0])
    assert printed.count("done in") == committed, printed
    if db_url.startswith("postgresql") and position > 2:
        # one transaction held the whole pass: the kill rolled every step back
        assert committed == 0
        assert any(
            f"none of its {position - 2} finished step(s) was committed" in d
            for d in after["details"]
        ), after["details"]
    first_backup = after["run"]["backup_path"]
    if not db_url.startswith("postgresql"):
        # a half-done revision is possible here: the way back is the clean backup
        assert f"restore {first_backup} --yes" in after["fix"], after["fix"]
    follow(after["fix"], tmp_path)
    assert status(db_url, full, "2.0.0")["state"] == "ok"
    assert_intact(db_url)


@pytest.mark.slow
def test_a_failed_rerun_still_names_the_first_backup(db_url: str, tmp_path: Path) -> None:
    """The issue's MariaDB case: killed after a revision's first half, the rerun fails on
    what that half left ("already exists"); its own backup holds that half, so the fix
    must name the backup taken before the first attempt."""
    full = seeded(db_url, tmp_path)
    kill_inside(db_url, full, spawn(db_url, full, tmp_path, "r03"), "r03")
    first = status(db_url, full, "2.0.0")["run"]["backup_path"]
    rerun = spawn(db_url, full, tmp_path, "none")
    output = rerun.communicate(timeout=120)[0]
    if db_url.startswith("postgresql"):  # the cut revision was rolled back: the rerun resumes
        assert rerun.returncode == 0, output
    else:
        assert rerun.returncode == 1 and "already exists" in output, output
        failed = status(db_url, full, "2.0.0")
        assert failed["state"] == "upgrade_failed"
        assert failed["run"]["backup_path"] != first  # the rerun took a backup of its own
        assert f"restore {first} --yes" in failed["fix"], failed["fix"]
        follow(failed["fix"], tmp_path)
    assert status(db_url, full, "2.0.0")["state"] == "ok"
    assert_intact(db_url)


@pytest.mark.slow
def test_ctrl_c_is_journalled_as_interrupted(db_url: str, tmp_path: Path) -> None:
    full = seeded(db_url, tmp_path)
    process = spawn(db_url, full, tmp_path, "r03")
    wait_until_at(db_url, full, process, "r03")
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    output = process.communicate(timeout=60)[0]
    assert process.returncode == 130, output
    assert rows(db_url, "SELECT status FROM upgrader_runs ORDER BY id DESC")[0] == ("interrupted",)
    # r02 finished within the journal's half second before the stop: its row is written
    # all the same, marked as what the database kept of it
    kept = "rolled back" if db_url.startswith("postgresql") else "succeeded"
    assert rows(db_url, LAST_RUN_STEPS) == [("r02", kept)], output
    after = status(db_url, full, "2.0.0")
    assert after["state"] == "upgrade_interrupted", after
    follow(after["fix"], tmp_path)
    assert_intact(db_url)


LONG_STATEMENT = {
    "postgresql": "SELECT pg_sleep(4)",
    "mysql": "SELECT SLEEP(4)",
    "sqlite": "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
    "WHERE i < 12000000) SELECT max(i) FROM n",
}


def test_a_stop_inside_a_database_call_is_a_stop(db_url: str, tmp_path: Path) -> None:
    """SIGTERM while the migration waits for the server's answer is a stop, not a failed
    migration: psycopg, told as on Ctrl-C, cancels the statement (any other exception left
    it "another command is already in progress"); PyMySQL is left mid-answer, and its
    cleanup's InterfaceError must not hide the stop."""
    chain = trivial_chain(tmp_path / "quick", 3)
    statement = LONG_STATEMENT[make_url(db_url).get_backend_name()]
    write_revision(chain / "versions", "v0004", "v0003", f'op.execute("{statement}")\n')
    env = {"UPGRADER_RELEASES": "1.0.0=v0001"}
    base = run_cli(
        *config(db_url, chain, "2.0.0"), "install", "--release", "1.0.0", "--yes", env=env
    )
    assert base.exit_code == 0, base.output
    process = spawn(db_url, chain, tmp_path, "none", "--no-backup", UPGRADER_RELEASES="1.0.0=v0001")
    wait_until_at(db_url, chain, process, "v0004")
    time.sleep(1)  # inside the statement
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=60)[0]
    assert process.returncode == 130, output
    assert "failed" not in output, output
    assert rows(db_url, "SELECT status FROM upgrader_runs ORDER BY id DESC")[0] == ("interrupted",)
    kept = "rolled back" if db_url.startswith("postgresql") else "succeeded"
    assert rows(db_url, LAST_RUN_STEPS) == [("v0002", kept), ("v0003", kept)]
    after = status(db_url, chain, "2.0.0")
    assert after["state"] == "upgrade_interrupted", after
    rerun = run_cli(*config(db_url, chain, "2.0.0"), "upgrade", "--yes", "--no-backup", env=env)
    assert rerun.exit_code == 0, rerun.output


@contextlib.contextmanager
def holding_items(url: str) -> Iterator[None]:
    """The application's long transaction on `items`: PostgreSQL's table lock, or the
    metadata lock any read takes on MariaDB. ALTER TABLE items waits behind it."""
    engine = create_engine(url)
    blocker = engine.connect()
    blocker.begin()
    if url.startswith("postgresql"):
        blocker.execute(text("LOCK TABLE items IN ACCESS EXCLUSIVE MODE"))
    else:
        blocker.execute(text("SELECT COUNT(*) FROM items"))
    try:
        yield
    finally:
        blocker.rollback()
        blocker.close()
        engine.dispose()


def alter_running(url: str) -> bool:
    """Whether the server still runs the migration's ALTER TABLE items."""
    if url.startswith("postgresql"):
        query = "SELECT query FROM pg_stat_activity WHERE state <> 'idle'"
    else:
        query = "SELECT INFO FROM information_schema.PROCESSLIST WHERE INFO IS NOT NULL"
    return any(str(q).startswith("ALTER TABLE items") for (q,) in rows(url, query))


@pytest.mark.slow
def test_a_dead_runs_statement_is_named_and_ended(server_db_url: str, tmp_path: Path) -> None:
    """SIGKILL while the migration's ALTER waits for a table lock: while the server still
    runs the statement (PostgreSQL keeps it; MariaDB ends a dead client's wait by itself,
    within about a second), status names its session and `unlock` ends it."""
    url = server_db_url
    full = seeded(url, tmp_path)
    with holding_items(url):
        process = spawn(url, full, tmp_path, "none", "--no-backup")
        deadline = time.monotonic() + 60
        while True:
            found = rows(url, "SELECT revision, db_session FROM upgrader_runs ORDER BY id DESC")
            if found and found[0][0] == "r02" and found[0][1]:
                break
            assert time.monotonic() < deadline, found
            time.sleep(0.1)
        time.sleep(1)  # its ALTER is waiting for the lock now
        process.send_signal(signal.SIGKILL)
        process.wait()
        # the server frees the dead client's upgrade lock once its session notices the
        # closed connection: on a loaded machine a moment after the kill
        deadline = time.monotonic() + 10
        while status(url, full, "2.0.0")["state"] == "upgrade_running":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        before = alter_running(url)
        after = status(url, full, "2.0.0")
        assert after["state"] == "upgrade_interrupted"
        named = any("still working in the server" in d for d in after["details"])
        if url.startswith("postgresql"):
            assert before and named, after  # PostgreSQL keeps a dead client's statement
        elif before and alter_running(url):  # there before and after the status read
            assert named, after
        elif not before:  # MariaDB ends a dead client's wait by itself, within a second
            assert not named, after
        if named:
            fixes = re.findall(r"`([^`]+)`", after["fix"])
            unlock = next(c for c in fixes if c.endswith(" unlock"))
            done = subprocess.run(["sh", "-c", unlock], capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, done.stdout + done.stderr
            if url.startswith("postgresql"):  # MariaDB may notice the dead client by itself
                assert "was ended" in done.stdout, done.stdout
    again = status(url, full, "2.0.0")
    assert not any("still working" in d for d in again["details"])
    rerun = run_cli(*config(url, full, "2.0.0"), "upgrade", "--yes", "--no-backup")
    assert rerun.exit_code == 0, rerun.output
    assert_intact(url)


@pytest.mark.slow
def test_a_migration_waits_for_a_table_lock_only_so_long(
    server_db_url: str, tmp_path: Path
) -> None:
    """The application holds a lock on `items` (a long transaction): the migration that
    alters it fails after UPGRADER_LOCK_TIMEOUT, and says why, instead of waiting for ever."""
    url = server_db_url
    full = seeded(url, tmp_path)
    with holding_items(url):
        started = time.monotonic()
        result = run_cli(
            *config(url, full, "2.0.0"),
            "upgrade",
            "--yes",
            "--no-backup",
            env={"UPGRADER_LOCK_TIMEOUT": "2"},
        )
        elapsed = time.monotonic() - started
    assert result.exit_code == 1, result.output
    assert "lock" in result.output.lower() and "r02" in result.output
    assert elapsed < 30
    assert status(url, full, "2.0.0")["state"] == "upgrade_failed"


def test_a_revision_declares_its_phase_in_its_file(tmp_path: Path) -> None:
    """`upgrader_phase = "online"` / `"post-deploy"` at module level; Alembic ignores it,
    upgrader reads it through the script's module; anything else is blocking."""
    url = f"sqlite:///{tmp_path / 'app.db'}"
    chain = recovery_chain(tmp_path / "chain", upto=4)
    versions = chain / "versions"
    for revision, phase in (("r02", '"online"'), ("r03", '"post-deploy"'), ("r04", '"soon"')):
        path = versions / f"{revision}.py"
        path.write_text(path.read_text() + f"\n\nupgrader_phase = {phase}\n")
    env = {"UPGRADER_RELEASES": "1.0.0=r01"}
    installed = run_cli(
        *config(url, chain, "2.0.0"), "install", "--release", "1.0.0", "--yes", env=env
    )
    assert installed.exit_code == 0, installed.output
    pending = status(url, chain, "2.0.0")["pending_revisions"]
    assert [(p["revision"], p["phase"]) for p in pending] == [
        ("r02", "online"),
        ("r03", "post-deploy"),
        ("r04", "blocking"),
    ]


def stop(process: subprocess.Popen[str]) -> None:
    """SIGSTOP, then wait until the kernel shows the process stopped: the signal is
    delivered asynchronously, and a check made at once may still see it running."""
    process.send_signal(signal.SIGSTOP)
    deadline = time.monotonic() + 10
    while processes.state_of(process.pid) != processes.STOPPED:
        assert time.monotonic() < deadline, processes.state_of(process.pid)
        time.sleep(0.01)


def _commands(fix: str) -> list[str]:
    return re.findall(r"`([^`]+)`", fix)


@pytest.mark.slow
@pytest.mark.parametrize("ending", ["resume", "end"])
def test_a_stopped_upgrade_is_named_and_its_printed_fix_works(
    ending: str, db_url: str, tmp_path: Path
) -> None:
    """SIGSTOP (Ctrl-Z) inside a step, past the lease: the state stays Err2, and the text
    says the process is stopped, with the commands to resume or end it; pasted as printed,
    either leads to ok with the data intact."""
    full = seeded(db_url, tmp_path)
    process = spawn(db_url, full, tmp_path, "r03", CHAIN_SLEEP="3", UPGRADER_LEASE_SECONDS="2")
    wait_until_at(db_url, full, process, "r03")
    stop(process)
    try:
        time.sleep(3)  # past its lease
        stopped = status(db_url, full, "2.0.0")
        assert (stopped["state"], stopped["code"]) == ("upgrade_running", "Err2"), stopped
        assert f"Process {process.pid} on" in stopped["fix"], stopped["fix"]
        assert "is stopped" in stopped["fix"], stopped["fix"]
        commands = _commands(stopped["fix"])
        resume, end = commands[0], commands[1]
        assert resume == f"kill -CONT {process.pid}", commands
        refused = run_cli(*config(db_url, full, "2.0.0"), "unlock")
        assert refused.exit_code == 1 and "is stopped" in refused.output, refused.output
        pasted = subprocess.run(["sh", "-c", resume if ending == "resume" else end], cwd="/")
        assert pasted.returncode == 0
    finally:
        process.send_signal(signal.SIGCONT)
    output = process.communicate(timeout=120)[0]
    if ending == "resume":
        assert process.returncode == 0, output
    else:
        assert process.returncode == 130, output
        after = status(db_url, full, "2.0.0")
        assert after["state"] == "upgrade_interrupted", after
        follow(after["fix"], tmp_path)
    assert status(db_url, full, "2.0.0")["state"] == "ok"
    assert_intact(db_url)


@pytest.mark.slow
def test_unlock_force_ends_a_stopped_run_and_says_so(db_url: str, tmp_path: Path) -> None:
    full = seeded(db_url, tmp_path)
    process = spawn(db_url, full, tmp_path, "r03")
    wait_until_at(db_url, full, process, "r03")
    stop(process)
    try:
        forced = run_cli(*config(db_url, full, "2.0.0"), "unlock", "--force", "--yes")
        assert forced.exit_code == 0, forced.output
        if db_url.startswith("sqlite"):
            assert f"its process {process.pid} (stopped) was killed" in forced.output
        else:
            assert "database session(s)" in forced.output and "were ended" in forced.output
    finally:
        process.send_signal(signal.SIGCONT)
    process.communicate(timeout=60)
    assert process.returncode != 0  # it could change nothing more
    after = status(db_url, full, "2.0.0")
    assert after["state"] in ("upgrade_interrupted", "upgrade_failed", "upgrade_pending"), after
    assert "aborted" in json.dumps(journal(db_url)), journal(db_url)
    follow(after["fix"], tmp_path)
    assert status(db_url, full, "2.0.0")["state"] == "ok"
    assert_intact(db_url)


def journal(url: str) -> list[tuple[Any, ...]]:
    return rows(url, "SELECT id, kind, status, note FROM upgrader_runs ORDER BY id")
