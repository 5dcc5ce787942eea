"""The checks page before a run, and the checks after it: what an administrator is shown
of the database, the backup and the time it should take, and whether the upgraded site
answers (what the WHMCS guide asks to check by hand)."""

from __future__ import annotations

from pathlib import Path

from flask import render_template, request
from sqlalchemy.exc import SQLAlchemyError

from upgrader.core.diagnosis import Diagnosis
from upgrader.core.tables import define_tables
from upgrader.engine.backup import estimated_size
from upgrader.support import report
from upgrader.wizard.context import installer


def render_checks(d: Diagnosis, fresh: bool, problems: list[str], error: str | None = None) -> str:
    it = installer()
    engine, settings = it.cache.engine, it.settings
    size = estimated_size(engine)
    try:
        with engine.connect() as conn:
            tables = define_tables(settings.table_prefix)
            guess = report.estimate(conn, tables, len(d.pending_revisions), size)
    except SQLAlchemyError:
        guess = {"size_bytes": size, "seconds": None, "steps_seen": 0, "backups_seen": 0}
    notes = report.release_notes(
        it.directory / "release-notes.json", d.schema_version, d.code_version
    )
    return render_template(
        "wizard/checks.html",
        d=d,
        fresh=fresh,
        problems=problems,
        error=error,
        database=report.database_info(engine),
        backup_dir=str(Path(settings.backup_dir).resolve()),
        estimate=guess,
        notes=notes,
    )


def verify(d: Diagnosis) -> list[tuple[bool, str]]:
    """What the WHMCS guide asks an administrator to check by hand after an upgrade."""
    found = [
        (d.state.settled, f"upgrader's diagnosis: {d.state.value}"),
        (
            d.schema_version == d.code_version,
            f"the database is at version {d.schema_version}, the code is {d.code_version}",
        ),
    ]
    home = installer().home
    if home is not None:
        status = home(request.environ)
        found.append((status[:1] in "23", f"the site's home page answers: {status}"))
    return found
