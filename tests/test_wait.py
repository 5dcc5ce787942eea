"""`upgrader wait`, as an init container or a deploy script runs it: started before the
upgrade, it ends within one interval of the database fitting the code; on a database it
cannot wait out it ends at its timeout with the state's exit status and its fix."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers import cli_args, install

UPGRADER = [sys.executable, "-m", "upgrader"]


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("UPGRADER_")}


def test_wait_ends_within_an_interval_of_the_upgrade(db_url: str, tmp_path: Path) -> None:
    install(db_url, "1.0.0")
    interval = 1.0
    waiting = subprocess.Popen(
        [*UPGRADER, *cli_args(db_url), "wait", "--interval", str(interval), "--timeout", "120"],
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(2)  # it is waiting: the database is behind the code
    assert waiting.poll() is None
    upgrade = [*UPGRADER, *cli_args(db_url), "upgrade", "--yes", "--no-backup"]
    done = subprocess.run(upgrade, env=env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    upgraded = time.monotonic()
    while waiting.poll() is None and time.monotonic() - upgraded < 30:
        time.sleep(0.05)
    ended = time.monotonic()
    out, err = waiting.communicate(timeout=10)
    assert waiting.returncode == 0, out + err
    assert "waiting: upgrade_pending" in err  # what it waited for, said once
    assert out.startswith("ready: ok after ")
    # one interval, and the time a look at the database takes
    assert ended - upgraded <= interval + 1.0, ended - upgraded


def test_wait_gives_up_at_its_timeout_with_the_fix(db_url: str, tmp_path: Path) -> None:
    install(db_url, "1.1.0")  # newer than the code below: Err3, which no waiting mends
    old = cli_args(db_url, tmp_path, release="1.0.0")
    started = time.monotonic()
    done = subprocess.run(
        [*UPGRADER, *old, "wait", "--timeout", "2", "--interval", "0.5"],
        env=env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    took = time.monotonic() - started
    assert done.returncode == 3, done.stdout + done.stderr
    assert "database_ahead" in done.stdout and "Fix: " in done.stdout
    assert "gave up after 2 s" in done.stderr
    assert took < 10, took


def test_wait_needs_a_positive_interval(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    done = subprocess.run(
        [*UPGRADER, *cli_args(url), "wait", "--interval", "0"],
        env=env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 64 and "must be more than 0 seconds" in done.stderr
