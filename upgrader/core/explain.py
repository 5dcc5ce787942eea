"""The words of a decision: for each way core/decide.py decides, the fix an administrator
follows and the details support staff read. The decision reads without them, and they
change without touching it.

Every command in a fix is one that works when pasted: `cli` is the prefix that reaches
this application from anywhere on the server (Settings.cli). The runs' words are in
core/recovery.py, the rollout's in core/rollout.py.
"""

from __future__ import annotations

from upgrader.core import recovery, rollout
from upgrader.core.decide import Context, Finding, Why, clean_backup
from upgrader.core.records import Run
from upgrader.core.states import State
from upgrader.core.times import iso
from upgrader.core.versions import parse_version
from upgrader.core.wording import Explainer, Text, Words, cap, revisions_of
from upgrader.i18n import N_

MISSING_DATABASE = N_("This site cannot find its database. An administrator needs to look at it.")


def explain(found: Finding, c: Context, words: Words) -> Text:
    """The fix and details of a finding (maintenance: of the state beneath it too)."""
    text = EXPLAIN[found.why](found, c, words)
    if found.state is State.MAINTENANCE:
        text = _maintenance(text, c, words)
    details = tuple(d for d in (*text.details, *c.db.problems) if d)
    return Text(text.fix, details, text.summary)


def _maintenance(beneath: Text, c: Context, words: Words) -> Text:
    assert c.single is not None
    m = c.single.maintenance
    until = f" until {iso(m.until)}" if m.until else ""
    return Text(
        f"Switch it off with `{words.cli} maintenance off` when the work is done.",
        (*beneath.details, f"maintenance switched on by {m.set_by or 'unknown'}{until}"),
        m.message or None,
    )


def _unreachable(f: Finding, c: Context, w: Words) -> Text:
    return Text(
        "Check that the database server is running and reachable with the configured "
        f"URL, then run `{w.cli} status` again.",
        (f"connecting failed: {c.db.error}",),
    )


def _code_unreadable(f: Finding, c: Context, w: Words) -> Text:
    return Text(
        "Point UPGRADER_MIGRATIONS at the application's Alembic directory, or redeploy "
        "the release completely: its migrations are missing or broken.",
        (f"the code's migrations cannot be read: {c.code.error}",),
    )


def _no_revisions(f: Finding, c: Context, w: Words) -> Text:
    return Text(
        "Point UPGRADER_MIGRATIONS at the application's Alembic directory; if it is the "
        "right one, the release is missing its migrations (versions/ is empty).",
        ("the code's migrations directory holds no revisions",),
    )


def _split(f: Finding, c: Context, w: Words) -> Text:
    splits = c.graph.splits
    listed = "; ".join(" and ".join(heads) for heads in splits)
    first = " ".join(splits[0])
    return Text(
        "This release is broken: its migrations split one branch in two, and Alembic "
        "cannot tell which comes first. Do not upgrade with it: keep the previous release, "
        "and have the application's developer merge the heads (`alembic merge -m merge "
        f"{first}`, or `flask db merge {first}`) and ship a fixed release.",
        (f"the code's migrations split one branch without a branch label: heads {listed}",),
    )


def _bad_code_version(f: Finding, c: Context, w: Words) -> Text:
    return Text(
        "Set the application's version (UPGRADER_CODE_VERSION) to its release number, "
        "for example 2.0.1.",
        (f"the code's version {c.code.version.error}",),
    )


def _tables_unreadable(f: Finding, c: Context, w: Words) -> Text:
    return Text(
        "upgrader's own tables are damaged: restore them from the last backup, or send the "
        f"output of `{w.cli} doctor` to support.",
        (f"the database answers, but upgrader's tables cannot be read: {c.db.unreadable}",),
    )


def _missing_file(f: Finding, c: Context, w: Words) -> Text:
    missing = c.db.missing_file
    install = w.finish("install")
    return Text(
        f"If this site was installed before, its database file is missing: put it back "
        f"at {missing} (or mount its volume), and nothing else is needed. If this "
        f"is a new installation, {install}: it creates the file.",
        (f"the database file {missing} does not exist",),
        MISSING_DATABASE,
    )


