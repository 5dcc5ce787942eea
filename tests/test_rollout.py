"""A release rolled out over several nodes without taking the site down (docs/multi-node.md).

A plain WSGI site that is not ours, shipped as two releases in two directories: 1.0.0, and
2.0.0 with an online revision (a nullable column) and a post-deploy one (dropping the column
1.0.0 reads). Real `upgrader serve` processes run each node; a loop of visitor requests runs
through the whole procedure and counts every answer that is not 2xx.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from tests import chains
from tests.helpers import free_port, journal_of, wait_for_port
from tests.test_deploy import GUARDED
from tests.test_nodes import add_node

UPGRADER = str(Path(sys.executable).parent / "upgrader")

APP = (
    '''\
"""A site somebody else wrote: plain WSGI, its own Alembic environment, upgrader's guard."""
import os
from pathlib import Path

from sqlalchemy import create_engine, text

from upgrader.settings import resolve
from upgrader.web import UpgraderMiddleware

__version__ = "{version}"
engine = create_engine(os.environ["SITE_DATABASE_URL"], pool_pre_ping=True)


def site(environ, start_response):
    with engine.connect() as conn:  # {version} reads the column it knows
        count = conn.execute(text("SELECT count({column}) FROM items")).scalar()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"site {{__version__}}: {{count}}".encode()]
