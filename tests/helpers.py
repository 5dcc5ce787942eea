"""Building installations in known states: the sample application at any release."""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from alembic import command
from click.testing import CliRunner, Result
from flask.cli import FlaskGroup
from sqlalchemy import create_engine, make_url, text

from upgrader.cli.main import cli
from upgrader.core import storage, times
from upgrader.core.revisions import alembic_config
from upgrader.core.tables import define_tables, ensure_tables
from upgrader.sample.data import seed
from upgrader.sample.releases import CURRENT, RELEASES
from upgrader.settings import Settings, resolve

ROOT = Path(__file__).resolve().parent.parent
MIGRATIONS = ROOT / "migrations"
SAMPLE = "upgrader.sample:create_app"
"""The sample application, named: upgrader never falls back to it."""


def code_at(release: str, tmp_path: Path) -> Path:
    """A copy of migrations/ as the code of `release` shipped it (later revisions left out)."""
    target = tmp_path / f"code-{release}"
    if target.exists():
        return target
    last = RELEASES[release]
    shutil.copytree(MIGRATIONS, target, ignore=shutil.ignore_patterns("__pycache__"))
    for script in (target / "versions").glob("*.py"):
        if script.stem > last:
            script.unlink()
    return target


def settings(url: str, tmp_path: Path, release: str = CURRENT, **flags: Any) -> Settings:
    """Settings for the sample application's code at `release` against `url`."""
    migrations = MIGRATIONS if release == CURRENT else code_at(release, tmp_path)
    values: dict[str, Any] = {
        "database_url": url,
        "migrations": str(migrations),
        "code_version": release,
        "installer_dir": str(tmp_path / "no-installer"),
    }
    values.update(flags)
    return resolve(values, environ={})


def cli_args(url: str, tmp_path: Path | None = None, release: str = CURRENT) -> list[str]:
    """The flags that point `upgrader` at the sample's code of `release`, on `url`."""
    migrations = MIGRATIONS if release == CURRENT else code_at(release, tmp_path or Path("."))
    return ["--database-url", url, "--migrations", str(migrations), "--code-version", release]


RELEASES_ENV = ",".join(f"{v}={r}" for v, r in RELEASES.items())
"""The sample's releases, as UPGRADER_RELEASES (lets fixes name a release)."""


def progress_lines(output: str) -> list[str]:
    """The step lines an upgrade prints, as "[k/n]", "done in" and "done: steps i to k"
    (elapsed times, messages and durations left out)."""
    return re.findall(r"^ *[0-9.]+s +(\[\d+/\d+\]|done in|done: steps \d+ to \d+)", output, re.M)


def run_cli(*args: str, env: dict[str, str] | None = None, input: str | None = None) -> Result:
    env = {
        "UPGRADER_INSTALLER_DIR": "/nonexistent/install",
        "UPGRADER_RELEASES": RELEASES_ENV,
        **(env or {}),
    }
    return CliRunner().invoke(cli, list(args), env=env, input=input, catch_exceptions=False)


def migrate(url: str, revision: str) -> None:
    """Apply the sample application's migrations up to `revision` through its own env.py."""
    cfg = alembic_config(MIGRATIONS)
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["configure_logger"] = False
    command.upgrade(cfg, revision)


def install(url: str, release: str, *, data: bool = True, record: bool = True) -> None:
    """The database as upgrader would have left it after installing `release`."""
    migrate(url, RELEASES[release])
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            if data:
                seed(conn, release)
        if record:
            tables = define_tables()
            ensure_tables(engine, tables)
            with engine.begin() as conn:
                storage.write_single_state(conn, tables, release)
    finally:
        engine.dispose()


def execute(url: str, *statements: str, **params: Any) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.execute(text(statement), params)
    finally:
        engine.dispose()


def add_run(url: str, **values: Any) -> None:
    """A journal row, as a run of the upgrade engine writes it."""
    now = times.utcnow()
    row: dict[str, Any] = {
        "kind": "upgrade",
        "status": "running",
        "trigger": "cli",
        "actor": "deploy",
        "host": "web-1",
        "pid": 4242,
        "started_at": now - dt.timedelta(minutes=2),
        "heartbeat_at": now - dt.timedelta(seconds=5),
        "lease_expires_at": now + dt.timedelta(seconds=55),
        "from_version": "1.0.0",
        "to_version": CURRENT,
        "step": 1,
        "steps": 2,
        "revision": "0002_loans_isbn",
        "message": "Release 1.1.0: loans table and an ISBN for each book",
    }
    row.update(values)
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(define_tables().runs.insert().values(**row))
    finally:
        engine.dispose()


