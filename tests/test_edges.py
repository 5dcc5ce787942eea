"""The smaller promises of the engine and the CLI, each on the case that broke it once."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sqlite3
import ssl
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pymysql
import pytest
from sqlalchemy import create_engine, inspect, make_url, text
from sqlalchemy.exc import OperationalError

from tests.conftest import SERVER_URLS, fresh_server_database
from tests.helpers import (
    CURRENT,
    MIGRATIONS,
    books_locked,
    cli_args,
    dump_running,
    execute,
    install,
    journal_of,
    programs_started,
    run_cli,
    status_of,
)
from upgrader.core import database
from upgrader.core.tables import tables_in
from upgrader.engine import backup as backup_module
from upgrader.engine import backuptools, checksum, pgtools


def test_the_factory_is_called_once_per_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An application whose factory cannot run twice in one process (it registers
    something global) still upgrades: upgrader reuses the application it loaded."""
    url = f"sqlite:///{tmp_path / 'app.db'}"
    install(url, "1.0.0")
    (tmp_path / "once_probe.py").write_text(
        textwrap.dedent(
            f"""
            from flask import Flask
            made = []

            def create_app():
                if made:
                    raise RuntimeError("create_app() ran twice in one process")
                made.append(1)
                app = Flask(__name__)
                app.config.update(
                    SQLALCHEMY_DATABASE_URI={url!r},
                    UPGRADER_MIGRATIONS={str(MIGRATIONS)!r},
                    UPGRADER_CODE_VERSION={CURRENT!r},
                )
                return app
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    done = run_cli("--app", "once_probe:create_app", "upgrade", "--yes", "--no-backup")
    assert done.exit_code == 0, done.output
    assert "Alembic" not in done.output and "INFO" not in done.output  # progress is ours


def test_a_migrations_directory_without_revisions_says_so(tmp_path: Path) -> None:
    empty = tmp_path / "migrations"
    (empty / "versions").mkdir(parents=True)
    shutil.copy(MIGRATIONS / "env.py", empty / "env.py")
    args = ["--database-url", f"sqlite:///{tmp_path}/x.db", "--migrations", str(empty)]
    result = run_cli(*args, "--code-version", "1.0", "status", "--json")
    status = json.loads(result.output)
    assert result.exit_code == 3
    assert "holds no revisions" in " ".join(status["details"])


def test_restore_uses_exactly_the_file_it_verified(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    install(url, "1.0.0")
    args = [*cli_args(url), "--code-version", CURRENT]
    env = {"UPGRADER_BACKUP_DIR": str(tmp_path / "backups")}
    first = run_cli(*args, "backup", env=env).output.splitlines()[0]
    assert run_cli(*args, "upgrade", "--yes", env=env).exit_code == 0
    second = run_cli(*args, "backup", env=env).output.splitlines()[0]
    moved = tmp_path / "kept" / "before.sqlite"
    moved.parent.mkdir()
    shutil.copy(first, moved)
    shutil.copy(first + ".json", str(moved) + ".json")
    shutil.copy(second, first)  # another file now sits where the first was recorded
    restored = run_cli(*args, "restore", str(moved), "--yes", env=env)
    assert restored.exit_code == 0, restored.output
    assert status_of(url, tmp_path)["database_revisions"] == ["0001_initial"]


def test_a_failure_while_the_dump_runs_kills_the_tool_and_leaves_nothing(
    server_db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tables a backup must hold are listed while the dump tool runs. If the listing
    fails (the database gone), the tool is killed at once, not waited for, and no partial
    file is left. The dump waits behind a table lock, released only after 30 s."""
    install(server_db_url, CURRENT)
    released = threading.Event()

    def gone(conn: Any) -> Any:
        deadline = time.monotonic() + 30
        while not dump_running(os.getpid()):
            assert time.monotonic() < deadline, "the dump tool never started"
            time.sleep(0.01)
        raise OperationalError("SHOW FULL TABLES", {}, Exception("the server has gone away"))

    monkeypatch.setattr(backup_module, "tables_in", gone)
    engine = create_engine(server_db_url)
    backups = tmp_path / "backups"
    backups.mkdir(mode=0o700)
    with books_locked(server_db_url) as release:

        def late() -> None:
            release()
            released.set()

        timer = threading.Timer(30, late)
        timer.start()
        try:
            with pytest.raises(OperationalError):
                backup_module.create_backup(engine, backups, checked=True)
            assert not released.is_set()  # it was killed, not waited for
            assert not dump_running(os.getpid())
            assert list(backups.iterdir()) == []
        finally:
            timer.cancel()
            engine.dispose()


def test_a_tools_message_that_is_not_utf8_is_reported(tmp_path: Path) -> None:
    """A failed tool's message in another encoding (a Latin-1 server message) is reported,
    what cannot be decoded replaced, the password redacted: not a UnicodeDecodeError."""
    url = make_url("mysql+pymysql://root:s3cret@127.0.0.1/test")
    says = "printf 'Zugriff f\\374r root:s3cret verweigert\\n' >&2; exit 3"
    with pytest.raises(backuptools.BackupError) as failed:
        backuptools.run(["sh", "-c", says], dict(os.environ), url, "mariadb")
    assert str(failed.value).startswith("mariadb failed (exit 3): Zugriff f\ufffdr root:"), failed
    assert "s3cret" not in str(failed.value)


def test_a_full_disk_during_the_backup_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    install(url, "1.0.0")

    def full(source: Path, target: Path) -> None:
        target.write_bytes(b"half")
        Path(f"{target}-journal").write_bytes(b"x")
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(backup_module, "_sqlite_backup", full)
    env = {"UPGRADER_BACKUP_DIR": str(tmp_path / "backups")}
    result = run_cli(*cli_args(url), "upgrade", "--yes", env=env)
    assert result.exit_code == 73, result.output
    assert "disk is full" in result.output
    assert list((tmp_path / "backups").iterdir()) == []  # no partial file, no journal left
    status = status_of(url, tmp_path)
    assert status["state"] == "upgrade_pending"  # not "failed": nothing was changed
    assert any("changed nothing" in d for d in status["details"]), status["details"]


def test_the_tables_listed_are_the_ones_the_inspector_lists(db_url: str) -> None:
    """Every diagnosis lists the database's tables with its own query on PostgreSQL: it
    must list what SQLAlchemy's inspector lists (no view, no temporary table, no table of
    a schema off the search path; partitioned tables and their partitions)."""
    engine = create_engine(db_url)
    backend = engine.dialect.name
    statements = [
        "CREATE TABLE plain_one (id INTEGER PRIMARY KEY)",
        "CREATE VIEW a_view AS SELECT id FROM plain_one",
        "CREATE TEMPORARY TABLE a_temp (id INTEGER)",
    ]
    if backend == "postgresql":
        statements += [
            "CREATE TABLE parted (id INTEGER, at DATE) PARTITION BY RANGE (at)",
            "CREATE TABLE parted_2026 PARTITION OF parted "
            "FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')",
            "CREATE SCHEMA elsewhere",
            "CREATE TABLE elsewhere.hidden (id INTEGER)",
            'CREATE TABLE "Mixed Case" (id INTEGER)',
        ]
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.execute(text(statement))
            listed = tables_in(conn)
            assert listed == sorted(inspect(conn).get_table_names())
            assert "plain_one" in listed
            assert not {"a_view", "a_temp", "hidden"} & set(listed)
            if backend == "postgresql":
                assert {"parted", "parted_2026", "Mixed Case"} <= set(listed)
    finally:
        engine.dispose()


def verified_within(seconds: float, path: Path, check: Any) -> str | BaseException:
    """checked_and_hashed's checksum, or what it raised; the test fails, rather than hang,
    if it does not end."""
    answer: list[str | BaseException] = []

    def run() -> None:
        try:
            answer.append(checksum.checked_and_hashed(path, check))
        except BaseException as exc:  # handed to the test's thread
            answer.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    assert answer, "the check still waits for a hashing that never started"
    return answer[0]


@pytest.mark.parametrize("size", [0, 1, 4095, 4096, 3 * 4096 + 7])
def test_the_checksum_is_the_files_sha256(
    size: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checksum hashes the mapped file a window at a time: every window counts once,
    an empty file (which cannot be mapped) too; the check runs beside it."""
    monkeypatch.setattr(checksum, "HASHED_AT_ONCE", 4096)
    path = tmp_path / "dump"
    path.write_bytes(os.urandom(size))
    expected = hashlib.sha256(path.read_bytes()).hexdigest()
    assert checksum.sha256(path) == expected
    seen: list[str] = []
    assert verified_within(10, path, lambda: seen.append(path.name)) == expected
    assert seen == ["dump"]


def test_a_checksum_that_cannot_start_does_not_hold_up_the_check(tmp_path: Path) -> None:
    """The check waits for the hashing to start: a file the hashing cannot open ends the
    wait with the error, rather than hang the backup."""
    raised = verified_within(10, tmp_path / "gone", lambda: None)
    assert isinstance(raised, FileNotFoundError)


def test_a_wal_database_is_backed_up_with_what_its_log_holds(tmp_path: Path) -> None:
    """The copy has no journal of its own, and reads the source mapped: a database in WAL
    mode whose last commits are still only in its -wal file is copied whole, and the copy
    passes its check."""
    url = f"sqlite:///{tmp_path / 'app.db'}"
    install(url, "1.0.0")
    writer = sqlite3.connect(tmp_path / "app.db")
    try:
        assert writer.execute("PRAGMA journal_mode = WAL").fetchone()[0] == "wal"
        writer.execute("PRAGMA wal_autocheckpoint = 0")
        writer.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        writer.executemany("INSERT INTO notes (body) VALUES (?)", [("x" * 500,)] * 2000)
        writer.commit()
        assert (tmp_path / "app.db-wal").stat().st_size > 500 * 2000  # not checkpointed
        engine = create_engine(url)
        made = backup_module.create_backup(engine, tmp_path / "backups")
        engine.dispose()
    finally:
        writer.close()
    copy = sqlite3.connect(made.path)
    try:
        assert copy.execute("SELECT count(*) FROM notes").fetchone()[0] == 2000
        assert copy.execute("PRAGMA quick_check").fetchone()[0] == "ok"
    finally:
        copy.close()
    assert "notes" in made.tables
    assert made.sha256 == hashlib.sha256(Path(made.path).read_bytes()).hexdigest()
    assert not list((tmp_path / "backups").glob("*journal*"))


@pytest.mark.parametrize(
    ("dump", "refused"),
    [
        (
            b"-- MariaDB dump\n\nCREATE TABLE `a` (\n);\nCREATE TABLE `b` (\n);\n"
            b"-- Dump completed on 2026-12-02\n\n",
            None,
        ),
        (b"-- MariaDB dump\n\nCREATE TABLE `a` (\n);\nINSERT INTO `b", "incomplete"),
        (b"-- MariaDB dump\n\nCREATE TABLE `a` (\n);\nCREATE TABLE `b", "incomplete"),
        (b"-- MariaDB dump\n\nCREATE TABLE `a` (\n);\n-- Dump completed\n", "lacks table"),
        (b"", "empty"),
    ],
)
def test_a_mariadb_dump_is_checked_for_its_tables_and_its_trailer(
    dump: bytes, refused: str | None, tmp_path: Path
) -> None:
    path = tmp_path / "dump.sql"
    path.write_bytes(dump)
    if refused is None:
        backup_module._verify_mysql(path, ["a", "b"])
        return
    with pytest.raises(backup_module.BackupError, match=refused):
        backup_module._verify_mysql(path, ["a", "b"])


def test_a_file_that_is_not_a_database_is_reported_not_crashed(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    path.write_bytes(b"this is not a database" * 100)
    args = cli_args(f"sqlite:///{path}")
    for command in (("history",), ("backup",), ("maintenance", "on")):
        result = run_cli(*args, *command, env={"UPGRADER_BACKUP_DIR": str(tmp_path / "b")})
        assert result.exit_code in (69, 73), (command, result.output)
        assert "[SQL:" not in result.output and "Traceback" not in result.output
        assert "internal error" not in result.output


def test_an_unreachable_database_gives_69_not_an_invented_plan(tmp_path: Path) -> None:
    url = "postgresql+psycopg://nobody@127.0.0.1:1/none"
    args = [*cli_args(url), "--code-version", CURRENT]
    plan = run_cli(*args, "upgrade", "--plan")
    assert plan.exit_code == 69 and "pending" not in plan.output, plan.output
    for command in (("history",), ("maintenance", "on"), ("backup",)):
        result = run_cli(*args, *command, env={"UPGRADER_BACKUP_DIR": str(tmp_path / "b")})
        assert result.exit_code == 69, (command, result.output)
        assert "internal error" not in result.output


def test_the_stamp_fix_works_when_pasted(db_url: str, tmp_path: Path) -> None:
    install(db_url, CURRENT)
    execute(db_url, "DELETE FROM alembic_version")
    status = status_of(db_url, tmp_path)
    assert status["state"] == "schema_unknown"
    (command,) = [c for c in re.findall(r"`([^`]+)`", status["fix"]) if " stamp " in c]
    done = subprocess.run(
        ["sh", "-c", command + " --yes"],
        cwd="/",
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if not k.startswith("UPGRADER_")},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert status_of(db_url, tmp_path)["state"] == "ok"
    assert journal_of(db_url)[0]["kind"] == "stamp"


@pytest.fixture
def postgresql_url() -> Any:
    if not SERVER_URLS["postgresql"]:
        pytest.skip("TEST_POSTGRESQL_URL is not set")
    yield from fresh_server_database("postgresql")


def test_backups_reach_postgresql_through_its_socket(postgresql_url: str, tmp_path: Path) -> None:
    """No host in the URL: libpq's default, the Unix socket (and PG* variables) apply."""
    url = make_url(postgresql_url)
    install(postgresql_url, CURRENT)
    socket = url.set(host=None, port=None, query={"host": "/var/run/postgresql"})
    result = run_cli(
        *cli_args(socket.render_as_string(hide_password=False)),
        "backup",
        env={"UPGRADER_BACKUP_DIR": str(tmp_path / "b")},
    )
    assert result.exit_code == 0, result.output


def test_the_wizards_runs_leave_no_zombie(tmp_path: Path) -> None:
    from tests.helpers import settings
    from upgrader.engine.detach import start_detached

    url = f"sqlite:///{tmp_path / 'app.db'}"
    install(url, "1.0.0")
    process = start_detached(settings(url, tmp_path), backup=False)
    deadline = time.monotonic() + 60
    while journal_of(url) == [] or journal_of(url)[0]["status"] == "running":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    time.sleep(1)
    stat = Path(f"/proc/{process.pid}/stat")
    assert not stat.exists() or stat.read_text().split()[2] != "Z"


def test_a_locked_sqlite_database_reads_as_the_running_upgrade(tmp_path: Path) -> None:
    """A long SQLite migration holds the write lock: readers cannot read, and must say the
    upgrade is running (its process holds the lock), not that the database is gone."""
    from tests.helpers import code_with, extra_revision

    url = f"sqlite:///{tmp_path / 'app.db'}"
    install(url, CURRENT)
    code = code_with(
        tmp_path,
        "code-2.1.0",
        extra=extra_revision(
            '    op.create_table("big", sa.Column("id", sa.Integer, primary_key=True),\n'
            '                    sa.Column("pad", sa.String(200)))\n'
            '    op.execute("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n '
            "WHERE i < 300000) INSERT INTO big SELECT i, printf('%0200d', i) FROM n\")\n"
            "    import time\n    time.sleep(6)"
        ),
    )
    args = ["--database-url", url, "--migrations", str(code), "--code-version", "2.1.0"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("UPGRADER_")}
    upgrade = subprocess.Popen(
        [sys.executable, "-m", "upgrader", *args, "upgrade", "--yes", "--no-backup"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        seen = set()
        while upgrade.poll() is None and time.monotonic() < deadline:
            result = run_cli(*args, "status", "--json", env={"UPGRADER_CONNECT_TIMEOUT": "1"})
            seen.add(json.loads(result.output)["state"])
            time.sleep(0.3)
        assert "database_unavailable" not in seen, seen
        assert "upgrade_running" in seen, seen
    finally:
        output = upgrade.communicate(timeout=60)[0]
    assert upgrade.returncode == 0, output
    engine = create_engine(url)
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT COUNT(*) FROM big")) == 300000
    engine.dispose()


def test_pymysql_connections_load_no_ca_store_they_never_read() -> None:
    """PyMySQL, told nothing about TLS, uses TLS if the server offers it, checking neither
    certificate nor name, and loads the system's CA store for each connection all the
    same (17-35 ms of CPU). upgrader's connections build the same context without it; a
    TLS option given by the application goes to PyMySQL's own code."""
    url = SERVER_URLS["mysql"]
    if not url:
        pytest.skip("TEST_MYSQL_URL is not set")
    engine = database.make_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT 1").scalar() == 1
            ours = conn.connection.dbapi_connection
    finally:
        engine.dispose()
    assert ours is not None
    pymysql_own = pymysql.connections.Connection(defer_connect=True)
    assert ours.ssl is pymysql_own.ssl is True  # TLS whenever the server offers it
    assert ours._ssl_required is pymysql_own._ssl_required is False
    same = ("protocol", "verify_mode", "check_hostname", "verify_flags", "options")
    assert [getattr(ours.ctx, a) for a in same] == [getattr(pymysql_own.ctx, a) for a in same]
    assert pymysql_own.ctx.cert_store_stats()["x509_ca"] > 0  # what the cost is
    assert ours.ctx.cert_store_stats()["x509_ca"] == 0
    # The application's own TLS options: PyMySQL's context, the CA it names loaded.
    kind = type(ours)
    given = kind(defer_connect=True, ssl_ca=ca_bundle(), ssl_verify_cert=True)
    assert given._ssl_required is True
    assert given.ctx.verify_mode == ssl.CERT_REQUIRED
    assert given.ctx.cert_store_stats()["x509_ca"] > 0
    plain = kind(defer_connect=True, ssl_disabled=True)
    assert plain.ssl is False


def ca_bundle() -> str:
    """A CA bundle file on this machine: the one OpenSSL itself would read."""
    path = ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt"
    assert Path(path).is_file(), path
    return path


def test_postgresql_tools_skip_debians_wrapper_only_where_it_picks_the_newest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pg_wrapper told a host runs the newest version's program: upgrader runs that one
    (versions compared as numbers, directories without the program skipped); without a
    host, or with a PATH program that is no wrapper, PATH's program runs."""
    root, bin_dir = tmp_path / "lib", tmp_path / "bin"
    for version, executable in (("9.6", True), ("15", True), ("16", False), ("17", None)):
        (root / version / "bin").mkdir(parents=True)
        if executable is not None:
            program = root / version / "bin" / "pg_restore"
            program.write_text("#!/bin/sh\n")
            program.chmod(0o755 if executable else 0o644)
    (tmp_path / "share").mkdir()
    wrapper = tmp_path / "share" / "pg_wrapper"
    wrapper.write_text("#!/bin/sh\n")
    wrapper.chmod(0o755)
    bin_dir.mkdir()
    (bin_dir / "pg_restore").symlink_to(wrapper)
    monkeypatch.setattr(pgtools, "BINROOT", root)
    monkeypatch.setenv("PATH", str(bin_dir))
    assert pgtools.program("pg_restore", host_given=True) == str(root / "15/bin/pg_restore")
    assert pgtools.program("pg_restore", host_given=False) == "pg_restore"
    (root / "18/bin").mkdir(parents=True)  # installed while upgrader runs
    (root / "18/bin/pg_restore").write_text("#!/bin/sh\n")
    (root / "18/bin/pg_restore").chmod(0o755)
    assert pgtools.program("pg_restore", host_given=True) == str(root / "18/bin/pg_restore")
    (bin_dir / "pg_restore").unlink()
    (bin_dir / "pg_restore").write_text("#!/bin/sh\n")  # a build of its own: no wrapper
    (bin_dir / "pg_restore").chmod(0o755)
    assert pgtools.program("pg_restore", host_given=True) == "pg_restore"


def test_a_postgresql_backup_runs_the_tools_the_wrapper_would(
    postgresql_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where PATH's pg_dump is Debian's pg_wrapper (this machine), the version check, the
    dump and its check run the newest version's programs directly; the backup verifies."""
    found = shutil.which("pg_dump")
    if not found or Path(found).resolve().name != pgtools.WRAPPER:
        pytest.skip("PATH's pg_dump is not Debian's pg_wrapper")
    newest = pgtools.newest("pg_dump")
    assert newest is not None
    ran = programs_started(monkeypatch)
    install(postgresql_url, CURRENT)
    engine = create_engine(postgresql_url)
    try:
        saved = backup_module.create_backup(engine, tmp_path / "b")
    finally:
        engine.dispose()
    assert saved.size > 0 and "books" in saved.tables
    programs = [next(a for a in argv if "pg_" in a) for argv in ran]
    assert programs == [newest, newest, str(Path(newest).with_name("pg_restore"))], ran
    assert ran[0][1:3] == ["--version", f"--host={make_url(postgresql_url).host}"], ran[0]


def test_step_rows_are_written_as_given(db_url: str) -> None:
    """Several steps' rows at once (PostgreSQL: one COPY), with text COPY would have to
    escape; a row the table refuses raises SQLAlchemy's error and writes none of them."""
    import datetime as dt

    from sqlalchemy.exc import IntegrityError

    from upgrader.core import journal
    from upgrader.core.tables import define_tables, ensure_tables

    engine = create_engine(db_url)
    tables = define_tables()
    ensure_tables(engine, tables)
    started = dt.datetime(2026, 12, 3, 10, 0, 1)
    odd = "tab\\there, a backslash \\N and a quote ' \"\nnew line, ü"
    messages = {1: "step 1", 2: odd, 3: "step 3"}
    rows = [
        journal.step_row(1, k, f"r{k:02d}", messages[k], "succeeded", started, k / 8)
        for k in (1, 2, 3)
    ]
    try:
        with engine.begin() as conn:
            journal.record_steps(conn, tables, rows)
        written = journal.steps_of(engine, tables, 1)
        assert [(r["position"], r["revision"], r["message"], r["duration"]) for r in written] == [
            (1, "r01", "step 1", 0.125),
            (2, "r02", odd, 0.25),
            (3, "r03", "step 3", 0.375),
        ]
        assert {r["started_at"] for r in written} == {started}
        assert [r["finished_at"] for r in written] == [r["finished_at"] for r in rows]
        refused = [{**rows[0], "run_id": 2}, {**rows[1], "run_id": 2, "revision": None}]
        with pytest.raises(IntegrityError), engine.begin() as conn:
            journal.record_steps(conn, tables, refused)
        assert journal.steps_of(engine, tables, 2) == []
    finally:
        engine.dispose()
