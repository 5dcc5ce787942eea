"""Detached runs: `upgrader upgrade` (or `install`) in a process of its own, in a new
session, given the settings through UPGRADER_* variables (the URL may hold a password, so
not through its command line). No HTTP request, worker timeout or closed terminal can
interrupt it; the caller (the wizard, `upgrade --detach`) follows its journal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from upgrader.settings import Settings


def settings_environment(settings: Settings) -> dict[str, str]:
    """The settings as UPGRADER_* variables, so a child process resolves the same ones.

    Passed through the environment, not the command line, because the database
    URL may hold a password.
    """
    env = {
        "UPGRADER_DATABASE_URL": settings.database_url,
        "UPGRADER_MIGRATIONS": str(settings.migrations),
        "UPGRADER_VERSION_TABLE": settings.version_table,
        "UPGRADER_TABLE_PREFIX": settings.table_prefix,
        "UPGRADER_BACKUP_DIR": str(Path(settings.backup_dir).resolve()),
        "UPGRADER_CONNECT_TIMEOUT": str(settings.connect_timeout),
        "UPGRADER_LEASE_SECONDS": str(settings.lease_seconds),
        "UPGRADER_LOCK_TIMEOUT": str(settings.lock_timeout),
    }
    if settings.code_version:
        env["UPGRADER_CODE_VERSION"] = settings.code_version
    if settings.distribution:
        env["UPGRADER_DISTRIBUTION"] = settings.distribution
    if settings.app_ref:
        env["UPGRADER_APP"] = settings.app_ref
    if settings.installer_dir:
        env["UPGRADER_INSTALLER_DIR"] = str(settings.installer_dir)
    if settings.upgrade_from:
        env["UPGRADER_UPGRADE_FROM"] = settings.upgrade_from
    if settings.releases:
        env["UPGRADER_RELEASES"] = ",".join(f"{k}={v}" for k, v in settings.releases.items())
    if settings.alembic_config:
        env["UPGRADER_ALEMBIC_CONFIG"] = str(settings.alembic_config)
    return env


def lint_in_child(settings: Settings, revisions: list[str], timeout: float = 60) -> Any:
    """`upgrader lint --json REVISIONS` in a process of its own: rendering runs the
    application's env.py, whose `fileConfig()` would reset a web server's logging. The
    report, or None when it could not be made."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("UPGRADER_")}
    env.update(settings_environment(settings))
    argv = [sys.executable, "-m", "upgrader", "lint", "--json", *revisions]
    try:
        done = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
        return json.loads(done.stdout) if done.returncode in (0, 1) else None
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return None


def start_detached(
    settings: Settings,
    *,
    command: str = "upgrade",
    backup: bool = True,
    trigger: str = "web",
    log_dir: Path | None = None,
    client: str | None = None,
    extra: tuple[str, ...] = (),
) -> subprocess.Popen[bytes]:
    """Start `upgrader upgrade` (or `install`) in a process of its own, in a new session.

    No HTTP request, worker timeout or closed terminal can interrupt it; the
    caller follows its progress in the journal.
    """
    log_dir = Path(log_dir or settings.backup_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    log = open(log_dir / "upgrade.log", "ab")  # noqa: SIM115 (the child owns it)
    argv = [sys.executable, "-m", "upgrader", command, "--yes", "--trigger", trigger]
    if command == "upgrade" and not backup:
        argv.append("--no-backup")
    if client:
        argv += ["--client", client]
    argv += extra  # --online, --post-deploy, --force
    env = {k: v for k, v in os.environ.items() if not k.startswith("UPGRADER_")}
    env.update(settings_environment(settings))
    env["UPGRADER_LOG_LEVEL"] = "INFO"  # the run's log, in upgrade.log beside its output
    try:
        process = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            close_fds=True,
        )
    finally:
        log.close()
    # Reap it when it ends (a web server lives on: no zombie left behind per run).
    threading.Thread(target=process.wait, name="upgrader-reaper", daemon=True).start()
    return process
