"""Backups with each database's native tool, verified before anyone relies on them.

- SQLite: the online backup API in one step (a consistent snapshot), checked
  with `PRAGMA quick_check`;
- PostgreSQL: `pg_dump --format=custom`, checked with `pg_restore --list`;
- MariaDB/MySQL: `mariadb-dump`/`mysqldump --single-transaction`, checked for
  its "Dump completed" trailer.

Every check also confirms the backup holds each table the database had.
Passwords reach the tools through a 0600 file (PGPASSFILE, or
--defaults-extra-file) in a private 0700 directory, never through the command
line; a run killed before it could remove that file has it removed by the next.
The tools die with upgrader (PR_SET_PDEATHSIG, through util-linux's `setpriv`).
A backup is written under a temporary name and renamed when verified, so a
half-written file never looks like a backup; backups are 0600 in a 0700
directory, since they hold everything the application stores. Beside each,
`<file>.json` says which database it is of, when, at which version, and its
SHA-256.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
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

from sqlalchemy import URL, Engine, inspect, text

from upgrader.core.database import redact

DUMP_TIMEOUT = 6 * 3600
LOCK_WAIT = "60s"
"""pg_dump waits this long for a table lock: a statement of a killed run may hold one."""


class BackupError(Exception):
    """A backup or restore could not be made or verified; the message says why."""


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


@contextlib.contextmanager
def _secrets_dir() -> Iterator[Path]:
    """A 0700 directory for the dump tools' credentials, removed afterwards. Each is named
    by its process; those of processes that are gone (killed runs) are removed here."""
    base = _secrets_base()
    path = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _secrets_base() -> Path:
    """The private directory of this user's credential files; entries of processes that are
    gone (killed runs) are removed here, by every backup, whatever its database."""
    base = Path(tempfile.gettempdir()) / f"upgrader-{os.getuid()}"
    try:
        private_directory(base)
        if base.is_symlink() or base.stat().st_uid != os.getuid():
            raise OSError("not ours")
    except OSError:
        return Path(tempfile.mkdtemp(prefix="upgrader-"))
    for stale in base.iterdir():
        owner = stale.name.split("-")[0]
        if owner.isdigit() and not _alive(int(owner)):
            shutil.rmtree(stale, ignore_errors=True)
    return base


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
    """pg_dump refuses servers newer than itself: say so before the upgrade, not during it."""
    out = subprocess.run(["pg_dump", "--version"], capture_output=True, text=True, check=False)
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
    tables = sorted(inspect(engine).get_table_names())
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    ext = {"sqlite": "sqlite", "postgresql": "pgdump"}.get(backend, "sql")
    for stale in backup_dir.glob("*.partial*"):  # a killed backup's; we hold the upgrade lock
        stale.unlink(missing_ok=True)
    _secrets_base()  # and a killed backup's credentials
    name = f"{_safe(database_name(url))}-{stamp}-{_safe(label)}"
    final = backup_dir / f"{name}.{ext}"
    for n in range(2, 1000):  # two backups within one second keep both
        if not final.exists():
            break
        final = backup_dir / f"{name}-{n}.{ext}"
    partial = final.with_name(final.name + ".partial")
    try:
        if backend == "sqlite":
            _sqlite_backup(Path(url.database or ""), partial)
            _verify_sqlite(partial, tables)
        elif backend == "postgresql":
            _pg_dump(url, partial)
            _verify_pg(partial, tables)
        else:
            _mysql_dump(url, partial)
            _verify_mysql(partial, tables)
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
        sha256=sha256(final),
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


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _safe(text_: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text_) or "database"


def _sqlite_backup(source: Path, target: Path) -> None:
    src = sqlite3.connect(source.resolve().as_uri() + "?mode=ro", uri=True)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)  # pages=-1: one read transaction, a consistent snapshot
    finally:
        dst.close()
        src.close()


def _verify_sqlite(path: Path, tables: list[str]) -> None:
    conn = sqlite3.connect(path)
    try:
        # quick_check reads every page and checks the b-trees, which is what a copy made by
        # the backup API can get wrong; integrity_check also re-derives every index entry
        # from its table, which would only find damage the source already had.
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


@contextlib.contextmanager
def _pg_env(url: URL) -> Iterator[tuple[list[str], dict[str, str]]]:
    """Connection options and an environment with a temporary 0600 password file.

    What the URL names is passed on; what it leaves out (the host, for a Unix socket) is
    left to libpq's defaults and the PG* variables, as the driver does."""
    env = dict(os.environ)
    env.pop("PGPASSWORD", None)
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
    with _secrets_dir() as tmp:
        if url.password:
            passfile = tmp / "pgpass"
            fields = [
                "*",
                "*",
                "*",
                "*",
                str(url.password),
            ]
            passfile.write_text(
                ":".join(f.replace("\\", "\\\\").replace(":", "\\:") for f in fields) + "\n"
            )
            passfile.chmod(0o600)
            env["PGPASSFILE"] = str(passfile)
        yield args, env