def safe(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def code_with(tmp_path: Path, name: str, *, sleep: float = 0.0, extra: str | None = None) -> Path:
    """A copy of migrations/ whose upgrades first sleep, and optionally an extra revision.

    Sleeping before any DDL lets a test kill a run inside a step without leaving
    half a migration behind on MariaDB, where DDL commits as it runs.
    """
    target = tmp_path / name
    shutil.copytree(MIGRATIONS, target, ignore=shutil.ignore_patterns("__pycache__"))
    for script in (target / "versions").glob("*.py"):
        source = script.read_text()
        if sleep:
            source = source.replace(
                "def upgrade() -> None:\n",
                f"def upgrade() -> None:\n    import time\n\n    time.sleep({sleep})\n",
            )
        script.write_text(source)
    if extra is not None:
        (target / "versions" / "0004_extra.py").write_text(extra)
    return target


def extra_revision(body: str) -> str:
    """Release 2.1.0's revision, with the given upgrade() body."""
    return (
        '"""Release 2.1.0: shelf locations\n\nRevision ID: 0004_extra\n"""\n'
        "import sqlalchemy as sa\nfrom alembic import op\n\n"
        'revision = "0004_extra"\ndown_revision = "0003_sort_names"\n'
        "branch_labels = None\ndepends_on = None\n\n\n"
        f"def upgrade() -> None:\n{body}\n"
    )


def content(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every application table, sorted: equal content compares equal."""
    from sqlalchemy import MetaData, select

    engine = create_engine(url)
    try:
        md = MetaData()
        md.reflect(engine)
        with engine.connect() as conn:
            return {
                name: sorted(tuple(str(v) for v in row) for row in conn.execute(select(t)))
                for name, t in md.tables.items()
                if not name.startswith("upgrader_")
            }
    finally:
        engine.dispose()


def status_of(
    url: str, tmp_path: Path, migrations: Path | None = None, release: str = CURRENT
) -> dict[str, Any]:
    import json

    args = cli_args(url, tmp_path, release)
    if migrations is not None:
        args[3] = str(migrations)
    return dict(json.loads(run_cli(*args, "status", "--json").output))


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 20) -> None:
    import socket
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port}")


def journal_of(url: str) -> list[dict[str, Any]]:
    """The journal, newest first, as `history --json` gives it.

    On SQLite it waits up to 30 s for a running upgrade's write lock: a loaded CI machine
    once held one past pysqlite's default 5 s while a test polled the journal."""
    engine = create_engine(url, connect_args={"timeout": 30} if url.startswith("sqlite") else {})
    try:
        with engine.connect() as conn:
            return [r.to_dict() for r in storage.recent_runs(conn, define_tables(), 50)]
    finally:
        engine.dispose()


@contextlib.contextmanager
def serving(
    count: int, env: dict[str, str], *, app: list[str] | None = None, cwd: Path | None = None
) -> Iterator[list[tuple[int, subprocess.Popen[bytes]]]]:
    """`count` processes of `upgrader [--app …] serve`, each on a port of its own, with
    `env`; listening when this yields (port, process) pairs, stopped after."""
    ports = [free_port() for _ in range(count)]
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "upgrader", *(app or []), "serve", "--port", str(port)],
            cwd=cwd,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for port in ports
    ]
    try:
        for port in ports:
            wait_for_port(port)
        yield list(zip(ports, processes, strict=True))
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=10)


class FlaskRunner:
    """Invokes the `flask` command line of an application (its plugin commands included)."""

    def __init__(self, app: Any) -> None:
        self.group = FlaskGroup(create_app=lambda: app)
        self.runner = app.test_cli_runner()

    def invoke(self, args: list[str]) -> Any:
        return self.runner.invoke(self.group, args=args)


def dump_running(parent: int) -> bool:
    """Whether a dump tool runs as a child of `parent` (setpriv execs into it)."""
    for proc in Path("/proc").iterdir():
        try:
            stat_line = (proc / "stat").read_text()
        except OSError:
            continue
        name = stat_line[stat_line.index("(") + 1 : stat_line.rindex(")")]
        ppid = int(stat_line[stat_line.rindex(")") + 2 :].split()[1])
        if ppid == parent and name in ("pg_dump", "mariadb-dump", "mysqldump"):
            return True
    return False


def programs_started(monkeypatch: Any) -> list[list[str]]:
    """The command line of every program started from now on (subprocess.run and the
    rest of the module start theirs through Popen)."""
    started: list[list[str]] = []

    class Recording(subprocess.Popen):  # type: ignore[type-arg]
        def __init__(self, args: Any, *rest: Any, **kw: Any) -> None:
            started.append([str(a) for a in args])
            super().__init__(args, *rest, **kw)

    monkeypatch.setattr(subprocess, "Popen", Recording)
    return started


@contextlib.contextmanager
def books_locked(url: str) -> Iterator[Callable[[], None]]:
    """The sample's `books` table locked by another session, so that a dump waits behind
    it. Yields a release that may be called early, from any thread."""
    engine = create_engine(url)
    blocker = engine.connect()
    blocker.begin()
    mariadb = not url.startswith("postgresql")
    blocker.execute(
        text("LOCK TABLES books WRITE" if mariadb else "LOCK TABLE books IN ACCESS EXCLUSIVE MODE")
    )
    once = threading.Lock()
    released = False

    def release() -> None:
        nonlocal released
        with once:
            if released:
                return
            released = True
            if mariadb:
                blocker.execute(text("UNLOCK TABLES"))
            blocker.rollback()

    try:
        yield release
    finally:
        release()
        blocker.close()
        engine.dispose()
