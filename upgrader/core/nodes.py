"""Which process runs which code: the node registry.

Every process that runs the guard (web servers, and workers through
`accepting_new_work()`) records itself in `upgrader_nodes`: host, pid, kind, code
version and heads, when it started, when it was last seen. It writes on the diagnosis
refresh it already makes once per TTL, and then at most once per BEAT seconds, so a
request costs no query. A process that misses MISSED beats is gone: its row is no longer
listed, and a writer deletes it later.

Support reads it to name the server still running old code ("web-2 pid 311 runs 1.1.0").
"""

from __future__ import annotations

import atexit
import datetime as dt
import functools
import importlib
import logging
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, Executable, delete, insert, inspect, select, update
from sqlalchemy.exc import SQLAlchemyError

from upgrader.core import records, times
from upgrader.core.database import guard_engine, missing_sqlite_file, statement_connection
from upgrader.core.tables import Tables, define_tables
from upgrader.core.times import utcnow
from upgrader.core.versions import compare, parse_version

log = logging.getLogger("upgrader")

BEAT = 10.0
"""Seconds between two writes of one process (at most; it writes on a refresh):
UPGRADER_NODE_BEAT."""

MISSED = 6
"""Beats a process may miss before it counts as gone (a minute by default)."""

_STARTED = utcnow().replace(microsecond=0)


@dataclass(frozen=True)
class Node:
    id: str
    host: str
    pid: int
    kind: str
    code_version: str | None
    heads: tuple[str, ...]
    started_at: dt.datetime
    last_seen: dt.datetime

    @property
    def name(self) -> str:
        return f"{self.host} pid {self.pid}"

    def to_dict(self, now: dt.datetime) -> dict[str, Any]:
        return {
            "id": self.id,
            "host": self.host,
            "pid": self.pid,
            "kind": self.kind,
            "code_version": self.code_version,
            "heads": list(self.heads),
            "started_at": times.iso(self.started_at),
            "last_seen": times.iso(self.last_seen),
            "seconds_since_seen": max(0, int((now - self.last_seen).total_seconds())),
        }


def this_process() -> str:
    """host:pid:start: a pid reused after a restart is another process."""
    return f"{socket.gethostname()}:{os.getpid()}:{_STARTED:%Y%m%dT%H%M%S}"


class Registration:
    """One process's row, written from its diagnosis refresh: at most once per BEAT, never
    while an upgrade runs (SQLite would make the request wait for the migration's lock),
    and never raising into a request. A beat is one statement (an upsert); every MISSED
    beats it also deletes the rows of processes gone long ago."""

    def __init__(self, tables: Tables, kind: str = "web", beat: float = BEAT) -> None:
        self.tables, self.kind, self.every = tables, kind, beat
        self._written = 0.0
        self._beats = 0
        self._failed = False
        self._leaving = False
        self._table = False  # the registry's table was found (an older install has none)

    def beat(self, engine: Engine, version: str | None, heads: Sequence[str], busy: bool) -> None:
        if busy or time.monotonic() - self._written < self.every:
            return
        self._written = time.monotonic()  # also on failure: no retry storm against a sick server
        try:
            self._table = self._table or has_registry(engine, self.tables)
            if self._table:
                sweep = self._beats % MISSED == 0
                record(engine, self.tables, self.kind, version, heads, beat=self.every, sweep=sweep)
                self._beats += 1
        except SQLAlchemyError as exc:
            self._table = False  # look again next time: a restore may have taken it away
            if not self._failed:
                log.warning("cannot record this process in the node registry: %s", exc)
            self._failed = True
            return
        self._failed = False
        if self._table and not self._leaving:  # a clean exit leaves the list at once
            atexit.register(leave, engine, self.tables)
            self._leaving = True


def has_registry(engine: Engine, tables: Tables) -> bool:
    """Whether the database has the registry's table (an installation made before it gets
    it with its next upgrade); False too where connecting would create a SQLite file."""
    if missing_sqlite_file(engine.url):
        return False
    with engine.connect() as conn:
        return inspect(conn).has_table(tables.nodes.name)