def _run(argv: list[str], env: dict[str, str], url: URL, what: str, **kw: Any) -> str:
    guard = shutil.which("setpriv")
    if guard:  # the tool dies with us, rather than dump on after a kill -9
        argv = [guard, "--pdeathsig", "SIGKILL", "--", *argv]
    try:
        done = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=DUMP_TIMEOUT, check=False, **kw
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BackupError(f"{what} could not run: {redact(str(exc), url)}") from exc
    if done.returncode != 0:
        message = " ".join((done.stderr or done.stdout).split())[:2000]
        raise BackupError(f"{what} failed (exit {done.returncode}): {redact(message, url)}")
    return str(done.stdout)


def _pg_dump(url: URL, target: Path) -> None:
    with _pg_env(url) as (args, env):
        _run(
            [
                "pg_dump",
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
    toc = _run(
        ["pg_restore", "--list", str(path)],
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
def _mysql_options(url: URL) -> Iterator[str]:
    """A temporary 0600 option file: how MySQL's docs say to pass a password safely."""

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
    with _secrets_dir() as tmp:
        name = str(tmp / "client.cnf")
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write("\n".join(lines) + "\n")
        yield name


def _mysql_dump(url: URL, target: Path) -> None:
    tool = _mysql_tool("dump")
    assert tool is not None
    with _mysql_options(url) as options:
        _run(
            [
                tool,
                f"--defaults-extra-file={options}",
                "--single-transaction",
                "--routines",
                "--triggers",
                "--events",
                "--hex-blob",
                f"--result-file={target}",
                url.database or "",
            ],
            dict(os.environ),
            url,
            os.path.basename(tool),
        )


def _verify_mysql(path: Path, tables: list[str]) -> None:
    with open(path, "rb") as handle:
        handle.seek(max(0, path.stat().st_size - 4096))
        tail = handle.read().decode("utf-8", "replace")
    if "-- Dump completed" not in tail:
        raise BackupError("the dump is incomplete: it lacks the '-- Dump completed' trailer")
    found: set[str] = set()
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if line.startswith("CREATE TABLE `"):
                found.add(line.split("`")[1])
    _require_tables(found, tables)


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
    extra = sorted(set(inspect(engine).get_table_names()) - set(backup.tables))
    if backend == "postgresql":
        with engine.begin() as conn:
            for table in extra:
                conn.execute(text(f"DROP TABLE IF EXISTS {_q(conn, table)} CASCADE"))
        with _pg_env(url) as (args, env):
            _run(
                [
                    "pg_restore",
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
        with _mysql_options(url) as options, open(path, "rb") as dump:
            _run(
                [tool, f"--defaults-extra-file={options}", url.database or ""],
                dict(os.environ),
                url,
                os.path.basename(tool),
                stdin=dump,
            )
    engine.dispose()
    return backup


def _q(conn: Any, name: str) -> str:
    return str(conn.dialect.identifier_preparer.quote(name))
