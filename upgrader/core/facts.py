"""The facts a decision is made of: what the deployed code says, and what its database
says. Read elsewhere (core/gather.py); nothing here is interpreted yet."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from upgrader.core.nodes import Node
from upgrader.core.records import Run, StateRow
from upgrader.core.revisions import RevisionGraph, load_graph
from upgrader.core.tables import table_names
from upgrader.core.versions import ParsedVersion, parse_version
from upgrader.settings import Settings


@dataclass(frozen=True)
class CodeFacts:
    """What the deployed code says: its version and its migration graph."""

    version: ParsedVersion
    graph: RevisionGraph | None
    error: str | None = None  # the script directory could not be read
    releases: Mapping[str, str] = field(default_factory=dict)
    guard_tables: frozenset[str] = field(default_factory=table_names)
    upgrade_from: str | None = None  # the oldest release this code upgrades (UPGRADER_UPGRADE_FROM)

    @property
    def heads(self) -> tuple[str, ...]:
        return self.graph.heads if self.graph else ()


@dataclass(frozen=True)
class DatabaseFacts:
    """What the database says, read in one go."""

    reachable: bool = True
    error: str | None = None
    missing_file: str | None = None  # SQLite: the database file does not exist
    unreadable: str | None = None  # connected, but upgrader's tables could not be read
    lock_held: bool | None = None  # whether a process holds the upgrade lock now
    tables: tuple[str, ...] = ()
    has_version_table: bool = False
    revisions: tuple[str, ...] = ()
    has_state_table: bool = False
    states: tuple[StateRow, ...] = ()
    recent_runs: tuple[Run, ...] = ()  # newest first: the current upgrade's attempts
    problems: tuple[str, ...] = field(default=())  # rows we could not read
    dialect: str = ""
    lingering: str | None = None  # a dead run's statement still running in the server
    busy: str | None = None  # SQLite: locked by the live upgrade, so not readable now
    holder: tuple[int, str] | None = None  # SQLite, busy: the lock holder's pid and host
    process: str | None = None  # the open run's process, on this host (core/processes.py)
    nodes: tuple[Node, ...] | None = None  # the live nodes, read only when a fix names them

    @property
    def last_run(self) -> Run | None:
        return self.recent_runs[0] if self.recent_runs else None


def load_code_facts(settings: Settings) -> CodeFacts:
    """Read the code's version and migration graph. Slow (imports revision files): cache it."""
    version = parse_version(settings.resolved_code_version())
    migrations = Path(settings.migrations)
    facts = CodeFacts(
        version,
        None,
        releases=settings.releases,
        guard_tables=table_names(settings.table_prefix),
        upgrade_from=settings.upgrade_from,
    )
    if not migrations.is_dir():
        return replace(facts, error=f"{migrations} is not a directory")
    try:
        return replace(facts, graph=load_graph(migrations, settings.alembic_config))
    except Exception as exc:  # revision files are the application's code: anything can fail
        return replace(facts, error=f"{type(exc).__name__}: {exc}")