'''
    + GUARDED
)

BASE = [
    ("r01", 'op.create_table("items", sa.Column("id", sa.Integer, primary_key=True),\n'
            '                sa.Column("price", sa.Integer))\n'
            'op.execute("INSERT INTO items (price) VALUES (3)")\n'),
]  # fmt: skip
ONLINE = (
    "o02",
    'import time; time.sleep(2)\nop.add_column("items", sa.Column("sku", sa.String(20)))\n',
)
POST = ("p03", 'import time; time.sleep(2)\nop.drop_column("items", "price")\n')


def release(root: Path, version: str, column: str, revisions: list[tuple[str, str]]) -> Path:
    chains.environment(root / "migrations")
    down = None
    for revision, body in revisions:
        chains.write_revision(root / "migrations" / "versions", revision, down, body)
        down = revision
    for revision, phase in (("o02", "online"), ("p03", "post-deploy")):
        path = root / "migrations" / "versions" / f"{revision}.py"
        if path.exists():
            path.write_text(path.read_text() + f"\n\nupgrader_phase = {phase!r}\n")
    (root / "site_app.py").write_text(APP.format(version=version, column=column))
    return root


class Cluster:
    """The two releases, the nodes that serve them and the operator's commands."""

    def __init__(self, url: str, tmp: Path) -> None:
        self.tmp = tmp
        self.old = release(tmp / "rel-1.0.0", "1.0.0", "price", BASE)
        self.new = release(tmp / "rel-2.0.0", "2.0.0", "sku", [*BASE, ONLINE, POST])
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("UPGRADER_")}
        self.env.update(
            SITE_DATABASE_URL=url,
            UPGRADER_BACKUP_DIR=str(tmp / "backups"),
            UPGRADER_CACHE_TTL="0.3",
            UPGRADER_NODE_BEAT="0.5",  # a node gone for six beats (3 s) drops out of the list
        )
        self.nodes: dict[int, subprocess.Popen[bytes]] = {}  # port -> process
        self.pool: list[int] = []  # the ports the load balancer sends visitors to
        self.answers: list[tuple[int, int | str]] = []  # (port, status), or what went wrong
        self.step = "start"  # what the operator is doing, for the failures
        self._stop = threading.Event()

    def upgrader(self, release: Path, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [UPGRADER, "--app", "site_app:application", *args],
            cwd=release,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def status(self, release: Path) -> dict[str, Any]:
        return dict(json.loads(self.upgrader(release, "status", "--json").stdout))

    def start(self, release: Path) -> int:
        port = free_port()
        with open(self.tmp / f"node-{port}.log", "wb") as log:  # its state changes, if it fails
            self.nodes[port] = subprocess.Popen(
                [UPGRADER, "--app", "site_app:application", "serve", "--port", str(port)],
                cwd=release,
                env={**self.env, "UPGRADER_LOG_LEVEL": "INFO"},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for_port(port)
        self.pool.append(port)  # in the pool once it listens, as a health check would do
        return port

    def stop(self, port: int) -> int:
        """Drain the node from the pool, then stop it; its pid."""
        self.pool.remove(port)
        time.sleep(0.3)  # requests in flight finish
        process = self.nodes.pop(port)
        process.terminate()
        process.wait(timeout=10)
        return process.pid

    def roll(self, port: int) -> int:
        """One node: the new release is started, then the old process stops."""
        new = self.start(self.new)
        self.stop(port)
        return new

    @property
    def pids(self) -> dict[int, int]:
        return {port: p.pid for port, p in self.nodes.items()}

    def visit(self) -> None:
        while not self._stop.is_set():
            for port in list(self.pool):
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
                        self.answers.append((port, r.status))  # urllib raises for 4xx and 5xx
                except urllib.error.HTTPError as exc:
                    state = exc.headers.get("X-Upgrader-State")
                    self.answers.append((port, f"{exc.code} {state} at {self.step}"))
                except OSError as exc:
                    self.answers.append((port, f"{exc!r} at {self.step}"))

    def failures(self) -> list[tuple[int, int | str]]:
        return [a for a in self.answers if not isinstance(a[1], int)]

    def logs(self) -> str:
        """What the nodes logged, for a failure's message."""
        return "\n".join(f"{p.name}: {p.read_text()}" for p in sorted(self.tmp.glob("node-*.log")))

    @property
    def visiting(self) -> Any:
        cluster = self

        class Loop:
            def __enter__(self) -> None:
                self.thread = threading.Thread(target=cluster.visit, daemon=True)
                self.thread.start()

            def __exit__(self, *exc: object) -> None:
                cluster._stop.set()
                self.thread.join(timeout=20)

        return Loop()

    def close(self) -> None:
        self._stop.set()
        for process in self.nodes.values():
            process.terminate()
        for process in self.nodes.values():
            process.wait(timeout=10)


@pytest.fixture
def cluster(server_db_url: str, tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(server_db_url, tmp_path)
    done = c.upgrader(c.old, "install", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    try:
        yield c
    finally:
        c.close()


def listed(c: Cluster) -> dict[str, Any]:
    done = c.upgrader(c.new, "nodes", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    return dict(json.loads(done.stdout))


def wait_until(what: str, check: Any, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_a_release_rolls_out_over_three_nodes_with_no_failed_request(cluster: Cluster) -> None:
    c = cluster
    old = [c.start(c.old), c.start(c.old)]
    with c.visiting:
        # The new release is on the deploy node's disk; its status says what can be done.
        before = c.status(c.new)
        assert before["state"] == "online_pending", before
        assert c.upgrader(c.new, "status").returncode == 6
        assert [(p["revision"], p["phase"]) for p in before["pending_revisions"]] == [
            ("o02", "online"),
            ("p03", "post-deploy"),
        ]
        assert [(r["revision"], r["findings"]) for r in before["online_check"]] == [("o02", [])]

        # 1. The online part, with the site up: the old nodes keep answering through it.
        c.step = "upgrade --online"
        online = c.upgrader(c.new, "upgrade", "--online", "--yes", "--no-backup")
        assert online.returncode == 0, online.stdout + online.stderr
        assert "post-deploy" in online.stdout
        old_view = c.status(c.old)
        assert old_view["state"] == "compatible_ahead", old_view
        assert old_view["compatible_heads"] == ["r01"]
        new_view = c.status(c.new)
        assert new_view["state"] == "post_deploy_pending"
        assert new_view["schema_version"] == "1.0.0"  # the release is not complete yet

        # 2. The new code serves on the first node, beside the two old ones.
        c.step = "the first new node"
        first = c.start(c.new)
        behind = wait_until(
            "the old nodes to be listed",
            lambda: (r := listed(c))["behind"] and len(r["nodes"]) == 3 and r,
        )
        old_pids = {c.pids[p] for p in old}
        assert {n["pid"] for n in behind["nodes"] if n["code_version"] == "1.0.0"} == old_pids
        assert all(str(pid) in behind["behind"] for pid in old_pids)

        # 3. Post-deploy refuses while one old node lives, and names it.
        c.step = "rolling the first old node"
        second = c.roll(old[0])
        still = c.pids[old[1]]
        wait_until("the rolled node to drop out", lambda: len(listed(c)["nodes"]) == 3)
        refused = c.upgrader(c.new, "upgrade", "--post-deploy", "--yes", "--no-backup")
        assert refused.returncode == 75, refused.stdout + refused.stderr
        assert f"pid {still}" in refused.stderr and "Nothing was changed" in refused.stderr
        status = c.status(c.new)
        assert status["state"] == "post_deploy_pending"
        assert status["blocked_by"] == [f"{n['host']} pid {still}" for n in listed(c)["nodes"]
                                         if n["pid"] == still]  # fmt: skip

        # 4. Once the last old node is rolled and gone, post-deploy runs, the site up.
        c.step = "rolling the second old node"
        third = c.roll(old[1])
        wait_until("the old nodes to drop out", lambda: not listed(c)["behind"])
        c.step = "upgrade --post-deploy"
        done = c.upgrader(c.new, "upgrade", "--post-deploy", "--yes", "--no-backup")
        assert done.returncode == 0, done.stdout + done.stderr
        c.step = "after the release"
        time.sleep(1)  # visitors keep coming after it
    assert c.failures() == [], f"{c.failures()[:10]}\n{c.logs()}"
    served = {port for port, _ in c.answers}
    assert {*old, first, second, third} <= served
    assert len(c.answers) > 50
    for port in (first, second, third):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/upgrader/status") as r:
            assert json.loads(r.read())["state"] == "ok"
    final = c.status(c.new)
    assert (final["state"], final["schema_version"], final["compatible_heads"]) == (
        "ok",
        "2.0.0",
        [],
    )
    runs = [r for r in journal_of(c.env["SITE_DATABASE_URL"]) if r["kind"] == "upgrade"]
    assert [(r["phase"], r["status"]) for r in runs] == [  # newest first
        ("post-deploy", "succeeded"),
        ("online", "succeeded"),
    ]


def test_forcing_post_deploy_past_an_old_node_is_named_in_the_journal(
    db_url: str, tmp_path: Path
) -> None:
    c = Cluster(db_url, tmp_path)
    c.env["UPGRADER_NODE_BEAT"] = "10"  # the planted node stays listed for a minute
    assert c.upgrader(c.old, "install", "--yes").returncode == 0
    assert c.upgrader(c.new, "upgrade", "--online", "--yes", "--no-backup").returncode == 0
    add_node(db_url, "worker-1", 902, "1.0.0", kind="worker")
    refused = c.upgrader(c.new, "upgrade", "--post-deploy", "--yes", "--no-backup")
    assert refused.returncode == 75 and "worker-1 pid 902" in refused.stderr
    assert c.status(c.new)["blocked_by"] == ["worker-1 pid 902"]
    forced = c.upgrader(c.new, "upgrade", "--post-deploy", "--force", "--yes", "--no-backup")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    last = journal_of(db_url)[0]
    assert last["phase"] == "post-deploy" and "--force" in last["note"]
    assert "worker-1 pid 902" in last["note"]
    history = c.upgrader(c.new, "history").stdout
    assert "upgrade --post-deploy succeeded" in history and "upgrade --online" in history
    assert "note: --force: applied while 1 node still runs 1.0.0 (worker-1 pid 902" in history
    # The old node's code no longer fits: it says so (Err3), it does not serve.
    assert c.status(c.old)["code"] == "Err3"


def test_online_refuses_what_is_not_declared_online(db_url: str, tmp_path: Path) -> None:
    c = Cluster(db_url, tmp_path)
    assert c.upgrader(c.old, "install", "--yes").returncode == 0
    blocking = release(tmp_path / "rel-3", "2.0.0", "price", [*BASE, ("b02", "pass\n")])
    refused = c.upgrader(blocking, "upgrade", "--online", "--yes", "--no-backup")
    assert refused.returncode == 1
    assert "b02, declares no phase" in refused.stderr and "Nothing was changed" in refused.stderr
    assert c.status(blocking)["database_revisions"] == ["r01"]
    # The whole release through an ordinary upgrade clears any compatibility declared.
    assert c.upgrader(c.new, "upgrade", "--online", "--yes", "--no-backup").returncode == 0
    assert c.status(c.old)["state"] == "compatible_ahead"
    assert c.upgrader(c.new, "upgrade", "--yes", "--no-backup").returncode == 0
    final = c.status(c.new)
    assert (final["state"], final["compatible_heads"]) == ("ok", [])
    assert c.status(c.old)["code"] == "Err3"


def test_state_tables_of_an_older_upgrader_are_read_and_extended(
    db_url: str, tmp_path: Path
) -> None:
    """An installation made before these columns existed: reading it works, and the first
    run adds them."""
    c = Cluster(db_url, tmp_path)
    assert c.upgrader(c.old, "install", "--yes").returncode == 0
    engine = create_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE upgrader_state DROP COLUMN compatible_heads"))
            conn.execute(text("ALTER TABLE upgrader_runs DROP COLUMN phase"))
    finally:
        engine.dispose()
    assert c.status(c.old)["state"] == "ok"
    assert c.status(c.new)["state"] == "online_pending"
    assert c.upgrader(c.new, "upgrade", "--online", "--yes", "--no-backup").returncode == 0
    assert c.status(c.old)["state"] == "compatible_ahead"


def test_the_guard_serves_in_a_rollout_and_tells_administrators(
    db_url: str, tmp_path: Path
) -> None:
    """Visitors get the application in all three rollout states; administrators get it with
    a banner that says what is next; a load balancer's readiness check keeps the node."""
    from werkzeug.test import Client

    from tests.test_guard import plain_app
    from upgrader.settings import resolve
    from upgrader.web import UpgraderMiddleware

    c = Cluster(db_url, tmp_path)
    assert c.upgrader(c.old, "install", "--yes").returncode == 0

    def node(release: Path, version: str) -> Client:
        settings = {
            "database_url": db_url,
            "migrations": str(release / "migrations"),
            "code_version": version,
            "installer_dir": str(tmp_path / "none"),
            "allow_ips": "10.0.0.1",
        }
        return Client(UpgraderMiddleware(plain_app, resolve(settings, environ={})))

    def check(client: Client, state: str, banner: str) -> None:
        visitor = client.get("/")
        assert (visitor.status_code, visitor.text) == (200, "the application")
        admin = client.get("/", environ_base={"REMOTE_ADDR": "10.0.0.1"})
        assert admin.status_code == 200 and banner in admin.text, admin.text
        ready = client.get("/upgrader/status?ready")
        assert (ready.status_code, ready.headers["X-Upgrader-State"]) == (200, state)

    check(node(c.new, "2.0.0"), "online_pending", "Online upgrade available")
    assert c.upgrader(c.new, "upgrade", "--online", "--yes", "--no-backup").returncode == 0
    check(node(c.new, "2.0.0"), "post_deploy_pending", "upgrade --post-deploy")
    check(node(c.old, "1.0.0"), "compatible_ahead", "Deploy the new release on this node")
    # An administrator's maintenance wins over all of them.
    assert c.upgrader(c.new, "maintenance", "on").returncode == 0
    assert node(c.old, "1.0.0").get("/").status_code == 503


def test_an_online_revision_that_drops_a_column_is_refused_before_it_runs(
    cluster: Cluster,
) -> None:
    """Its phase is checked, not trusted: the old nodes read the column it drops. Nothing
    runs, and they keep answering 200."""
    c = cluster
    dropping = ("o02", 'op.drop_column("items", "price")\n')  # declared online below
    c.new = release(c.tmp / "rel-2.0.0-bad", "2.0.0", "price", [*BASE, dropping])
    old = c.start(c.old)
    with c.visiting:
        c.step = "upgrade --online"
        refused = c.upgrader(c.new, "upgrade", "--online", "--yes", "--no-backup")
        time.sleep(1)  # the old node is still visited after the refusal
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "o02 (drop-column" in refused.stderr or "o02 (ban-drop-column" in refused.stderr
    assert "post-deploy" in refused.stderr and "Nothing was changed" in refused.stderr
    assert c.status(c.new)["database_revisions"] == ["r01"]
    assert c.failures() == [], c.logs()
    assert [a for a in c.answers if a[0] == old and a[1] == 200]
    said = c.upgrader(c.new, "status")
    assert "`" in said.stdout and "upgrade --online` will refuse these" in said.stdout
    assert "o02  [contract]" in said.stdout
    (checked,) = c.status(c.new)["online_check"]
    assert checked["revision"] == "o02" and checked["findings"]
    lint = c.upgrader(c.new, "lint", "--json")
    assert lint.returncode == 1
    (report,) = json.loads(lint.stdout)["revisions"]
    assert report["declared_phase"] == "online" and report["suggested_phase"] == "post-deploy"