def record(
    engine: Engine,
    tables: Tables,
    kind: str,
    version: str | None,
    heads: Sequence[str],
    now: dt.datetime | None = None,
    beat: float = BEAT,
    *,
    sweep: bool = True,
) -> None:
    """Upsert this process's row (one statement); with `sweep`, also delete the rows of
    processes gone long ago. The registry's table must exist (`has_registry`)."""
    if missing_sqlite_file(engine.url):
        return  # connecting would create the file: the diagnosis must still see it missing
    now = now or utcnow()
    me = this_process()
    host, pid, _ = me.rsplit(":", 2)
    row = {
        "id": me,
        "host": host,
        "pid": int(pid),
        "started_at": _STARTED,
        "kind": kind,
        "code_version": version,
        "heads": records.join_revisions(heads),
        "last_seen": now,
    }
    with statement_connection(engine) as conn:
        upsert = _upsert(tables, conn.dialect.name)
        if upsert is not None:
            conn.execute(upsert, row)
        else:  # another database: two statements
            nodes = tables.nodes
            changed = conn.execute(
                update(nodes).where(nodes.c.id == me).values({c: row[c] for c in UPDATED})
            ).rowcount
            if not changed:
                conn.execute(insert(nodes), row)
        if sweep:
            gone = now - dt.timedelta(seconds=beat * MISSED * 2)
            conn.execute(delete(tables.nodes).where(tables.nodes.c.last_seen < gone))
        conn.commit()


UPDATED = ("kind", "code_version", "heads", "last_seen")
"""What a beat changes in a process's row (the rest is its identity)."""


@functools.cache
def _upsert(tables: Tables, dialect: str) -> Executable | None:
    """This process's row, inserted or updated in one statement, built once per dialect.
    The dialect's own `insert` comes from its package, which the engine has already
    loaded: importing all three here cost every cold command 7 ms."""
    nodes = tables.nodes
    if dialect in ("postgresql", "sqlite"):
        ours = importlib.import_module(f"sqlalchemy.dialects.{dialect}").insert(nodes)
        upsert: Executable = ours.on_conflict_do_update(
            index_elements=[nodes.c.id], set_={c: ours.excluded[c] for c in UPDATED}
        )
        return upsert
    if dialect in ("mysql", "mariadb"):
        my = importlib.import_module("sqlalchemy.dialects.mysql").insert(nodes)
        upsert = my.on_duplicate_key_update({c: my.inserted[c] for c in UPDATED})
        return upsert
    return None


def leave(engine: Engine, tables: Tables) -> None:
    """Delete this process's row, at its clean exit: `upgrade --post-deploy` then need not
    wait for it to age out. Never raises (the database may be gone by then)."""
    if missing_sqlite_file(engine.url):
        return  # connecting would create the file
    try:
        with engine.begin() as conn:
            conn.execute(delete(tables.nodes).where(tables.nodes.c.id == this_process()))
    except SQLAlchemyError:
        pass
    engine.dispose()


def live(
    conn: Connection, tables: Tables, now: dt.datetime | None = None, beat: float = BEAT
) -> list[Node]:
    """The processes that wrote within MISSED beats, by host and pid."""
    now = now or utcnow()
    nodes = tables.nodes
    if not inspect(conn).has_table(nodes.name):
        return []
    since = now - dt.timedelta(seconds=beat * MISSED)
    rows = conn.execute(
        select(nodes).where(nodes.c.last_seen >= since).order_by(nodes.c.host, nodes.c.pid)
    ).mappings()
    return [
        Node(
            id=r["id"],
            host=r["host"],
            pid=int(r["pid"]),
            kind=r["kind"],
            code_version=r["code_version"],
            heads=tuple(records.split_revisions(r["heads"])),
            started_at=r["started_at"],
            last_seen=r["last_seen"],
        )
        for r in rows
    ]


