"""`upgrade` and `install`: the commands that migrate, one at a time across every node.

An upgrade goes: diagnose → pre-flight (backup tool, directory, disk) → take the lock →
diagnose again under it → the run (engine/run.py). `--online` applies only what may be
applied with the site up; `--post-deploy` the rest once no node runs older code
(core/phases.py, docs/multi-node.md).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import Engine, inspect

from upgrader.core import nodes, phases
from upgrader.core.database import missing_sqlite_file
from upgrader.core.diagnosis import Diagnosis, diagnose
from upgrader.core.revisions import Revision
from upgrader.core.states import State
from upgrader.core.tables import define_tables
from upgrader.core.versions import compare, parse_version
from upgrader.engine.backup import preflight
from upgrader.engine.exits import (
    EXIT_BUSY,
    EXIT_REFUSED_AHEAD,
    EXIT_UNAVAILABLE,
    AlreadyRunning,
    PreflightFailed,
    Refused,
    busy_message,
    refuse_unless_upgradable,
)
from upgrader.engine.migrate import Target
from upgrader.engine.run import Outcome, Plan, execute
from upgrader.engine.site import Installation
from upgrader.settings import Settings

log = logging.getLogger("upgrader")


def upgrade(
    site: Installation,
    *,
    backup: bool = True,
    trigger: str = "cli",
    before: Diagnosis | None = None,
    phase: str | None = None,
    force: bool = False,
) -> Outcome:
    """Upgrade. `before` may be a diagnosis the caller just made; under the lock it is
    made again, since another run may have finished meanwhile.

    `phase` "online" applies only what may be applied with the site up; "post-deploy"
    applies the rest once no node runs older code (or with `force`, said in the journal).
    Either way the site stays up while it runs."""
    before = before or site.diagnose()
    refuse_unless_upgradable(before, site.cli)
    if not before.pending_revisions and before.state.settled:
        return _nothing_to_run(site, before)
    with site.engine() as engine:
        if backup:
            problems = preflight(engine, Path(site.settings.backup_dir))
            if problems:
                raise PreflightFailed(
                    "the backup cannot be made, so nothing was changed: " + "; ".join(problems)
                )
        with site.locked(engine) as lock:
            now = site.diagnose(engine)  # again, under the lock: another run may have finished
            refuse_unless_upgradable(now, site.cli, busy=False)
            if not now.pending_revisions and now.state.settled:
                return Outcome("nothing", "already up to date: another run finished first")
            pending, note = list(now.pending_revisions), None
            target: Target = "heads"
            if phase is not None:
                pending, target, note = phase_plan(site, engine, now, phase, force)
            plan = Plan(pending, target, backup=backup, trigger=trigger, phase=phase, note=note)
            return execute(site, engine, lock, now, plan)


def _nothing_to_run(site: Installation, d: Diagnosis) -> Outcome:
    """Up to date already; a release without migrations is recorded, with no run."""
    if d.version_to_record:
        diagnose(site.settings, code=site.code, record=True)
        return Outcome(
            "recorded",
            f"release {d.version_to_record} adds no migrations: version recorded",
            from_version=d.schema_version,
            to_version=d.version_to_record,
        )
    return Outcome(
        "nothing",
        "already up to date: nothing to do",
        from_version=d.schema_version,
        to_version=d.schema_version,
    )


def phase_plan(
    site: Installation, engine: Engine, d: Diagnosis, phase: str, force: bool
) -> tuple[list[Revision], Target, str | None]:
    """What `--online` or `--post-deploy` applies, or why it may not (decided under the
    lock, on the diagnosis made there): the revisions, Alembic's target, a journal note."""
    if d.state_row_id is None:
        raise Refused(
            f"upgrader has recorded no version for this database yet: run `{site.cli} "
            "upgrade` once (the site waits for it)"
        )
    split = phases.split(d.pending_revisions)
    if phase == "online":
        return _online(site, d, split, engine.url.get_backend_name())
    if split.blocking:
        ids = ", ".join(r.id for r in split.blocking)
        raise Refused(
            f"revision(s) {ids} declare no phase, so the site must wait for them: run "
            f"`{site.cli} upgrade` instead. Nothing was changed."
        )
    return list(d.pending_revisions), "heads", _past_old_nodes(site, engine, d, force)


def _online(
    site: Installation, d: Diagnosis, split: phases.Split, dialect: str
) -> tuple[list[Revision], Target, str | None]:
    if split.online:
        _checked_online(site, d, split.online, dialect)
        return list(split.online), phases.targets(split.online), None
    first, cli = split.rest[0], site.cli
    why = (
        f"the next pending revision, {first.id}, is post-deploy: run `{cli} upgrade "
        f"--post-deploy` once every node runs {d.code_version}"
        if split.serving
        else f"the next pending revision, {first.id}, declares no phase, so the site must "
        f"wait for it: run `{cli} upgrade`"
    )
    raise Refused(f"nothing can be applied online: {why}. Nothing was changed.")