def _foreign_tables(f: Finding, c: Context, w: Words) -> Text:
    foreign = [t for t in c.db.tables if t != "alembic_version"]
    shown = ", ".join(foreign[:8]) + (" …" if len(foreign) > 8 else "")
    return Text(
        "This database already holds tables that no migration recorded. Check that "
        "UPGRADER_DATABASE_URL names this application's database; if it does, the "
        "tables predate Alembic: bring them under Alembic (`"
        f"{w.cli} stamp REVISION` with the matching revision), then run `{w.cli} adopt`.",
        (
            f"the database holds {len(foreign)} table(s) ({shown}) but no version information",
            "alembic_version exists but is empty" if c.db.has_version_table else "",
        ),
    )


def _empty(f: Finding, c: Context, w: Words) -> Text:
    return Text(cap(w.finish("install")) + ".", ("the database is empty",))


def _overlapping(f: Finding, c: Context, w: Words) -> Text:
    pairs = "; ".join(f"{a} is an ancestor of {b}" for a, b in f.overlapping)
    keep = sorted({b for _, b in f.overlapping} - {a for a, _ in f.overlapping})
    return Text(
        f"Check which revision the schema really has; if it is {', '.join(keep)}, keep "
        f"only that row in alembic_version (`{w.cli} stamp --purge {' '.join(keep)}`), then "
        f"run `{w.cli} status` again.",
        (f"alembic_version holds overlapping revisions ({revisions_of(c)}): {pairs}",),
    )


def _harmful(f: Finding, c: Context, w: Words) -> Text:
    guard = c.code.guard_tables
    names = ", ".join(sorted(set().union(*(r.changes(guard) for r in f.harmful))))
    files = "; ".join(f"{r.id} ({r.path})" for r in f.harmful)
    return Text(
        "Do not upgrade with this release: it would delete upgrader's state and journal. "
        "Keep running the previous release, and tell the application's developer: their "
        f"revision(s) {files} drop or alter {names}, which autogenerate writes when env.py "
        "lacks upgrader's filter; they must remove those operations, add `include_name` from "
        "upgrader.alembic to env.py (docs/embedding.md), and ship a fixed release.",
        (
            f"pending revision(s) {', '.join(r.id for r in f.harmful)} would drop or alter "
            f"upgrader's own tables ({names})",
        ),
    )


ADOPT = "the database is managed by Alembic but has no upgrader state yet"


def _unadopted_unknown(f: Finding, c: Context, w: Words) -> Text:
    return Text(
        "Deploy the release that created this database, or check that "
        "UPGRADER_DATABASE_URL names this application's database.",
        (ADOPT, f"revision(s) {', '.join(f.unknown)} are not part of this code"),
    )


def _unadopted_pending(f: Finding, c: Context, w: Words) -> Text:
    count = len(c.pending)
    return Text(
        f"{cap(w.upgrade)}: it adopts the database and applies {count} revision(s).",
        (ADOPT, f"{count} revision(s) pending from {revisions_of(c)}", _early(f.stopped_early)),
    )


def _unadopted(f: Finding, c: Context, w: Words) -> Text:
    return Text(
        f"Run `{w.cli} adopt` once: it records version {c.code.version.raw} for this "
        "database and changes nothing in its schema, which already matches the code.",
        (ADOPT,),
    )


def _several_rows(f: Finding, c: Context, w: Words) -> Text:
    states = c.db.states
    listed = "; ".join(f"id {s.id}: {s.schema_version!r}" for s in states)
    return Text(
        f"Run `{w.cli} adopt --version {_release_for(c) or 'VERSION'}` with the release the "
        "database was last upgraded to: it keeps one state row.",
        (f"upgrader's state table holds {len(states)} rows ({listed}); it must hold one",),
    )


def _bad_stored_version(f: Finding, c: Context, w: Words) -> Text:
    assert c.stored is not None
    return Text(
        f"Run `{w.cli} adopt --version {_release_for(c) or 'VERSION'}` with the release the "
        f"database was last upgraded to (its revisions are {revisions_of(c)}).",
        (f"the stored schema version {c.stored.error}",),
    )


