"""Adoption: record the version of a database that upgrader has not recorded yet.

Used when an existing Alembic-managed application starts using upgrader, and
to repair a state table with several rows or an unparseable version. It writes
upgrader's own state and journal only; the schema is never touched.
"""

from __future__ import annotations

from dataclasses import dataclass

from upgrader.core import journal, storage
from upgrader.core.database import guard_engine
from upgrader.core.diagnosis import Diagnosis, State, diagnose, load_code_facts
from upgrader.core.tables import define_tables, ensure_tables
from upgrader.core.versions import parse_version
from upgrader.settings import Settings


class AdoptionRefused(Exception):
    """Adopting would record something false; the message says what to do instead."""

    def __init__(self, message: str, diagnosis: Diagnosis | None = None) -> None:
        super().__init__(message)
        self.diagnosis = diagnosis


@dataclass(frozen=True)
class AdoptionPlan:
    version: str
    previous: str | None
    diagnosis: Diagnosis


def plan_adoption(settings: Settings, version: str | None = None) -> AdoptionPlan:
    """Check that adopting is safe, and which version would be recorded."""
    code = load_code_facts(settings)
    diagnosis = diagnose(settings, code=code, record=False)
    if not diagnosis.state.readable:
        raise AdoptionRefused(
            f"nothing to adopt: {diagnosis.headline.lower()}; {diagnosis.fix}", diagnosis
        )
    if diagnosis.state is State.UPGRADE_RUNNING:
        raise AdoptionRefused("an upgrade is running; wait for it to finish")
    if code.graph is None or len(code.heads) != 1:
        raise AdoptionRefused(f"the code cannot be compared: {'; '.join(diagnosis.details)}")
    revisions = diagnosis.database_revisions
    unknown = [r for r in revisions if not code.graph.known(r)]
    if not revisions or unknown or code.graph.overlapping(revisions):
        raise AdoptionRefused(
            "the database's Alembic revisions must be known to this code and not overlap "
            f"(they are: {', '.join(revisions) or 'none'}); {diagnosis.fix}"
        )
    at_head = not diagnosis.pending_revisions
    if version is None:
        if not at_head:
            raise AdoptionRefused(
                f"the database is at {', '.join(revisions)}, not at the code's head: name the "
                "release it is at with --version (or run the upgrade, which adopts it)"
            )
        version = diagnosis.code_version
    parsed = parse_version(version)
    if not parsed.valid:
        raise AdoptionRefused(f"--version: {parsed.error}")
    release_rev = settings.releases.get(parsed.raw)
    if release_rev is not None and tuple(revisions) != (release_rev,):
        raise AdoptionRefused(
            f"release {parsed.raw} ends at revision {release_rev}, but the database is at "
            f"{', '.join(revisions)}"
        )
    return AdoptionPlan(parsed.raw, diagnosis.schema_version, diagnosis)


def adopt(settings: Settings, plan: AdoptionPlan, trigger: str = "cli") -> None:
    """Write the single state row and a journal entry, in one transaction."""
    tables = define_tables(settings.table_prefix)
    engine = guard_engine(settings)
    try:
        ensure_tables(engine, tables)
        with engine.begin() as conn:
            facts = storage.read_facts(conn, tables, settings.version_table)
            keep = next((s for s in facts.states if parse_version(s.schema_version).valid), None)
            keep = keep or (facts.states[0] if facts.states else None)
            storage.write_single_state(conn, tables, plan.version, keep)
            journal.journal_entry(
                conn,
                tables,
                kind="adopt",
                trigger=trigger,
                from_version=plan.previous,
                to_version=plan.version,
                revisions=plan.diagnosis.database_revisions,
                note=f"adopted at version {plan.version}; the schema was not changed",
            )
    finally:
        engine.dispose()