def _checked_online(
    site: Installation, d: Diagnosis, online: Sequence[Revision], dialect: str
) -> None:
    """A revision's "online" is checked, not trusted: one whose SQL would break the release
    still serving, or lock a busy table, is refused before anything runs (engine/lint.py).
    One that cannot be rendered offline cannot be checked: said in the log, and applied."""
    from upgrader.engine.lint import LintError, lint_online  # heavy: sqlglot, when online

    try:
        report = lint_online(site, d.database_revisions, online, dialect)
    except LintError as exc:
        log.warning("the online revisions cannot be checked: %s", exc)
        return
    unsafe = [(r, r.unsafe_online) for r in report.revisions if r.unsafe_online]
    for rev in report.revisions:
        if rev.not_checked:
            log.warning("online revision %s %s", rev.revision, rev.not_checked)
    if not unsafe:
        return
    named = "; ".join(
        f"{rev.revision} ({', '.join(f'{f.rule}: {f.statement}' for f in found)})"
        for rev, found in unsafe
    )
    raise Refused(
        f"revision(s) declared online would break the release still serving or lock a "
        f'table: {named}. Declare them upgrader_phase = "post-deploy" (or acknowledge a '
        f'finding with upgrader_safe = {{"rule": "why"}}); `{site.cli} lint` explains '
        "each. Nothing was changed."
    )


def _past_old_nodes(site: Installation, engine: Engine, d: Diagnosis, force: bool) -> str | None:
    """Post-deploy revisions would break the nodes still on older code: refused, unless
    forced (then the journal says past whom)."""
    version, cli = d.code_version, site.cli
    with engine.connect() as conn:
        live = nodes.live(conn, site.tables, beat=site.settings.node_beat)
    old = nodes.older(live, version)
    if not old:
        return None
    if not force:
        raise Refused(
            f"post-deploy revisions would break the nodes still on older code: "
            f"{nodes.describe(old)}. Deploy {version} on them and restart them, or stop "
            f"them, then run this again (`{cli} nodes` lists them; a node that stopped "
            "without a word drops out of the list after a minute). Nothing was changed.",
            EXIT_BUSY,
        )
    log.warning("post-deploy run forced past old nodes: %s", nodes.describe(old))
    return f"--force: applied while {nodes.describe(old)}"


def install(site: Installation, *, release: str | None = None, trigger: str = "cli") -> Outcome:
    """Create the schema in an empty database, at the code's heads or at an older release."""
    code = site.code
    graph = code.graph
    if graph is None or not graph.revisions or graph.splits:
        problem = code.error or (
            f"heads {', '.join(code.heads)} split one branch" if graph and graph.splits
            else "no revisions"
        )  # fmt: skip
        raise Refused(f"the code's migrations cannot be used: {problem}", EXIT_REFUSED_AHEAD)
    version, target = release_target(site, release)
    with site.engine() as engine:
        refuse_non_empty(site, engine)
        with site.locked(engine) as lock:
            refuse_non_empty(site, engine)
            d = site.diagnose(engine)
            wanted = graph.ancestry(code.heads if target == "heads" else [target])
            pending = [r for r in graph.pending(()) if r.id in wanted]
            harmful = [r.id for r in pending if r.changes(code.guard_tables)]
            if harmful:
                raise Refused(
                    f"revision(s) {', '.join(harmful)} would drop or alter upgrader's own "
                    "tables: this release cannot be installed (see `status`)",
                    EXIT_REFUSED_AHEAD,
                )
            plan = Plan(pending, target, "install", version, backup=False, trigger=trigger)
            return execute(site, engine, lock, d, plan)


def release_target(site: Installation, release: str | None) -> tuple[str, str]:
    """The version to install and Alembic's target: the code's heads, or a known release's
    revision (UPGRADER_RELEASES), never a newer one."""
    code_version = site.code.version.raw
    if release is None or release == code_version:
        return code_version, "heads"
    parsed = parse_version(release)
    if not parsed.valid:
        raise Refused(f"--release: {parsed.error}")
    if (compare(parsed, site.code.version) or 0) > 0:
        raise Refused(f"release {release} is newer than this code ({code_version})")
    releases = site.settings.releases
    target = releases.get(release)
    if target is None:
        known = ", ".join(releases) or "none configured (UPGRADER_RELEASES)"
        raise Refused(f"release {release} is not known; known releases: {known}")
    return release, target


def refuse_non_empty(site: Installation, engine: Engine) -> None:
    """install never writes over existing data."""
    d = site.diagnose(engine)
    if d.state is State.DATABASE_UNAVAILABLE:
        raise Refused(f"the database cannot be reached: {'; '.join(d.details)}", EXIT_UNAVAILABLE)
    if d.state is State.UPGRADE_RUNNING:
        raise AlreadyRunning(busy_message(d))
    if d.state is not State.NOT_INSTALLED:
        raise Refused(
            f"this database is already installed ({d.state.value}); install never "
            f"writes over existing data. {d.fix}".strip()
        )
    data = foreign_tables(engine, site.settings)
    if data:
        raise Refused(
            f"this database already holds tables ({', '.join(data)}); install writes only "
            "into an empty database"
        )


def foreign_tables(engine: Engine, settings: Settings) -> list[str]:
    """Tables a fresh install would write over (upgrader's own and Alembic's do not count)."""
    if missing_sqlite_file(engine.url) is not None:
        return []
    tables = define_tables(settings.table_prefix)
    ours = {*(t.name for t in tables.all), settings.version_table}
    return sorted(set(inspect(engine).get_table_names()) - ours)