def _no_version_table(f: Finding, c: Context, w: Words) -> Text:
    assert c.stored is not None
    stored = c.stored.raw
    what = "is empty" if c.db.has_version_table else "is missing"
    release_rev = c.code.releases.get(stored)
    named = f" (the revision of release {stored})" if release_rev else ""
    return Text(
        "Restore the backup taken before the last upgrade; or, if the application's tables "
        f"are intact, record their revision with `{w.cli} stamp {release_rev or 'REVISION'}`"
        f"{named}.",
        (f"upgrader's state says version {stored}, but alembic_version {what}",),
    )


def _release_for(c: Context) -> str | None:
    """The newest release whose schema is exactly these revisions, when releases are known."""
    if len(c.db.revisions) != 1:
        return None
    matches = [v for v, rev in c.code.releases.items() if rev == c.db.revisions[0]]
    parsed = [(p.version, p.raw) for p in map(parse_version, matches) if p.version is not None]
    return max(parsed)[1] if parsed else None


def _upgrade_stop(f: Finding, c: Context, w: Words) -> Text:
    assert c.stored is not None
    stored, version = c.stored.raw, c.code.version.raw
    floor = f.floor
    if floor is not None:
        public = floor.public
        series = ".".join(str(p) for p in public.release[:2]) + ".x" if public else floor.raw
        return Text(
            f"This release upgrades databases from {floor.raw} on; this database is at "
            f"{stored}. Upgrade it with release {series} first (deploy it, upgrade, check the "
            f"site), then deploy {version} again and upgrade. Nothing was changed.",
            (
                f"the database is at {stored}, older than {floor.raw}, the oldest release "
                f"{version} upgrades from",
            ),
        )
    dropped = ", ".join(f.dropped)
    return Text(
        f"This release no longer carries the migrations of {dropped} (its chain starts "
        "later). Upgrade the database with a release that still has them first, then deploy "
        f"{version} again and upgrade. Nothing was changed.",
        (
            f"the database holds revision(s) {', '.join(f.unknown)} of release(s) {dropped}, "
            "which this release's chain no longer has",
        ),
    )


def _deploy_stored(c: Context) -> str:
    assert c.stored is not None
    stored = c.stored.raw
    return (
        f"Deploy version {stored} of the application (or later), or restore the backup "
        f"taken before the database was upgraded to {stored}."
    )


def _newer_revisions(f: Finding, c: Context, w: Words) -> Text:
    assert c.stored is not None
    return Text(
        _deploy_stored(c),
        (
            f"the database was upgraded to {c.stored.raw}; this code is {c.code.version.raw}",
            f"revision(s) {', '.join(f.unknown)} come from a newer release",
        ),
    )


def _unknown_revisions(f: Finding, c: Context, w: Words) -> Text:
    assert c.stored is not None
    stored, version, unknown = c.stored.raw, c.code.version.raw, ", ".join(f.unknown)
    clean = clean_backup_of(c)
    back = (
        f"restore the backup {clean} (`{w.cli} restore {clean} --yes`)"
        if clean
        else "restore a backup from before it was applied"
    )
    return Text(
        f"This code ({version}) does not have revision(s) {unknown}, which the database (at "
        f"{stored}) holds. If this release no longer carries the migrations of {stored} (its "
        "chain was squashed), upgrade the database with an intermediate release first, then "
        "deploy this one; the application's developer can say so with UPGRADER_UPGRADE_FROM "
        f"and UPGRADER_RELEASES. If no release has them, deploy the code they belong to, or "
        f"{back}.",
        (
            f"revision(s) {unknown} are not part of this code, yet the stored version {stored} "
            f"is not newer than the code ({version})",
        ),
    )


def clean_backup_of(c: Context) -> str | None:
    runs = c.db.recent_runs
    return clean_backup(runs) or next((r.backup_path for r in runs if r.backup_path), None)


