"""The diagnosis of an installation: the one place a state is decided, explained and
recorded.

`diagnose()` gathers the facts (core/gather.py), decides once (core/decide.py: pure named
steps), and has the decision explained (core/explain.py); pages, the CLI, the status
endpoint and the wizard only render the `Diagnosis` it returns, and ask its state what it
means (core/states.py). `decide()` is the same without I/O, for facts at hand.

Every oddity is a state with an explanation and a fix, never an exception.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from upgrader.core import journal, nodes
from upgrader.core.database import describe_error, guard_engine
from upgrader.core.decide import Context, Finding, find_in
from upgrader.core.explain import explain
from upgrader.core.facts import CodeFacts, DatabaseFacts, load_code_facts
from upgrader.core.gather import read_database
from upgrader.core.records import Maintenance, Run
from upgrader.core.revisions import Revision
from upgrader.core.rollout import blocked_by
from upgrader.core.states import State
from upgrader.core.tables import define_tables
from upgrader.core.times import iso, took, utcnow
from upgrader.core.versions import parse_version
from upgrader.core.wording import Words
from upgrader.i18n import N_
from upgrader.settings import Settings


@dataclass(frozen=True)
class Diagnosis:
    state: State
    summary: str
    fix: str
    details: tuple[str, ...]
    code_version: str
    schema_version: str | None
    database_revisions: tuple[str, ...]
    code_heads: tuple[str, ...]
    pending_revisions: tuple[Revision, ...]
    maintenance: Maintenance | None
    run: Run | None
    installer_present: bool
    checked_at: dt.datetime
    version_to_record: str | None = None  # a release without migrations, not yet recorded
    state_row_id: int | None = None
    outside_change: tuple[str, str] | None = None  # revisions moved without upgrader: (from, to)
    missing_file: str | None = None  # SQLite: the database file is not there
    compatible_heads: tuple[str, ...] = ()  # older code declared to work on this schema
    blocked_by: tuple[str, ...] = ()  # post-deploy: the nodes on older code, by name
    stalled: bool = False  # the running upgrade's process is stopped, or silent past its lease
    beneath: State | None = None  # maintenance: the state it sits over (one that serves)

    @property
    def code(self) -> str | None:
        return self.state.error_code

    @property
    def exit_code(self) -> int:
        return self.state.exit_code

    @property
    def code_fits(self) -> bool:
        """The database fits this code, so the code may start serving (what `upgrader
        wait` waits for): a state that serves, or maintenance switched on over one."""
        return self.state.serving or (self.beneath is not None and self.beneath.serving)

    @property
    def headline(self) -> str:
        return self.headline_in(str)

    def summary_in(self, translate: Callable[[str], str]) -> str:
        """The summary in a language; an administrator's own message stays as written."""
        running = State.UPGRADE_RUNNING.summary
        run = self.run
        if self.state is State.UPGRADE_RUNNING and run and self.summary.startswith(running + " ("):
            step = translate(N_("(step %(step)s of %(steps)s)"))
            return f"{translate(running)} {step % {'step': run.step, 'steps': run.steps}}"
        return translate(self.summary)

    def headline_in(self, translate: Callable[[str], str]) -> str:
        """The headline in a language (upgrader.i18n); the code stays as it is."""
        headline = translate(self.state.headline)
        return f"{headline} ({self.code})" if self.code else headline

    def to_dict(self) -> dict[str, Any]:
        """The `status --json` contract (docs/cli.md). Holds no secret."""
        return {
            "state": self.state.value,
            "code": self.code,
            "headline": self.headline,
            "summary": self.summary,
            "fix": self.fix,
            "details": list(self.details),
            "code_version": self.code_version,
            "schema_version": self.schema_version,
            "database_revisions": list(self.database_revisions),
            "code_heads": list(self.code_heads),
            "pending_revisions": [
                {"revision": r.id, "message": r.message, "phase": r.phase}
                for r in self.pending_revisions
            ],
            "compatible_heads": list(self.compatible_heads),
            "blocked_by": list(self.blocked_by),
            "maintenance": None
            if self.maintenance is None
            else self.maintenance.to_dict(self.checked_at),
            "run": None if self.run is None else self.run.to_dict(),
            "installer_present": self.installer_present,
            "checked_at": iso(self.checked_at),
        }


def decide(
    code: CodeFacts,
    db: DatabaseFacts,
    *,
    now: dt.datetime,
    cli: str = "upgrader",
    installer_present: bool = False,
    installer_dir: str | None = None,
) -> Diagnosis:
    """Decide the state and explain it. Pure: the same facts always give the same
    diagnosis. `cli` and the installer serve the words only."""
    context = Context.of(code, db, now)
    return diagnosis_of(find_in(context), context, Words(cli, installer_present, installer_dir))


