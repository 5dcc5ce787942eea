"""The command line where things are not as they should be: a hung database server, an
output pipe whose reader has gone, and no terminal to answer a question."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import MIGRATIONS, SAMPLE, cli_args, install, run_cli
from tests.test_unavailable import silent_port, url_with_password  # noqa: F401 (fixture)
from upgrader.sample.releases import CURRENT

HUNG = (
    ("status",),
    ("status", "--json"),
    ("doctor",),
    ("doctor", "--json"),
    ("nodes",),
    ("history",),
    ("history", "--json"),
    ("maintenance", "on"),
    ("maintenance", "off"),
    ("maintenance", "status"),
    ("maintenance", "secret"),
    ("upgrade", "--yes"),
    ("upgrade", "--plan"),
    ("upgrade", "--sql"),
    ("install", "--yes"),
    ("backup",),
    ("stamp", "head", "--yes"),
    ("repair", "--yes"),
    ("unlock",),
    ("unlock", "--force", "--yes"),
    ("adopt", "--yes"),
    ("deploy", "--", "true"),
)


def test_every_command_ends_within_the_connect_timeout_on_a_hung_server(
    server_backend: str,
    silent_port: int,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A server that accepts connections and never answers (a hung MariaDB): each command
    ends within its connect timeout and a second, says the database cannot be reached,
    and exits with Err1's status (status, doctor) or 69."""
    url = url_with_password(server_backend, silent_port)
    env = {"UPGRADER_CONNECT_TIMEOUT": "2", "UPGRADER_BACKUP_DIR": str(tmp_path / "b")}
    slow = []
    # MariaDB's driver is the one that waits past its connect timeout: every command there;
    # on PostgreSQL those that open more than one connection
    several = {"doctor", "nodes", "history", "maintenance", "deploy", "unlock"}
    commands = HUNG if server_backend == "mysql" else [c for c in HUNG if c[0] in several]
    for command in commands:
        started = time.monotonic()
        result = run_cli(*cli_args(url), *command, env=env)
        elapsed = time.monotonic() - started
        expected = 1 if command[0] in ("status", "doctor") else 69
        assert result.exit_code == expected, (command, result.exit_code, result.output)
        assert "cannot be reached" in result.output or "unavailable" in result.output, command
        if elapsed >= 3:
            slow.append((command, round(elapsed, 1)))
    assert not slow, slow


def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path: Path) -> None:
    """`status | head -1` where head has gone before status writes: the exit status is the
    state's (2, Err2), and nothing is said on stderr; under `flask upgrader` too."""
    url = f"sqlite:///{tmp_path / 'app.db'}"
    install(url, "1.0.0")
    env = {k: v for k, v in os.environ.items() if not k.startswith("UPGRADER_")}
    env["SHELF_DATABASE_URL"] = url
    upgrader = [sys.executable, "-m", "upgrader", *cli_args(url, tmp_path)]
    flask = [str(Path(sys.executable).parent / "flask"), "--app", SAMPLE, "upgrader"]
    for prefix in (upgrader, flask):
        for command in (["status"], ["doctor"], ["history"], ["upgrade", "--plan"]):
            line = " ".join(map(shlex_quote, prefix + command))
            done = subprocess.run(
                ["bash", "-c", f'{line} | true; echo "status=${{PIPESTATUS[0]}}" >&2'],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            want = {"status": 2, "doctor": 2, "history": 0, "upgrade": 0}[command[0]]
            assert done.stderr.strip() == f"status={want}", (prefix[-1], command, done.stderr)


def shlex_quote(word: str) -> str:
    import shlex

    return shlex.quote(word)


@pytest.mark.parametrize(
    "command",
    [
        ("upgrade",),
        ("install",),
        ("restore", "FILE"),
        ("stamp", "0001_initial"),
        ("repair",),
        ("adopt", "--version", "1.0.0"),
        ("unlock", "--force"),
    ],
)
def test_a_question_without_a_terminal_says_to_add_yes(
    command: tuple[str, ...], tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    if command[0] != "install":
        install(url, "1.0.0", record=command[0] != "adopt")
    if command[0] == "restore":
        backups = {"UPGRADER_BACKUP_DIR": str(tmp_path / "b")}
        made = run_cli(*cli_args(url), "backup", env=backups)
        command = ("restore", made.output.splitlines()[0])
    result = run_cli(*cli_args(url, tmp_path, CURRENT), *command, input="")
    assert result.exit_code == 64, (command, result.output)
    assert "no terminal to confirm: add --yes" in result.output, result.output
    answered = run_cli(*cli_args(url, tmp_path, CURRENT), *command, input="n\n")
    assert answered.exit_code == 1 and "Aborted" in answered.output  # a person said no


def test_the_printed_fix_without_a_terminal_from_another_directory(tmp_path: Path) -> None:
    """`status` prints `… upgrade`; pasted in a script (no terminal, another directory) it
    says to add --yes; with --yes, it upgrades."""
    import json
    import re

    url = f"sqlite:///{tmp_path / 'app.db'}"
    install(url, "1.0.0")
    status = json.loads(run_cli(*cli_args(url), "status", "--json").output)
    command = next(c for c in re.findall(r"`([^`]+)`", status["fix"]) if c.endswith(" upgrade"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("UPGRADER_")}
    env["UPGRADER_BACKUP_DIR"] = str(tmp_path / "b")
    asked = subprocess.run(
        ["sh", "-c", command], cwd="/", env=env, stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert asked.returncode == 64, asked.stdout + asked.stderr
    assert "no terminal to confirm: add --yes" in asked.stderr
    done = subprocess.run(
        ["sh", "-c", command + " --yes"], cwd="/", env=env, stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0 and "Upgraded to" in done.stdout, done.stdout + done.stderr
    assert str(MIGRATIONS) in command  # the paths it needs are in the command itself
