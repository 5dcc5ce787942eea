"""What a request gets in every state, from the gate itself (core/gate.py), with no server,
no database and no framework: a diagnosis decided on plain facts, a request of plain values.

tests/test_guard.py does the same through the WSGI middleware on real databases; this one
holds the contract for every state, including those a database is slow to be put in.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from markupsafe import escape as html_escape

from tests.test_decide_steps import CASES, NOW
from upgrader.core.cache import DiagnosisCache
from upgrader.core.diagnosis import Diagnosis, decide
from upgrader.core.gate import Application, Gate, Mount, Page
from upgrader.core.requests import Request
from upgrader.core.states import State
from upgrader.http.pages import Pages
from upgrader.settings import resolve

ONE_PER_STATE = {case[2]: name for name, case in reversed(CASES.items())}


def gate_for(state: State, tmp_path: Path) -> tuple[Gate, Diagnosis]:
    """A gate, and a diagnosis in `state` decided on plain facts: the gate never asks its
    cache here (the adapters do), so nothing is read from any database."""
    code, db, *_ = CASES[ONE_PER_STATE[state]]
    settings = resolve(
        {
            "database_url": f"sqlite:///{tmp_path / 'never-opened.db'}",
            "migrations": str(tmp_path),
            "code_version": "2.0",
            "backup_dir": str(tmp_path),
            "allow_ips": "10.9.8.0/24",
            "trusted_proxies": "127.0.0.1",
        },
        environ={},
    )
    d = decide(code, db, now=NOW, cli="upgrader --app shop:app")
    return Gate(settings, DiagnosisCache(settings), Pages(settings)), d


def get(path: str = "/books/1", remote: str = "203.0.113.9", **headers: str) -> Request:
    return Request("GET", path, "", remote, "http", headers)


@pytest.mark.parametrize("state", list(State), ids=[s.value for s in State])
def test_every_state_gets_its_answer(state: State, tmp_path: Path) -> None:
    gate, d = gate_for(state, tmp_path)
    answer = gate.answer(get(accept="text/html"), d)
    if state.serving:
        assert isinstance(answer, Application) and not answer.admin
        return
    assert isinstance(answer, Page)
    headers = dict(answer.headers)
    assert answer.status == 503
    assert headers["Cache-Control"] == "no-store"
    assert headers["X-Upgrader-State"] == state.value
    assert int(headers["Retry-After"]) > 0
    html = answer.body.decode()
    assert f"<h1>{html_escape(d.headline)}</h1>" in html
    if state.error_code:
        assert f"<h1>Down for Maintenance ({state.error_code})</h1>" in html
    for internal in ("Fix:", "upgrader --app", "shop:app", "Traceback"):
        assert internal not in html  # no internals for anonymous visitors

    api = gate.answer(get(accept="application/json"), d)
    assert isinstance(api, Page) and dict(api.headers)["Content-Type"] == "application/problem+json"
    problem = json.loads(api.body)
    assert (problem["status"], problem["state"], problem["code"]) == (
        503,
        state.value,
        state.error_code,
    )

    admin = gate.answer(get(remote="10.9.8.7", accept="text/html"), d)
    if state is State.MAINTENANCE:
        assert isinstance(admin, Application) and admin.admin
    else:
        assert isinstance(admin, Page)
        fix = d.fix
        assert fix and str(html_escape(fix)) in admin.body.decode()  # the state's fix, in full


@pytest.mark.parametrize("state", list(State), ids=[s.value for s in State])
def test_the_status_endpoint_and_the_installer_always_get_through(
    state: State, tmp_path: Path
) -> None:
    gate, d = gate_for(state, tmp_path)
    status = gate.answer(get("/upgrader/status"), d)
    assert isinstance(status, Page) and status.status == 200
    assert json.loads(status.body)["state"] == state.value
    ready = gate.answer(Request("GET", "/upgrader/status", "ready", "203.0.113.9", "http", {}), d)
    assert isinstance(ready, Page) and ready.status == (200 if state.serving else 503)
    assert isinstance(gate.answer(get("/install/"), d), Mount)


def test_a_forged_forwarded_for_makes_no_administrator(tmp_path: Path) -> None:
    gate, d = gate_for(State.UPGRADE_PENDING, tmp_path)
    forged = get(accept="text/html", **{"x-forwarded-for": "10.9.8.7"})
    answer = gate.answer(forged, d)
    assert isinstance(answer, Page) and "shop:app" not in answer.body.decode()
    via_proxy = get(remote="127.0.0.1", accept="text/html", **{"x-forwarded-for": "10.9.8.7"})
    answer = gate.answer(via_proxy, d)
    assert isinstance(answer, Page) and "upgrader --app shop:app" in answer.body.decode()
