"""A cold `upgrader status` imports what it needs and nothing else: the commands are
loaded when they run, so a status check (a container's probe, a deploy script, support
staff) does not pay for Flask, Jinja, Werkzeug, waitress, Babel or an ASGI server."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

from tests.chains import trivial_chain
from upgrader.cli import main as main_module
from upgrader.cli import script
from upgrader.cli.lazy import COMMANDS, STANDALONE
from upgrader.cli.main import cli

HEAVY = {"flask", "jinja2", "werkzeug", "waitress", "babel", "a2wsgi", "uvicorn", "starlette"}
HEAVY |= {"sqlglot"}  # read only while online revisions are pending (`status` checks them)


LIST_MODULES = (
    "import atexit, json, sys; out = sys.argv[1]; "
    "atexit.register(lambda: open(out, 'w').write(json.dumps(sorted(sys.modules)))); "
    "sys.argv = ['upgrader', *sys.argv[2:]]; "
    "from upgrader.cli.script import main; main()"
)


def imported(argv: list[str], env: dict[str, str], tmp_path: Path) -> tuple[int, set[str]]:
    """The exit status, and every module the command had imported when it exited
    (`sys.modules`: `-X importtime` does not see modules imported by importlib)."""
    out = tmp_path / "modules.json"
    done = subprocess.run(
        [sys.executable, "-c", LIST_MODULES, str(out), *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.returncode, set(json.loads(out.read_text()))


def test_status_imports_no_web_framework(tmp_path: Path) -> None:
    """A plain-environment configuration, revisions that import only Alembic and
    SQLAlchemy (the sample's import the sample, a Flask application)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("UPGRADER_")}
    env.update(
        UPGRADER_DATABASE_URL=f"sqlite:///{tmp_path / 'app.db'}",
        UPGRADER_MIGRATIONS=str(trivial_chain(tmp_path / "chain", 10)),
        UPGRADER_CODE_VERSION="1.0.0",
        UPGRADER_INSTALLER_DIR=str(tmp_path / "none"),
    )
    installed, _ = imported(["install", "--yes"], env, tmp_path)
    assert installed == 0
    status, modules = imported(["status"], env, tmp_path)
    assert status == 0
    assert "upgrader.cli.status" in modules  # what it needs, seen
    assert {m.split(".")[0] for m in modules} & HEAVY == set()
    _, served = imported(["serve", "--help"], env, tmp_path)
    assert "waitress" in served  # the check can see a web server imported


def test_every_command_is_listed_and_loads() -> None:
    ctx = click.Context(cli)
    names = cli.list_commands(ctx)
    assert set(names) == {*COMMANDS, *STANDALONE}
    for name in names:
        command = cli.get_command(ctx, name)
        assert command is not None and command.name == name


def test_the_console_script_loads_with_the_collector_paused_and_runs_with_it_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Collections while the modules load cost a cold command some 30 ms; a migration
    that ran without the collector could grow without bound."""
    seen: dict[str, bool] = {}
    monkeypatch.setattr(sys, "argv", ["upgrader", "status"])
    monkeypatch.setattr(
        script, "_preload", lambda args, lazy: seen.setdefault("loading", gc.isenabled())
    )
    monkeypatch.setattr(main_module, "main", lambda: seen.setdefault("running", gc.isenabled()))
    try:
        script.main()
    finally:
        gc.unfreeze()
    assert seen == {"loading": False, "running": True}
    assert gc.isenabled()


def test_the_package_loads_its_api_when_asked() -> None:
    """`import upgrader` loads neither SQLAlchemy nor Alembic; its names still resolve."""
    code = (
        "import sys, upgrader; assert 'sqlalchemy' not in sys.modules; "
        "from upgrader import diagnose, State; assert State.OK.value == 'ok'; "
        "assert upgrader.resolve is not None"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
