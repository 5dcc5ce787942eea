"""`upgrader deploy -- CMD…` on a small WSGI application that is not ours, on three databases.

Each test deploys a release by copying it over the live directory (what rsync, git pull or
unpacking an archive do), through the real console script, and checks that every previous
maintenance setting is back afterwards, whichever way the deploy ended.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine

from tests import chains
from tests.helpers import journal_of
from upgrader.core import maintenance as mode
from upgrader.core.tables import define_tables

BIN = Path(sys.executable).parent
UPGRADER = str(BIN / "upgrader")

GUARDED = """

application = UpgraderMiddleware(
    site,
    resolve({{
        "database_url": os.environ["SITE_DATABASE_URL"],
        "migrations": Path(__file__).resolve().parent / "migrations",
        "code_version": __version__,
    }}),
)
"""
"""The guard as a test site's module sets it up (a template, like APP)."""

APP = (
    '''\
"""A site somebody else wrote: plain WSGI, its own Alembic environment, upgrader's guard."""
import os
from pathlib import Path

from upgrader.settings import resolve
from upgrader.web import UpgraderMiddleware

__version__ = "{version}"


def site(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"site {{__version__}}".encode()]
'''
    + GUARDED
)


def release(root: Path, version: str, revisions: list[tuple[str, str]]) -> Path:
    """A release as shipped: the module at `version` and the revisions it brings."""
    chains.environment(root / "migrations")
    down = None
    for revision, body in revisions:
        chains.write_revision(root / "migrations" / "versions", revision, down, body)
        down = revision
    (root / "site_app.py").write_text(APP.format(version=version))
    return root


FAILING = ("r03", 'op.execute("UPDATE no_such_table SET x = 1")\n')


