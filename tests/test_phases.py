"""Online and post-deploy revisions, decided on plain facts (core/phases.py, decide())."""

from __future__ import annotations

import datetime as dt

import pytest

from upgrader.core import phases
from upgrader.core.diagnosis import CodeFacts, Diagnosis, State, decide
from upgrader.core.facts import DatabaseFacts
from upgrader.core.nodes import Node
from upgrader.core.records import Maintenance, Run, StateRow
from upgrader.core.revisions import Revision, RevisionGraph
from upgrader.core.versions import parse_version

NOW = dt.datetime(2026, 11, 22, 12, 0, 0)


def graph(*spec: tuple[str, str, tuple[str, ...]]) -> RevisionGraph:
    """(id, phase, parents) in apply order; the heads are those nobody builds on."""
    revisions: dict[str, Revision] = {}
    for position, (rev, phase, parents) in enumerate(spec):
        revisions[rev] = Revision(rev, f"revision {rev}", parents, position, None, frozenset(),
                                  parents, frozenset(), phase)  # fmt: skip
    used = {p for r in revisions.values() for p in r.parents}
    return RevisionGraph(revisions, tuple(sorted(set(revisions) - used)))


OLD = graph(("a", "blocking", ()))
NEW = graph(("a", "blocking", ()), ("o1", "online", ("a",)), ("p1", "post-deploy", ("o1",)))


def facts(
    revisions: tuple[str, ...],
    stored: str = "1.0.0",
    compatible: tuple[str, ...] = (),
    run: Run | None = None,
    nodes: tuple[Node, ...] | None = None,
    **maintenance: object,
) -> DatabaseFacts:
    row = StateRow(1, stored, NOW, NOW, Maintenance(**maintenance), compatible)  # type: ignore[arg-type]
    return DatabaseFacts(
        tables=("alembic_version", "upgrader_state", "upgrader_runs"),
        has_version_table=True,
        revisions=revisions,
        has_state_table=True,
        states=(row,),
        recent_runs=(run,) if run else (),
        nodes=nodes,
    )


def decided(version: str, code: RevisionGraph, db: DatabaseFacts) -> Diagnosis:
    return decide(CodeFacts(parse_version(version), code), db, now=NOW)


def node(pid: int, version: str) -> Node:
    return Node(f"web-{pid}:{pid}:x", f"web-{pid}", pid, "web", version, (), NOW, NOW)


def live_run(phase: str | None) -> Run:
    return Run(7, "upgrade", "running", "cli", "ops", "deploy-1", 42, NOW, None, NOW,
               NOW + dt.timedelta(minutes=1), "1.0.0", "2.0.0", "a", None, 1, 1, "o1",
               "revision o1", None, None, None, None, None, phase=phase)  # fmt: skip


def test_the_split_keeps_apply_order_and_what_online_revisions_need() -> None:
    g = graph(
        ("a", "blocking", ()),
        ("o1", "online", ("a",)),
        ("p1", "post-deploy", ("o1",)),
        ("o2", "online", ("p1",)),  # online, but it needs a post-deploy one: it waits
        ("x1", "online", ("a",)),  # another branch, online from its base
    )
    split = phases.split(g.pending(("a",)))
    assert [r.id for r in split.online] == ["o1", "x1"]
    assert [r.id for r in split.rest] == ["p1", "o2"]
    assert split.serving and not split.blocking
    assert phases.targets(split.online) == ("o1", "x1")
    blocked = phases.split(graph(("a", "blocking", ()), ("b", "blocking", ("a",))).pending(("a",)))
    assert [r.id for r in blocked.blocking] == ["b"] and not blocked.serving


def test_a_release_whose_revisions_all_declare_a_phase_keeps_the_site_up() -> None:
    before = decided("2.0.0", NEW, facts(("a",)))
    assert before.state is State.ONLINE_PENDING and before.state.serving
    assert before.code is None and before.exit_code == 6
    assert "upgrade --online" in before.fix and "upgrade --post-deploy" in before.fix
    # An online run in progress does not take the site down (a blocking one would).
    running = decided("2.0.0", NEW, facts(("a",), run=live_run("online")))
    assert running.state is State.ONLINE_PENDING and "Wait for run #7" in running.fix
    assert decided("2.0.0", NEW, facts(("a",), run=live_run(None))).state is State.UPGRADE_RUNNING


def test_post_deploy_pending_names_the_nodes_that_block_it() -> None:
    unknown = decided("2.0.0", NEW, facts(("o1",), compatible=("a",)))
    assert unknown.state is State.POST_DEPLOY_PENDING and unknown.exit_code == 7
    assert unknown.blocked_by == ()  # the nodes were not read: the fix says what to wait for
    old = (node(311, "1.0.0"), node(312, "2.0.0"), node(902, "2.0.0+local"))
    blocked = decided("2.0.0", NEW, facts(("o1",), compatible=("a",), nodes=old))
    assert blocked.blocked_by == ("web-311 pid 311",)
    assert "post-deploy pending, blocked by 1 old node(s): 1 node still runs 1.0.0" in " ".join(
        blocked.details
    )
    assert "web-311 pid 311" in blocked.fix
    clear = decided("2.0.0", NEW, facts(("o1",), nodes=old[1:]))
    assert clear.fix.startswith("Run `upgrader upgrade --post-deploy`")
    assert clear.to_dict()["blocked_by"] == []


def test_old_code_serves_on_a_schema_declared_compatible_with_it() -> None:
    ahead = decided("1.0.0", OLD, facts(("o1",), compatible=("a",)))
    assert ahead.state is State.COMPATIBLE_AHEAD and ahead.state.serving
    assert ahead.exit_code == 8 and "1.0.0" in ahead.fix
    assert ahead.to_dict()["compatible_heads"] == ["a"]
    # Without the declaration, or once post-deploy cleared it: Err3, as before.
    assert decided("1.0.0", OLD, facts(("o1",))).code == "Err3"
    assert decided("1.0.0", OLD, facts(("p1",), stored="2.0.0")).code == "Err3"


@pytest.mark.parametrize("revisions", [("a",), ("o1",)])
def test_maintenance_switched_on_still_blocks_a_serving_state(revisions: tuple[str, ...]) -> None:
    d = decided("2.0.0", NEW, facts(revisions, compatible=("a",), mode="block"))
    assert d.state is State.MAINTENANCE
    assert any("revision(s)" in line for line in d.details)  # what is pending stays said


def test_a_blocking_revision_anywhere_takes_the_site_down_as_before() -> None:
    mixed = graph(("a", "blocking", ()), ("o1", "online", ("a",)), ("b", "blocking", ("o1",)))
    assert decided("2.0.0", mixed, facts(("a",))).state is State.UPGRADE_PENDING


def test_a_phased_run_that_has_migrated_records_the_version_itself() -> None:
    """Between its migration's commit and its close, the guards see the schema in sync with
    an older recorded version: they must not record it as a release without migrations."""
    d = decided("2.0.0", NEW, facts(("p1",), run=live_run("post-deploy")))
    assert d.state is State.OK and d.version_to_record is None
    assert decided("2.0.0", NEW, facts(("p1",))).version_to_record == "2.0.0"
