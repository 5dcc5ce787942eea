"""Backups with each database's native tool, verified before anyone relies on them.

- SQLite: the online backup API in one step (a consistent snapshot), checked
  with `PRAGMA quick_check`;
- PostgreSQL: `pg_dump --format=custom`, checked with `pg_restore --list`;
- MariaDB/MySQL: `mariadb-dump`/`mysqldump --single-transaction`, checked for
  its "Dump completed" trailer.

Every check also confirms the backup holds each table the database had.
Passwords reach the tools through their environment (PGPASSWORD) or a pipe
(MariaDB's --defaults-extra-file=/dev/fd/N), never through the command line nor a
file: a killed run leaves no credential behind. (Older releases wrote a 0600 file;
every command removes any such file a killed run left.)
The tools die with upgrader (engine/backuptools.py); on Debian and Ubuntu the PostgreSQL
ones run without their Perl wrapper where it would run the newest version anyway
(engine/pgtools.py).
A backup is written under a temporary name and renamed when verified, so a
half-written file never looks like a backup; backups are 0600 in a 0700
directory, since they hold everything the application stores. Beside each,
`<file>.json` says which database it is of, when, at which version, and its
SHA-256.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import mmap
import os
import re
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import URL, Engine, text

from upgrader.core import processes
from upgrader.core.database import redact
from upgrader.core.tables import tables_in
from upgrader.engine import pgtools
from upgrader.engine.backuptools import BackupError, Tool, run, running
from upgrader.engine.checksum import checked_and_hashed, sha256

LOCK_WAIT = "60s"
"""pg_dump waits this long for a table lock: a statement of a killed run may hold one."""


@dataclass(frozen=True)
class Backup:
    path: str
    size: int
    sha256: str
    dialect: str
    database: str
    host: str | None
    created_at: str
    tables: list[str]
    schema_version: str | None = None
    revisions: list[str] | None = None

    @property
    def sidecar(self) -> Path:
        return Path(self.path + ".json")


def database_name(url: URL) -> str:
    if url.get_backend_name() == "sqlite":
        return Path(url.database or "").name
    return url.database or ""


# ----------------------------------------------------------------- pre-flight


def preflight(engine: Engine, backup_dir: Path) -> list[str]:
    """What would stop a backup, found before anything is changed. Empty when all is well."""
    problems: list[str] = []
    backend = engine.url.get_backend_name()
    if backend == "postgresql":
        problems += [
            f"{t} is not installed (PostgreSQL client tools)"
            for t in ("pg_dump", "pg_restore")
            if not shutil.which(t)
        ]
    elif backend in ("mysql", "mariadb") and not _mysql_tool("dump"):
        problems.append(
            "neither mariadb-dump nor mysqldump is installed (MariaDB/MySQL client tools)"
        )
    elif backend == "sqlite" and not Path(engine.url.database or "").is_file():
        problems.append(f"the database file {engine.url.database} does not exist")
    try:
        private_directory(backup_dir)
        with tempfile.NamedTemporaryFile(dir=backup_dir, prefix=".write-test-"):
            pass
    except OSError as exc:
        problems.append(f"the backup directory {backup_dir} is not writable: {exc.strerror or exc}")
        return problems
    needed = estimated_size(engine)
    free = shutil.disk_usage(backup_dir).free
    if needed is not None and free < needed * 1.1 + 16 * 1024 * 1024:
        problems.append(
            f"too little disk space in {backup_dir}: {_mb(free)} free, the backup needs about "
            f"{_mb(needed)}"
        )
    if backend == "postgresql" and not problems:
        problems += _pg_version_problem(engine)
    return problems


def private_directory(path: Path) -> None:
    """Make `path` (and its missing parents) and keep it readable by its owner only."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_uid == os.getuid():
        path.chmod(0o700)


def credential_leftovers() -> list[Path]:
    """Password files that a killed backup of an older upgrader left in this user's private
    temporary directory (this one writes none: the password reaches the dump tools through
    their environment or a pipe). `doctor` lists them; `remove_credential_leftovers()`,
    run by every command, deletes them."""
    base = Path(tempfile.gettempdir()) / f"upgrader-{os.getuid()}"
    try:
        if base.is_symlink() or base.stat().st_uid != os.getuid():
            return []
        entries = list(base.iterdir())
    except OSError:
        return []
    return [e for e in entries if not _alive_owner(e.name)]


def remove_credential_leftovers() -> list[Path]:
    """Delete what `credential_leftovers()` finds; returns what was deleted."""
    found = credential_leftovers()
    for path in found:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return found


def _alive_owner(name: str) -> bool:
    """Entries are named by the process that made them (`<pid>-…`)."""
    owner = name.split("-")[0]
    if not owner.isdigit() or int(owner) == os.getpid():
        return False
    return processes.state_of(int(owner)) in (processes.RUNNING, processes.STOPPED)