def diagnosis_of(found: Finding, c: Context, words: Words) -> Diagnosis:
    """The finding, explained, as everything else reads it."""
    text = explain(found, c, words)
    single = c.single
    return Diagnosis(
        state=found.state,
        summary=text.summary or found.state.summary,
        fix=text.fix,
        details=text.details,
        code_version=c.code.version.raw,
        schema_version=single.schema_version if single else None,
        database_revisions=c.db.revisions,
        code_heads=c.code.heads,
        pending_revisions=c.pending,
        maintenance=single.maintenance if single else None,
        run=c.run,
        installer_present=words.installer_present,
        checked_at=c.now,
        version_to_record=found.version_to_record,
        state_row_id=single.id if single else None,
        outside_change=found.outside_change,
        missing_file=c.db.missing_file,
        compatible_heads=single.compatible_heads if single else (),
        blocked_by=blocked_by(c) if found.state is State.POST_DEPLOY_PENDING else (),
        stalled=found.stall is not None,
        beneath=found.beneath,
    )


def diagnose(
    settings: Settings,
    *,
    code: CodeFacts | None = None,
    engine: Engine | None = None,
    record: bool = True,
    now: dt.datetime | None = None,
) -> Diagnosis:
    """Diagnose the installation described by `settings`: gather, decide once, explain.

    With `record`, a release that adds no migrations is recorded on the spot
    (once, whichever process sees it first) and the diagnosis says ok.
    """
    code = code or load_code_facts(settings)
    own_engine = engine is None
    engine = engine or guard_engine(settings)
    try:
        facts = read_database(engine, settings, deadline=settings.connect_timeout)
        context = Context.of(code, facts, now or utcnow())
        found = find_in(context)
        if found.state is State.POST_DEPLOY_PENDING:
            # which nodes still run older code: read only when the fix names them
            context = replace(context, db=replace(facts, nodes=_live_nodes(engine, settings)))
        directory = settings.installer_dir
        words = Words(
            settings.cli,
            directory is not None and Path(directory).is_dir(),
            str(directory) if directory else None,
        )
        diagnosis = diagnosis_of(found, context, words)
        if record and diagnosis.version_to_record and diagnosis.state_row_id is not None:
            diagnosis = _record(engine, settings, diagnosis)
        return diagnosis
    finally:
        if own_engine:
            engine.dispose()


def _live_nodes(engine: Engine, settings: Settings) -> tuple[nodes.Node, ...] | None:
    try:
        with engine.connect() as conn:
            tables = define_tables(settings.table_prefix)
            return tuple(nodes.live(conn, tables, beat=settings.node_beat))
    except SQLAlchemyError:
        return None  # the decision says what it can without them


def _record(engine: Engine, settings: Settings, diagnosis: Diagnosis) -> Diagnosis:
    assert diagnosis.version_to_record is not None and diagnosis.state_row_id is not None
    tables = define_tables(settings.table_prefix)
    version, outside = diagnosis.version_to_record, diagnosis.outside_change
    if outside is None:
        note = f"release {version} adds no migrations: version recorded on its own"
    else:
        note = (
            f"the schema was changed outside upgrader, from revision {outside[0]} to "
            f"{outside[1]}, with no backup: version {version} recorded"
        )
    try:
        journal.record_version(
            engine,
            tables,
            diagnosis.state_row_id,
            diagnosis.schema_version,
            version,
            diagnosis.database_revisions,
            note=note,
            kind="version" if outside is None else "external",
        )
    except SQLAlchemyError as exc:
        reason = describe_error(exc, engine.url)
        failed = f"could not record version {version}: {reason}"
        return replace(diagnosis, details=(*diagnosis.details, failed))
    recorded = note.replace(" on its own", "")
    details = tuple(d for d in diagnosis.details if "is to be recorded" not in d)
    return replace(
        diagnosis,
        schema_version=diagnosis.version_to_record,
        version_to_record=None,
        details=(*details, recorded),
    )


def provisional(settings: Settings, why: str) -> Diagnosis:
    """Err1 without asking the database: for requests that cannot wait for an answer
    (a process that has none yet, or a refresh that is taking too long)."""
    version = parse_version(settings.code_version or "0")
    facts = DatabaseFacts(reachable=False, error=why)
    return decide(CodeFacts(version, None), facts, now=utcnow(), cli=settings.cli)


def run_status(run: Run, d: Diagnosis) -> str:
    """A journal entry's status by the liveness rules decide() applies: "running" only for
    the run whose process the diagnosis found alive (its lock held, else its lease live).
    An entry still open in the journal that nobody runs any more was interrupted."""
    if run.status != "running":
        return run.status
    alive = d.state is State.UPGRADE_RUNNING and d.run is not None and d.run.id == run.id
    return "running" if alive else "interrupted"


def as_read(run: Run, d: Diagnosis) -> Run:
    """A journal entry as the diagnosis reads it: the last run's step caught up with the
    version table, which commits with every revision (the journal every half second)."""
    return d.run if d.run is not None and d.run.id == run.id else run


def run_time(run: Run, status: str, now: dt.datetime) -> str:
    """How long a run took, in words that mean something: a run that was cut off ran until
    its last sign of life (its heartbeat), not until whoever closed its entry."""
    if status == "running":
        return f"{took(run.started_at, now)} so far"
    if status == "interrupted" and run.kind in ("upgrade", "install"):
        last = run.heartbeat_at or run.started_at
        return f"cut off after {took(run.started_at, last)} (last sign of life)"
    return took(run.started_at, run.finished_at)


__all__ = [
    "CodeFacts",
    "Diagnosis",
    "State",
    "decide",
    "diagnose",
    "load_code_facts",
]