def newest(nodes: Sequence[Node], version: str | None = None) -> str | None:
    """The newest code version among the nodes (and `version`): what should run everywhere."""
    known = sorted({v for v in (version, *(n.code_version for n in nodes)) if v})
    valid = [(parse_version(v).public, v) for v in known]
    ranked = [(p, v) for p, v in valid if p is not None]
    return max(ranked)[1] if ranked else (known[0] if known else None)


def behind(nodes: Sequence[Node], version: str | None = None) -> list[Node]:
    """The nodes that run older code than the newest one seen (or than `version`)."""
    target = newest(nodes, version)
    return [n for n in nodes if n.code_version != target]


def older(nodes: Sequence[Node], version: str) -> list[Node]:
    """The nodes whose code is older than `version`, or of a version that does not parse:
    the ones that post-deploy revisions would break."""
    mine = parse_version(version)
    order = [(n, compare(parse_version(n.code_version), mine)) for n in nodes]
    return [n for n, c in order if c is None or c < 0]


def summary(nodes: Sequence[Node], version: str | None = None) -> str | None:
    """ "2 nodes still run 1.1.0 (web-2 pid 311, worker-1 pid 902)"; None when all agree."""
    return describe(behind(nodes, version))


def describe(old: Sequence[Node]) -> str | None:
    """The given nodes by the version they run, with host and pid; None for none."""
    if not old:
        return None
    by_version: dict[str, list[Node]] = {}
    for node in old:
        by_version.setdefault(node.code_version or "an unknown version", []).append(node)
    parts = []
    for running, group in sorted(by_version.items()):
        names = ", ".join(n.name + (f" ({n.kind})" if n.kind != "web" else "") for n in group)
        count = f"{len(group)} node{'s' if len(group) != 1 else ''}"
        parts.append(f"{count} still run{'s' if len(group) == 1 else ''} {running} ({names})")
    return "; ".join(parts)


def against(nodes: Sequence[Node], schema: str | None) -> tuple[list[Node], list[Node]]:
    """The nodes on code older than the database's release, and those on newer code."""
    recorded = parse_version(schema)
    if not recorded.valid:
        return [], []
    order = [(n, compare(parse_version(n.code_version), recorded)) for n in nodes]
    return [n for n, c in order if c is None or c < 0], [n for n, c in order if c and c > 0]


def verdict(nodes: Sequence[Node], schema: str | None, cli: str, beat: float = BEAT) -> str:
    """What the nodes say against the database: which do not run its release, what to do
    about each, or that they all do; and when none is listed, why that need not mean none
    runs (a process records itself on the refresh a request makes)."""
    if not nodes:
        return (
            "no process has recorded itself in the last minute. A process records itself "
            f"on the refresh a request makes (at most every {beat:g} s), so a server that "
            "answered no request in that minute is not listed even though it runs: one "
            "request to it (its /upgrader/status) lists it"
        )
    older, newer = against(nodes, schema)
    said = []
    if older:
        said.append(
            f"{describe(older)}, older than the database's release {schema}: they answer "
            f"Err3 (or serve only as far as an online upgrade declared them compatible). "
            f"Deploy {schema} or later on them and restart them"
        )
    if newer:
        names = ", ".join(n.name for n in newer)
        said.append(
            f"{len(newer)} node(s) run code newer than the database's release {schema} "
            f"({names}): they wait for the upgrade (`{cli} status` says which step is next)"
        )
    if said:
        return "; ".join(said)
    if schema is None:
        return summary(nodes) or f"all {len(nodes)} run {newest(nodes)}"
    return f"all {len(nodes)} run {schema}, the database's release"


def read(settings: Any) -> list[Node] | None:
    """The live nodes of the installation `settings` describe; None when unreadable."""
    engine = guard_engine(settings)
    if missing_sqlite_file(engine.url):
        engine.dispose()
        return []  # connecting would create the file
    try:
        with engine.connect() as conn:
            tables = define_tables(settings.table_prefix)
            return live(conn, tables, beat=settings.node_beat)
    except SQLAlchemyError:
        return None
    finally:
        engine.dispose()