def estimated_size(engine: Engine) -> int | None:
    backend = engine.url.get_backend_name()
    try:
        if backend == "sqlite":
            return Path(engine.url.database or "").stat().st_size
        with engine.connect() as conn:
            if backend == "postgresql":
                value = conn.scalar(text("SELECT pg_database_size(current_database())"))
            else:
                value = conn.scalar(
                    text(
                        "SELECT COALESCE(SUM(data_length + index_length), 0) "
                        "FROM information_schema.tables WHERE table_schema = DATABASE()"
                    )
                )
        return int(value or 0)
    except Exception:
        return None


def _mb(n: float) -> str:
    return f"{n / 1024 / 1024:.0f} MB"


def _pg_version_problem(engine: Engine) -> list[str]:
    """pg_dump refuses servers newer than itself: say so before the upgrade, not during it.
    Asked with the dump's own connection options, so that Debian's pg_wrapper (which picks
    a version by them) answers for the pg_dump the backup will run."""
    args, _ = _pg_env(engine.url)
    out = subprocess.run(
        [_pg_program("pg_dump", args), "--version", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    match = re.search(r"(\d+)(?:\.\d+)?", out.stdout)
    with engine.connect() as conn:
        server = int(conn.scalar(text("SHOW server_version_num")) or 0) // 10000
    if match and int(match.group(1)) < server:
        return [
            f"pg_dump {match.group(1)} cannot dump a PostgreSQL {server} server; install "
            f"the PostgreSQL {server} client tools"
        ]
    return []


# ------------------------------------------------------------------- backups


def create_backup(
    engine: Engine,
    backup_dir: Path,
    *,
    label: str = "backup",
    schema_version: str | None = None,
    revisions: list[str] | None = None,
    checked: bool = False,
) -> Backup:
    """Write, verify and checksum a backup of the whole database. `checked`: the caller ran
    the pre-flight a moment ago."""
    problems = [] if checked else preflight(engine, backup_dir)
    if problems:
        raise BackupError("; ".join(problems))
    url = engine.url
    backend = url.get_backend_name()
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    ext = {"sqlite": "sqlite", "postgresql": "pgdump"}.get(backend, "sql")
    for stale in backup_dir.glob("*.partial*"):  # a killed backup's; we hold the upgrade lock
        stale.unlink(missing_ok=True)
    name = f"{_safe(database_name(url))}-{stamp}-{_safe(label)}"
    final = backup_dir / f"{name}.{ext}"
    for n in range(2, 1000):  # two backups within one second keep both
        if not final.exists():
            break
        final = backup_dir / f"{name}-{n}.{ext}"
    partial = final.with_name(final.name + ".partial")
    try:
        # The tables the backup must hold are listed while the dump tool starts and runs,
        # when this process would only wait (the listing: 0.5-0.8 ms on MariaDB).
        if backend == "sqlite":
            tables = _table_names(engine)
            _sqlite_backup(Path(url.database or ""), partial)
            digest = checked_and_hashed(partial, lambda: _verify_sqlite(partial, tables))
        elif backend == "postgresql":
            with _pg_dump(url, partial):
                tables = _table_names(engine)
            digest = checked_and_hashed(partial, lambda: _verify_pg(partial, tables))
        else:
            with _mysql_dump(url, partial):
                tables = _table_names(engine)
            digest = checked_and_hashed(partial, lambda: _verify_mysql(partial, tables))
        partial.chmod(0o600)
        os.replace(partial, final)
    except (OSError, sqlite3.Error) as exc:  # a full disk, above all
        raise BackupError(f"writing {final} failed: {redact(str(exc), url)}") from exc
    finally:
        for leftover in (partial, Path(f"{partial}-journal")):
            leftover.unlink(missing_ok=True)
    backup = Backup(
        path=str(final.resolve()),
        size=final.stat().st_size,
        sha256=digest,
        dialect=backend,
        database=database_name(url),
        host=url.host,
        created_at=stamp,
        tables=tables,
        schema_version=schema_version,
        revisions=revisions,
    )
    fd = os.open(backup.sidecar, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(json.dumps(asdict(backup), indent=2))
    return backup


def _table_names(engine: Engine) -> list[str]:
    """The database's tables, as every other part of upgrader lists them."""
    with engine.connect() as conn:
        return tables_in(conn)


def _safe(text_: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text_) or "database"


def _sqlite_backup(source: Path, target: Path) -> None:
    src = sqlite3.connect(source.resolve().as_uri() + "?mode=ro", uri=True)
    dst = sqlite3.connect(target)
    try:
        # The source is read mapped, as the check reads the copy (a pread per page saved);
        # the copy has no rollback journal: nobody reads it until it is verified and
        # renamed, and it is still synced (1 fdatasync instead of 6). Each saves about a
        # sixth of the copy.
        src.execute(f"PRAGMA mmap_size = {MAPPED}")
        dst.execute("PRAGMA journal_mode = OFF")
        src.backup(dst)  # pages=-1: one read transaction, a consistent snapshot
    finally:
        dst.close()
        src.close()


MAPPED = 1 << 30
"""How much of a SQLite database its backup reads mapped, and of the copy its check (1 GiB;
the rest with read())."""


def _verify_sqlite(path: Path, tables: list[str]) -> None:
    conn = sqlite3.connect(path)
    try:
        # quick_check reads every page and checks the b-trees, which is what a copy made by
        # the backup API can get wrong; integrity_check also re-derives every index entry
        # from its table, which would only find damage the source already had. Reading the
        # file mapped saves a read() per page (a tenth of the check).
        conn.execute(f"PRAGMA mmap_size = {MAPPED}")
        result = conn.execute("PRAGMA quick_check").fetchone()[0]
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        conn.close()
    if result != "ok":
        raise BackupError(f"the SQLite backup failed its integrity check: {result}")
    _require_tables(names, tables)


def _require_tables(found: set[str], expected: list[str]) -> None:
    missing = sorted(set(expected) - found)
    if missing:
        raise BackupError(f"the backup lacks table(s) {', '.join(missing)}")


def _pg_env(url: URL) -> tuple[list[str], dict[str, str]]:
    """Connection options, and an environment holding the password (PGPASSWORD): it never
    touches the disk, and only this user (and root) can read a process's environment.

    What the URL names is passed on; what it leaves out (the host, for a Unix socket) is
    left to libpq's defaults and the PG* variables, as the driver does."""
    env = {k: v for k, v in os.environ.items() if k not in ("PGPASSWORD", "PGPASSFILE")}
    query_host = url.query.get("host")
    host = url.host or (query_host if isinstance(query_host, str) else None)
    args = [f"--host={host}"] if host else []
    if url.port:
        args.append(f"--port={url.port}")
    if url.username:
        args.append(f"--username={url.username}")
    sslmode = url.query.get("sslmode")
    if isinstance(sslmode, str):
        env["PGSSLMODE"] = sslmode
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    return args, env


def _pg_program(name: str, args: list[str]) -> str:
    return pgtools.program(name, host_given=any(a.startswith("--host=") for a in args))


def _pg_dump(url: URL, target: Path) -> contextlib.AbstractContextManager[Tool]:
    """pg_dump, running while the block does."""
    args, env = _pg_env(url)
    return running(
        [
            _pg_program("pg_dump", args),
            "--format=custom",
            "--no-password",
            f"--lock-wait-timeout={LOCK_WAIT}",
            *args,
            f"--file={target}",
            f"--dbname={url.database}",
        ],
        env,
        url,
        "pg_dump",
    )


def _verify_pg(path: Path, tables: list[str]) -> None:
    """pg_restore reads any archive of a pg_dump as new as itself: on Debian the newest
    installed (the one the dump ran, when a host was given) is run without its wrapper."""
    toc = run(
        [pgtools.program("pg_restore", host_given=True), "--list", str(path)],
        dict(os.environ),
        URL.create("postgresql"),
        "pg_restore --list",
    )
    found = {m.group(1) for m in re.finditer(r" TABLE \S+ (\S+) ", toc)}
    _require_tables(found, tables)


def _mysql_tool(kind: str) -> str | None:
    names = ("mariadb-dump", "mysqldump") if kind == "dump" else ("mariadb", "mysql")
    return next((found for n in names if (found := shutil.which(n))), None)


@contextlib.contextmanager
def _mysql_options(url: URL) -> Iterator[tuple[str, int]]:
    """The client's options, password included, through a pipe the tool reads as its
    `--defaults-extra-file` (/dev/fd/N): never on disk, gone with the process. Yields the
    file's name and the descriptor to pass to the tool."""

    def quoted(value: object) -> str:
        return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = [
        "[client]",
        f"user={quoted(url.username or 'root')}",
        f"host={url.host or 'localhost'}",
        f"port={url.port or 3306}",
    ]
    if url.password:
        lines.append(f"password={quoted(url.password)}")
    read, write = os.pipe()
    try:
        os.write(write, ("\n".join(lines) + "\n").encode())  # a few bytes: the pipe holds them
        os.close(write)
        write = -1
        yield f"/dev/fd/{read}", read
    finally:
        os.close(read)
        if write != -1:
            os.close(write)


@contextlib.contextmanager
def _mysql_dump(url: URL, target: Path) -> Iterator[Tool]:
    """mariadb-dump (or mysqldump), running while the block does."""
    tool = _mysql_tool("dump")
    assert tool is not None
    with _mysql_options(url) as (options, fd):
        argv = [
            tool,
            f"--defaults-extra-file={options}",
            "--single-transaction",
            "--routines",
            "--triggers",
            "--events",
            "--hex-blob",
            f"--result-file={target}",
            url.database or "",
        ]
        with running(argv, dict(os.environ), url, os.path.basename(tool), pass_fds=(fd,)) as dump:
            yield dump


def _verify_mysql(path: Path, tables: list[str]) -> None:
    """The tables it creates, and the trailer a complete dump ends with: found in the
    mapped file with bytes.find (memchr-fast; a loop over lines in Python, or a regular
    expression, took 10-40 ms for a 3.5 MB dump)."""
    with open(path, "rb") as handle:
        if os.fstat(handle.fileno()).st_size == 0:
            raise BackupError("the dump is empty")
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            found = _created_tables(data)
            tail = data[max(0, len(data) - 4096) :].rstrip()
    if not tail.rsplit(b"\n", 1)[-1].startswith(b"-- Dump completed"):
        raise BackupError("the dump is incomplete: it lacks the '-- Dump completed' trailer")
    _require_tables(found, tables)


def _created_tables(data: mmap.mmap) -> set[str]:
    marker = b"\nCREATE TABLE `"
    found: set[str] = set()
    at = data.find(marker)
    while at >= 0:
        start = at + len(marker)
        end = data.find(b"`", start)
        if end < 0:  # cut off inside the name: the trailer check says so
            break
        found.add(data[start:end].decode("utf-8", "replace"))
        at = data.find(marker, end)
    return found


# ------------------------------------------------------------------- restore


def read_backup(path: Path) -> Backup:
    """The sidecar of a backup, with the file checked against its checksum."""
    sidecar = Path(str(path) + ".json")
    if not path.is_file():
        raise BackupError(f"{path} does not exist")
    if not sidecar.is_file():
        raise BackupError(
            f"{sidecar} is missing: upgrader restores only backups it made and verified"
        )
    try:
        backup = Backup(**json.loads(sidecar.read_text()))
    except (ValueError, TypeError) as exc:
        raise BackupError(f"{sidecar} is damaged: {exc}") from exc
    if sha256(path) != backup.sha256:
        raise BackupError(f"{path} does not match its checksum: the file was changed or is damaged")
    return backup


def check_belongs(backup: Backup, engine: Engine) -> None:
    url = engine.url
    if backup.dialect != url.get_backend_name() or backup.database != database_name(url):
        raise BackupError(
            f"this is a backup of the {backup.dialect} database {backup.database!r}; this "
            f"installation uses the {url.get_backend_name()} database {database_name(url)!r}"
        )


def restore_backup(engine: Engine, path: Path) -> Backup:
    """Make the database exactly what the backup holds. The caller holds the upgrade lock."""
    backup = read_backup(path)
    check_belongs(backup, engine)
    url = engine.url
    backend = url.get_backend_name()
    if backend == "sqlite":  # exactly the file that was verified, wherever it was moved
        src = sqlite3.connect(Path(path).resolve().as_uri() + "?mode=ro", uri=True)
        dst = sqlite3.connect(url.database or "")
        try:
            src.backup(dst)
        finally:
            dst.close()
            src.close()
        return backup
    engine.dispose()  # our own pooled connections would hold locks on what we drop
    extra = sorted(set(_table_names(engine)) - set(backup.tables))
    if backend == "postgresql":
        with engine.begin() as conn:
            for table in extra:
                conn.execute(text(f"DROP TABLE IF EXISTS {_q(conn, table)} CASCADE"))
        args, env = _pg_env(url)
        run(
            [
                _pg_program("pg_restore", args),
                "--clean",
                "--if-exists",
                "--no-owner",
                "--single-transaction",
                "--exit-on-error",
                "--no-password",
                *args,
                f"--dbname={url.database}",
                str(path),
            ],
            env,
            url,
            "pg_restore",
        )
    else:
        with engine.begin() as conn:
            conn.execute(text("SET FOREIGN_KEY_CHECKS = 0"))
            for table in extra:
                conn.execute(text(f"DROP TABLE IF EXISTS {_q(conn, table)}"))
            conn.execute(text("SET FOREIGN_KEY_CHECKS = 1"))
        tool = _mysql_tool("client")
        if tool is None:
            raise BackupError("the mariadb (or mysql) client is not installed")
        with _mysql_options(url) as (options, fd), open(path, "rb") as dump:
            run(
                [tool, f"--defaults-extra-file={options}", url.database or ""],
                dict(os.environ),
                url,
                os.path.basename(tool),
                stdin=dump,
                pass_fds=(fd,),
            )
    engine.dispose()
    return backup


def _q(conn: Any, name: str) -> str:
    return str(conn.dialect.identifier_preparer.quote(name))