def _newer_version(f: Finding, c: Context, w: Words) -> Text:
    assert c.stored is not None
    return Text(
        _deploy_stored(c),
        (
            f"the database was upgraded to {c.stored.raw}; this code is {c.code.version.raw} "
            "(the schema revisions agree)",
        ),
    )


def _contradiction(f: Finding, c: Context, w: Words) -> Text:
    assert c.stored is not None
    stored = c.stored.raw
    return Text(
        f"Deploy version {stored} of the application and check its migrations, or restore "
        "a backup.",
        (
            f"the stored version {stored} is newer than the code ({c.code.version.raw}), yet "
            f"the database lacks {len(c.pending)} of the code's revisions",
        ),
    )


def _pending(f: Finding, c: Context, w: Words) -> Text:
    assert c.stored is not None
    stored, version = c.stored.raw, c.code.version.raw
    versions = (
        f"version {stored} to {version}"
        if c.ordering
        else f"at version {stored} (the code's version was not raised)"
    )
    return Text(
        f"{cap(w.upgrade)}.",
        (f"{versions}: {len(c.pending)} revision(s) pending", _early(f.stopped_early)),
    )


def _early(run: Run | None) -> str:
    """Why the last attempt left the upgrade pending, without calling it a failure."""
    if run is None:
        return ""
    if run.status == "failed":
        return f"the last attempt (run #{run.id}) changed nothing: {run.error or 'no error'}"
    return f"the last attempt (run #{run.id}) stopped before migrating anything"


def _up_to_date(f: Finding, c: Context, w: Words) -> Text:
    notes: list[str] = []
    if f.never_closed is not None:
        notes.append(
            f"run #{f.never_closed.id} never closed, but the database already matches the "
            f"code; `{w.cli} history` shows it"
        )
    outside = f.outside_change
    if outside:
        notes.append(
            f"the schema was changed outside upgrader (revision {outside[0]} to {outside[1]}, "
            "with no backup and no journal entry)"
        )
    record = f.version_to_record
    if record:
        assert c.stored is not None
        notes.append(
            f"release {record} adds no migrations: version {c.stored.raw} is to be recorded "
            f"as {record}"
            if not outside
            else f"version {c.stored.raw} is to be recorded as {record}"
        )
    return Text("", tuple(notes))


EXPLAIN: dict[Why, Explainer] = {
    Why.UNREACHABLE: _unreachable,
    Why.BUSY: recovery.busy,
    Why.CODE_UNREADABLE: _code_unreadable,
    Why.NO_REVISIONS: _no_revisions,
    Why.SPLIT: _split,
    Why.BAD_CODE_VERSION: _bad_code_version,
    Why.TABLES_UNREADABLE: _tables_unreadable,
    Why.RUNNING: recovery.running,
    Why.MISSING_FILE: _missing_file,
    Why.FOREIGN_TABLES: _foreign_tables,
    Why.EMPTY: _empty,
    Why.OVERLAPPING: _overlapping,
    Why.HARMFUL: _harmful,
    Why.CUT_OFF: recovery.cut_off,
    Why.UNADOPTED_UNKNOWN: _unadopted_unknown,
    Why.UNADOPTED_PENDING: _unadopted_pending,
    Why.UNADOPTED: _unadopted,
    Why.SEVERAL_ROWS: _several_rows,
    Why.BAD_STORED_VERSION: _bad_stored_version,
    Why.NO_VERSION_TABLE: _no_version_table,
    Why.UPGRADE_STOP: _upgrade_stop,
    Why.COMPATIBLE: rollout.compatible,
    Why.NEWER_REVISIONS: _newer_revisions,
    Why.UNKNOWN_REVISIONS: _unknown_revisions,
    Why.NEWER_VERSION: _newer_version,
    Why.CONTRADICTION: _contradiction,
    Why.ONLINE: rollout.online,
    Why.POST_DEPLOY: rollout.post_deploy,
    Why.PENDING: _pending,
    Why.UP_TO_DATE: _up_to_date,
}
"""One explanation per way of deciding (a test checks that none is missing)."""