class Site:
    def __init__(self, url: str, tmp: Path) -> None:
        self.url, self.tmp = url, tmp
        self.live = release(tmp / "live", "1.0.0", chains.RECOVERY[:2])
        self.next = release(tmp / "rel-1.1.0", "1.1.0", chains.RECOVERY[:3])
        self.broken = release(tmp / "rel-broken", "1.1.0", [*chains.RECOVERY[:2], FAILING])
        self.static = tmp / "static"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("UPGRADER_")}
        self.env.update(
            SITE_DATABASE_URL=url,
            UPGRADER_BACKUP_DIR=str(tmp / "backups"),
            UPGRADER_STATIC_DIR=str(self.static),
            PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        )
        self.upgrader("install", "--yes")

    def upgrader(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [UPGRADER, "--app", "site_app:application", *args],
            cwd=self.live,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if ok:
            assert done.returncode == 0, f"{args}: {done.returncode}\n{done.stdout}{done.stderr}"
        return done

    def deploy(
        self, script: str, options: tuple[str, ...] = (), **popen: Any
    ) -> subprocess.Popen[str]:
        argv = [UPGRADER, "--app", "site_app:application", "deploy", *options, "--"]
        return subprocess.Popen(
            [*argv, "sh", "-c", script],
            cwd=self.live,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            **popen,
        )

    def status(self) -> dict[str, Any]:
        return dict(json.loads(self.upgrader("status", "--json", ok=False).stdout))

    def settings(self) -> dict[str, Any] | None:
        engine = create_engine(self.url)
        try:
            return mode.snapshot(engine, define_tables())
        finally:
            engine.dispose()

    def copy(self, source: Path) -> str:
        return f"cp -r {shlex.quote(str(source))}/. {shlex.quote(str(self.live))}/"


def last_run(url: str) -> dict[str, Any]:
    """The newest entry that is a run, not a change of settings."""
    return next(e for e in journal_of(url) if e["kind"] != "maintenance")


@pytest.fixture
def site(db_url: str, tmp_path: Path) -> Site:
    s = Site(db_url, tmp_path)
    # The operator's own settings before the deploy: a scheduled window, announced by a
    # banner, with an allow-list. They must all come back, exactly.
    s.upgrader(
        "maintenance", "on", "--level", "banner", "--message", "Read-only on Sunday",
        "--start", "+1d", "--end", "+2d", "--allow", "203.0.113.7",
    )  # fmt: skip
    (s.static / "maintenance.flag").unlink()  # the web server's flag was off
    return s


def test_a_deploy_that_succeeds_upgrades_and_puts_everything_back(site: Site) -> None:
    before = site.settings()
    during = site.tmp / "during.json"
    script = (
        f"{UPGRADER} --app site_app:application status --json > {during}; "
        f"test -f {site.static}/maintenance.flag && {site.copy(site.next)}"
    )
    deploy = site.deploy(script)
    output, _ = deploy.communicate(timeout=120)
    assert deploy.returncode == 0, output
    assert json.loads(during.read_text())["state"] == "maintenance"  # on while it ran
    status = site.status()
    assert (status["state"], status["schema_version"]) == ("ok", "1.1.0"), output
    assert site.settings() == before  # every previous setting, set_by and set_at included
    assert not (site.static / "maintenance.flag").exists()
    assert last_run(site.url)["status"] == "succeeded"


def test_a_deploy_that_fails_leaves_an_honest_state(site: Site) -> None:
    # This time the web server's flag was on before, with a page of the operator's.
    (site.static / "maintenance.flag").write_text("on\n")
    (site.static / "maintenance.html").write_text("<p>The operator's own page</p>")
    before, runs = site.settings(), len(journal_of(site.url))
    deploy = site.deploy(f"{site.copy(site.next)}; echo 'disk full' >&2; exit 7")
    output, _ = deploy.communicate(timeout=120)
    assert deploy.returncode == 7, output
    assert "The deploy command failed (exit status 7)" in output
    assert site.settings() == before
    assert (site.static / "maintenance.flag").read_text() == "on\n"
    assert (site.static / "maintenance.html").read_text() == "<p>The operator's own page</p>"
    # The new code is on disk and nothing was migrated: Err2, said so, and nothing run.
    assert site.status()["state"] == "upgrade_pending"
    assert "Down for Maintenance (Err2)" in output
    new = journal_of(site.url)[: len(journal_of(site.url)) - runs]
    assert [(e["kind"], e["note"].split(";")[0]) for e in new] == [
        ("maintenance", "previous settings restored (banner)"),
        ("maintenance", "on (block)"),
    ]  # the deploy's two changes, journalled; no run
    assert new[0]["actor"].endswith("(deploy)")


def test_a_failed_upgrade_after_the_deploy_is_err2_with_the_failure(site: Site) -> None:
    before = site.settings()
    deploy = site.deploy(site.copy(site.broken))
    output, _ = deploy.communicate(timeout=120)
    assert deploy.returncode not in (0, 130, 143), output
    assert site.status()["state"] == "upgrade_failed"
    assert last_run(site.url)["status"] == "failed"
    assert site.settings() == before
    assert not (site.static / "maintenance.flag").exists()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_an_interrupted_deploy_puts_everything_back(site: Site, signum: int) -> None:
    before = site.settings()
    started, finished = site.tmp / "started", site.tmp / "finished"
    deploy = site.deploy(f"touch {started}; sleep 30; touch {finished}")
    deadline = time.monotonic() + 60
    while not started.exists():
        assert deploy.poll() is None and time.monotonic() < deadline, deploy.communicate()
        time.sleep(0.05)
    assert (site.static / "maintenance.flag").exists()
    deploy.send_signal(signum)  # as `kill` or systemd would: to the wrapper alone
    output, _ = deploy.communicate(timeout=20)  # the command was stopped, not waited for
    assert deploy.returncode == 128 + signum, output
    assert f"Interrupted by {signal.Signals(signum).name}" in output
    time.sleep(0.5)
    assert not finished.exists()  # the deploy script itself was stopped
    assert site.settings() == before
    assert not (site.static / "maintenance.flag").exists()
    assert site.status()["state"] == "ok"


def test_a_command_that_ignores_the_signal_is_killed_after_a_while(site: Site) -> None:
    """A deploy script may outlive the signal (it traps it, or a shell starting its next
    command misses it): `--kill-after` seconds on, its group is killed all the same."""
    before = site.settings()
    started, finished = site.tmp / "started", site.tmp / "finished"
    script = f"trap '' INT TERM; touch {started}; sleep 30; touch {finished}"
    deploy = site.deploy(script, ("--kill-after", "1"))
    deadline = time.monotonic() + 60
    while not started.exists():
        assert deploy.poll() is None and time.monotonic() < deadline, deploy.communicate()
        time.sleep(0.05)
    signalled = time.monotonic()
    deploy.send_signal(signal.SIGTERM)
    output, _ = deploy.communicate(timeout=20)
    assert 1 <= time.monotonic() - signalled < 15, output
    assert deploy.returncode == 143, output
    assert "Interrupted by SIGTERM" in output
    assert "still ran 1 s after the signal: killed it" in output
    assert not finished.exists()
    assert site.settings() == before
    assert not (site.static / "maintenance.flag").exists()


def test_a_command_that_cannot_run_changes_nothing(site: Site) -> None:
    before = site.settings()
    done = subprocess.run(
        [UPGRADER, "--app", "site_app:application", "deploy", "--", "/no/such/deploy.sh"],
        cwd=site.live,
        env=site.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 127, done.stdout + done.stderr
    assert "Cannot run /no/such/deploy.sh" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert site.settings() == before and site.status()["state"] == "ok"
