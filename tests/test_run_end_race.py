"""A run that ends while a process diagnoses: it commits its close, then lets its lock go.
A reader that saw its row "running" and then finds the lock free reads the row again, and
sees the run succeeded rather than calling it cut off (the old nodes of a rollout answered
"upgrade_interrupted" for a refresh, under CI's load, at the end of a post-deploy run)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers import add_run, execute, install, settings
from upgrader.core import gather, lockfile
from upgrader.core.database import guard_engine
from upgrader.core.diagnosis import diagnose
from upgrader.core.states import State
from upgrader.sample.releases import CURRENT


def test_a_run_that_ends_between_the_two_reads_is_not_cut_off(
    server_db_url: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(server_db_url, CURRENT)
    add_run(server_db_url)  # the journal says running: the run is about to close

    def the_run_ends_then_lets_go(conn: Any) -> bool:
        execute(server_db_url, "UPDATE upgrader_runs SET status = 'succeeded'")
        return False  # its lock is free by the time it is asked

    monkeypatch.setattr(lockfile, "server_lock_held", the_run_ends_then_lets_go)
    s = settings(server_db_url, tmp_path)
    engine = guard_engine(s)
    try:
        facts = gather.read_database(engine, s)
    finally:
        engine.dispose()
    assert facts.last_run is not None and facts.last_run.status == "succeeded"
    assert diagnose(s).state is State.OK


def test_a_run_whose_lock_is_gone_is_still_cut_off(
    server_db_url: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(server_db_url, "1.0.0")
    add_run(server_db_url, lease_expires_at=None)
    monkeypatch.setattr(lockfile, "server_lock_held", lambda conn: False)
    state = diagnose(settings(server_db_url, tmp_path, release=CURRENT)).state
    assert state is State.UPGRADE_INTERRUPTED
