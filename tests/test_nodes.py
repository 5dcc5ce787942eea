"""The node registry: every process that runs the guard says which code it runs, and
support can name the server still running old code. On three databases."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine

from tests.helpers import SAMPLE, cli_args, install, run_cli, serving
from tests.test_webserver import get
from upgrader.core import nodes, times
from upgrader.core.tables import define_tables
from upgrader.sample.releases import CURRENT


def add_node(
    url: str, host: str, pid: int, version: str, kind: str = "web", ago: float = 1
) -> None:
    seen = times.utcnow() - dt.timedelta(seconds=ago)
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(
                define_tables().nodes.insert().values(
                    id=f"{host}:{pid}:x", host=host, pid=pid, kind=kind, code_version=version,
                    heads="0002_loans_isbn", started_at=seen, last_seen=seen,
                )
            )  # fmt: skip
    finally:
        engine.dispose()


def nodes_json(url: str) -> dict[str, Any]:
    done = run_cli(*cli_args(url), "nodes", "--json")
    assert done.exit_code == 0, done.output
    return dict(json.loads(done.output))


def test_support_can_name_the_nodes_on_old_code(db_url: str) -> None:
    install(db_url, CURRENT)
    add_node(db_url, "web-2", 311, "1.1.0")
    add_node(db_url, "worker-1", 902, "1.1.0", kind="worker")
    add_node(db_url, "web-3", 412, "1.1.0", ago=5 * 60)  # gone for five minutes
    engine = create_engine(db_url)
    try:
        nodes.record(engine, define_tables(), "web", CURRENT, ["0003_sort_names"])
    finally:
        engine.dispose()
    listed = nodes_json(db_url)
    assert {(n["host"], n["pid"]) for n in listed["nodes"]} == {
        (socket.gethostname(), os.getpid()),
        ("web-2", 311),
        ("worker-1", 902),
    }
    assert listed["newest"] == CURRENT
    assert listed["behind"] == "2 nodes still run 1.1.0 (web-2 pid 311, worker-1 pid 902 (worker))"
    me = next(n for n in listed["nodes"] if n["pid"] == os.getpid())
    assert (me["code_version"], me["heads"], me["kind"]) == (CURRENT, ["0003_sort_names"], "web")
    text = run_cli(*cli_args(db_url), "nodes").output
    assert "web-2" in text and "← older than the database" in text and "web-3" not in text
    status = json.loads(run_cli(*cli_args(db_url), "status", "--json").output)
    assert status["nodes_behind"] == listed["behind"]
    assert "2 nodes still run 1.1.0" in run_cli(*cli_args(db_url), "status").output
    doctor = json.loads(run_cli(*cli_args(db_url), "doctor", "--json").output)
    assert doctor["nodes"]["behind"] == listed["behind"]
    # The writer deleted the row of the node gone long ago.
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            ids = {r[0] for r in conn.execute(define_tables().nodes.select())}
    finally:
        engine.dispose()
    assert "web-3:412:x" not in ids


def test_nodes_and_doctor_agree_with_the_site(db_url: str) -> None:
    """The database at the current release and its only server on the previous one (which
    shows Err3): `nodes` and `doctor` name it as older than the database and say what to
    do; with no node listed, they say why a running server may not be."""
    install(db_url, CURRENT)
    empty = run_cli(*cli_args(db_url), "nodes").output
    assert "No process has recorded itself" in empty and "answered no request" in empty
    doctor = run_cli(*cli_args(db_url), "doctor").output
    assert "seen in the last minute: 0" in doctor and "answered no request" in doctor
    assert "all on the same code" not in doctor
    add_node(db_url, "web-2", 311, "2.0.0")
    text = run_cli(*cli_args(db_url), "nodes").output
    assert f"← older than the database ({CURRENT})" in text, text
    assert f"older than the database's release {CURRENT}" in text, text
    assert f"Deploy {CURRENT} or later on them and restart them" in text, text
    assert "All 1 run" not in text
    listed = nodes_json(db_url)
    assert (
        listed["older_than_database"] == ["web-2:311:x"] and listed["database_version"] == CURRENT
    )
    doctor = run_cli(*cli_args(db_url), "doctor").output
    assert f"older than the database's release {CURRENT}" in doctor, doctor
    status = run_cli(*cli_args(db_url), "status").output
    assert "web-2 pid 311" in status and "Deploy" in status, status


def test_serving_processes_record_themselves_and_a_killed_one_ages_out(
    db_url: str, tmp_path: Path
) -> None:
    install(db_url, CURRENT)
    env = {k: v for k, v in os.environ.items() if not k.startswith("UPGRADER_")}
    env.update(
        UPGRADER_DATABASE_URL=db_url,
        SHELF_DATABASE_URL=db_url,
        UPGRADER_APP=SAMPLE,
        UPGRADER_CACHE_TTL="0.3",
        UPGRADER_NODE_BEAT="0.5",  # gone after six missed beats: 3 s
        UPGRADER_INSTALLER_DIR=str(tmp_path / "none"),
    )
    beat = {"UPGRADER_NODE_BEAT": "0.5"}
    with serving(2, env) as started:
        ports = [port for port, _ in started]
        servers = [process for _, process in started]

        def seen() -> set[int]:
            for port in ports:
                with contextlib.suppress(OSError):  # the killed one refuses
                    get(port, "/")  # a request: the refresh it triggers carries the beat
            done = run_cli(*cli_args(db_url), "nodes", "--json", env=beat)
            return {n["pid"] for n in json.loads(done.output)["nodes"] if n["kind"] == "web"}

        deadline = time.monotonic() + 20
        while seen() != {s.pid for s in servers}:
            assert time.monotonic() < deadline, seen()
            time.sleep(0.2)
        servers[0].send_signal(signal.SIGKILL)
        servers[0].wait(timeout=10)
        deadline = time.monotonic() + 20
        while servers[0].pid in seen():
            assert time.monotonic() < deadline, "a killed process never aged out"
            time.sleep(0.3)
        assert seen() == {servers[1].pid}  # the living one is still listed


def test_a_worker_records_itself_through_accepting_new_work(db_url: str, tmp_path: Path) -> None:
    from tests.helpers import settings
    from upgrader.core.cache import DiagnosisCache
    from upgrader.web import background

    install(db_url, CURRENT)
    cache = DiagnosisCache(settings(db_url, tmp_path))
    background.use(cache)
    try:
        assert background.accepting_new_work()
        listed = nodes_json(db_url)["nodes"]
        me = [n for n in listed if n["pid"] == os.getpid()]
        assert [(n["kind"], n["code_version"]) for n in me] == [("worker", CURRENT)]
    finally:
        cache.close()
