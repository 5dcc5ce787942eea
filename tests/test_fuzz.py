"""Whatever is written into upgrader's tables and Alembic's version table, on any of the three
databases: `status --json` names a state (never exit 70, never a traceback) and the guard
answers every request without a 500. And whatever a client sends, the same."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, text
from werkzeug.test import Client

from tests.helpers import cli_args, install, run_cli
from tests.test_guard import guard
from upgrader.core.diagnosis import State
from upgrader.core.tables import define_tables
from upgrader.sample.releases import CURRENT

STATES = {s.value for s in State}

STATE_COLUMNS = [
    "schema_version",
    "installed_at",
    "updated_at",
    "maintenance_mode",
    "maintenance_message",
    "maintenance_until",
    "maintenance_start",
    "maintenance_end",
    "maintenance_allow",
    "maintenance_secret",
    "maintenance_set_by",
    "maintenance_set_at",
]
RUN_COLUMNS = [
    "kind",
    "status",
    "trigger",
    "actor",
    "host",
    "pid",
    "heartbeat_at",
    "lease_expires_at",
    "from_version",
    "to_version",
    "from_revisions",
    "to_revisions",
    "step",
    "steps",
    "revision",
    "message",
    "error",
    "backup_path",
    "note",
]

# What hands, tools and restores have been seen to leave: odd text, zero dates, huge numbers,
# numbers where text goes and text where numbers and times go.
values = st.one_of(
    st.none(),
    st.text(max_size=40),
    st.sampled_from(
        [
            "0000-00-00 00:00:00",
            "2026-13-45 99:99:99",
            "9" * 60,
            "pbkdf2$zz$zz",
            "hmac-sha256$00$é",
            "block",
            "banner",
            "running",
            "failed",
            "-1",
            "1.0.0",
            "8.6.2-release.1",
            "0001_initial,0003_sort_names",
            "∞ ünïcödé ✓",
        ]
    ),
    st.integers(min_value=-(2**31), max_value=2**31 - 1),
    st.datetimes(min_value=dt.datetime(1970, 1, 2), max_value=dt.datetime(2200, 1, 1)),
)


def write(url: str, table: str, column: str, value: Any) -> bool:
    """Write one value as the database takes it; False when the database refuses it."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "mysql":
                conn.execute(text("SET SESSION sql_mode = ''"))  # take zero dates and the like
            conn.execute(text(f"UPDATE {table} SET {column} = :v"), {"v": value})
        return True
    except Exception:
        return False
    finally:
        engine.dispose()


@pytest.fixture
def prepared(db_url: str, tmp_path: Path) -> str:
    install(db_url, "1.0.0")
    result = run_cli(*cli_args(db_url), "maintenance", "on", "--level", "banner", "--secret", "s")
    assert result.exit_code == 0, result.output
    engine = create_engine(db_url)
    with engine.begin() as conn:
        runs = define_tables().runs
        conn.execute(
            runs.insert().values(
                kind="upgrade",
                status="failed",
                trigger="cli",
                started_at=dt.datetime(2026, 1, 1),
                step=1,
                steps=2,
            )
        )
    engine.dispose()
    return db_url


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    table_column=st.one_of(
        st.tuples(st.just("upgrader_state"), st.sampled_from(STATE_COLUMNS)),
        st.tuples(st.just("upgrader_runs"), st.sampled_from(RUN_COLUMNS)),
        st.tuples(st.just("alembic_version"), st.just("version_num")),
    ),
    value=values,
    cookie=st.text(max_size=300).filter(lambda c: "\r" not in c and "\n" not in c),
)
def test_any_stored_value_gives_a_named_state(
    prepared: str, tmp_path: Path, table_column: tuple[str, str], value: Any, cookie: str
) -> None:
    table, column = table_column
    if not write(prepared, table, column, value):
        return  # the database itself refused the value: nothing to read back
    result = run_cli(*cli_args(prepared), "status", "--json")
    assert result.exit_code != 70, result.output
    status = json.loads(result.output)
    assert status["state"] in STATES
    client = Client(guard(prepared, tmp_path, "1.0.0", cache_ttl=0.01))
    headers = {"Cookie": f"upgrader_bypass={cookie}; other={cookie}"}
    for path in ("/", "/upgrader/status", "/upgrader/bypass/s", f"/upgrader/bypass/{cookie[:50]}"):
        try:
            answer = client.get(path, headers=headers)
        except UnicodeError:
            continue  # not a request a WSGI server would pass on
        assert answer.status_code < 500 or answer.status_code == 503, (path, answer.status_code)


def test_hostile_cookies_and_paths_never_give_500(db_url: str, tmp_path: Path) -> None:
    install(db_url, "1.0.0")
    run_cli(*cli_args(db_url), "maintenance", "on", "--secret", "right-secret")
    client = Client(guard(db_url, tmp_path, CURRENT))
    for cookie in ("9" * 5000 + ".x", 'a={"x":1}; upgrader_bypass=1.2', "\x00\xff", "=" * 1000):
        for path in ("/", "/upgrader/status", "/upgrader/bypass/wrong"):
            answer = client.get(path, headers={"Cookie": f"upgrader_bypass={cookie}"})
            assert answer.status_code in (200, 303, 503), (cookie[:20], path, answer.status_code)
