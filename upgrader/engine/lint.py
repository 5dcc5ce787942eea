"""`upgrader lint`: each revision's SQL, rendered for a dialect through the application's
own env.py in Alembic's offline mode, then read by the rules of core/lint.py and, on
PostgreSQL, by squawk where it is installed (the `lint` extra).

One offline pass renders the chain; Alembic marks each revision's SQL with "-- Running
upgrade a -> b", which is where it is cut. A revision that cannot be rendered offline (it
reads data, or SQLite's batch mode reflects a table) is "not checked", with why, and the
pass goes on after it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import URL, make_url

from upgrader.core import lint, phases
from upgrader.core.lint import Finding
from upgrader.core.revisions import Revision, RevisionGraph
from upgrader.engine.migrate import OfflineSQLError, offline_sql
from upgrader.engine.site import Installation
from upgrader.settings import Settings

MARK = re.compile(r"^-- Running upgrade (.*) -> (\S+)\s*$", re.MULTILINE)

OFFLINE_URLS = {
    "postgresql": "postgresql://",
    "mysql": "mysql+pymysql://",
    "mariadb": "mariadb+pymysql://",
    "sqlite": "sqlite://",
}

SQUAWK = {
    "ban-drop-column": ("contract", "drop-column"),
    "ban-drop-table": ("contract", "drop-table"),
    "renaming-column": ("contract", "rename-column"),
    "renaming-table": ("contract", "rename-table"),
    "changing-column-type": ("contract", "change-type"),
    "adding-required-field": ("contract", "required-column"),
    "adding-not-nullable-field": ("contract", "set-not-null"),
    "disallowed-unique-constraint": ("contract", "add-unique"),
    "require-concurrent-index-creation": ("locking", "index-not-concurrent"),
    "require-concurrent-index-deletion": ("locking", None),
    "constraint-missing-not-valid": ("locking", "constraint-not-valid"),
    "adding-foreign-key-constraint": ("locking", "constraint-not-valid"),
    "adding-field-with-default": ("locking", "volatile-default"),
    "adding-serial-primary-key-field": ("locking", None),
    "ban-concurrent-index-creation-in-transaction": ("locking", None),
}
"""squawk's rules that say what upgrader's kinds say, and the rule of ours each covers.
The others (naming preferences, timeouts upgrader already sets) are left out."""


@dataclass
class RevisionLint:
    revision: str
    message: str
    declared: str  # the phase the file declares
    findings: list[Finding] = field(default_factory=list)
    not_checked: str | None = None

    @property
    def suggested(self) -> str:
        """What its findings call for; blocking when its SQL could not be read."""
        return "blocking" if self.not_checked else lint.suggested_phase(self.findings)

    @property
    def open(self) -> list[Finding]:
        """Findings not acknowledged."""
        return [f for f in self.findings if f.acknowledged is None]

    @property
    def unsafe_online(self) -> list[Finding]:
        """What makes it wrong to apply with the previous release serving."""
        return [f for f in self.open if f.kind in ("contract", "locking")]

    def to_dict(self) -> dict[str, Any]:
        return {
            "revision": self.revision,
            "message": self.message,
            "declared_phase": self.declared,
            "suggested_phase": self.suggested,
            "not_checked": self.not_checked,
            "findings": [f.to_dict() for f in self.findings],
            "unsafe_online": [f.to_dict() for f in self.unsafe_online],
        }


@dataclass
class LintReport:
    dialect: str
    revisions: list[RevisionLint]
    squawk: bool  # squawk's rules were applied (PostgreSQL, squawk installed)

    @property
    def clean(self) -> bool:
        return not any(r.open or r.not_checked for r in self.revisions)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dialect": self.dialect,
            "squawk": self.squawk,
            "clean": self.clean,
            "revisions": [r.to_dict() for r in self.revisions],
        }


def offline_url(settings: Settings, dialect: str | None) -> URL:
    """A URL of the dialect to render for (no database is reached): the one named, else the
    application's database's."""
    if dialect is None:
        dialect = make_url(settings.database_url or "sqlite://").get_backend_name()
    return make_url(OFFLINE_URLS.get(dialect, f"{dialect}://"))


def rendered(
    settings: Settings,
    url: URL,
    app: Any = None,
    span: tuple[str | None, str] = (None, "heads"),
    script: Any = None,
) -> dict[str, str | BaseException]:
    """Each revision's offline SQL (or why it cannot be rendered), after `span`'s start
    (from the base when None) up to its end."""
    out: dict[str, str | BaseException] = {}
    start, end = span
    while True:
        try:
            sql = offline_sql(settings, url, start, app, end, script)
        except OfflineSQLError as exc:
            pieces = _split(exc.partial)
            failed = list(pieces)[-1] if pieces else None
            if failed is None or failed == start:
                raise LintError(
                    "the application's env.py failed in Alembic's offline mode before any "
                    f"revision ({_cause(exc)}): lint renders the SQL through it, so it must "
                    "import as `alembic upgrade --sql` would (the application's packages "
                    "installed or on PYTHONPATH, its settings in the environment)"
                ) from exc
            out.update({k: v for k, v in pieces.items() if k != failed})
            out[failed] = exc.__cause__ or exc
            start = failed
            continue
        out.update(_split(sql))
        return out


class LintError(Exception):
    """The chain cannot be rendered at all: nothing could be checked."""


def _cause(exc: BaseException) -> str:
    cause = exc.__cause__ or exc
    return f"{type(cause).__name__}: {cause}"


def _split(sql: str) -> dict[str, str]:
    marks = list(MARK.finditer(sql))
    return {
        m.group(2): sql[m.end() : marks[i + 1].start() if i + 1 < len(marks) else len(sql)]
        for i, m in enumerate(marks)
    }


def lint_revisions(
    settings: Settings,
    graph: RevisionGraph,
    wanted: Sequence[str],
    dialect: str | None = None,
    app: Any = None,
    span: tuple[str | None, str] = (None, "heads"),
) -> LintReport:
    """The findings of the revisions `wanted` (in the chain's order); `span`: where to render
    from and to, when the wanted ones lie there (the whole chain by default)."""
    url = offline_url(settings, dialect)
    name = url.get_backend_name()
    sql = rendered(settings, url, app, span, graph.script)
    squawked = _squawk({r: s for r in wanted if isinstance(s := sql.get(r), str)}, name)
    reports = [_one(graph, r, sql.get(r), name, squawked) for r in wanted]
    return LintReport(name, reports, squawked is not None)


def lint_online(
    site: Installation, heads: Sequence[str], online: Sequence[Revision], dialect: str | None
) -> LintReport:
    """Pending revisions declared online, rendered from where the database stands (its one
    head) up to them: what `upgrade --online` checks, and `status` shows."""
    graph = site.code.graph
    assert graph is not None  # there are pending revisions
    targets = phases.targets(online)
    span = (heads[0] if len(heads) == 1 else None, targets[0] if len(targets) == 1 else "heads")
    wanted = [r.id for r in online]
    return lint_revisions(site.settings, graph, wanted, dialect, site.app(), span)


def _one(
    graph: RevisionGraph,
    revision: str,
    sql: str | BaseException | None,
    dialect: str,
    squawked: dict[str, list[Finding]] | None,
) -> RevisionLint:
    node = graph.revisions[revision]
    report = RevisionLint(revision, node.message, node.phase)
    if not isinstance(sql, str):
        why = f"{type(sql).__name__}: {sql}" if sql is not None else "no SQL was rendered"
        report.not_checked = f"not checked: it cannot be written out as SQL offline ({why})"
        return report
    found = lint.findings(revision, sql, dialect)
    if squawked is not None:
        theirs = squawked.get(revision, [])
        covered = {SQUAWK[f.rule][1] for f in theirs}
        found = [f for f in found if f.rule not in covered] + theirs
    report.findings = lint.acknowledge(found, _acknowledged(graph, revision))
    return report


def _acknowledged(graph: RevisionGraph, revision: str) -> dict[str, str]:
    """`upgrader_safe = {"rule": "why"}` in the revision's file."""
    script = graph.script.get_revision(revision) if graph.script is not None else None
    safe = getattr(getattr(script, "module", None), "upgrader_safe", None)
    return {str(k): str(v) for k, v in safe.items()} if isinstance(safe, dict) else {}


def squawk_path() -> str | None:
    beside = Path(sys.executable).parent / "squawk"
    return str(beside) if beside.exists() else shutil.which("squawk")


def _squawk(sql: dict[str, str], dialect: str) -> dict[str, list[Finding]] | None:
    """squawk's findings per revision (one squawk process for all); None when it does not
    apply (not PostgreSQL) or is not installed."""
    tool = squawk_path()
    if dialect != "postgresql" or tool is None or not sql:
        return None
    with tempfile.TemporaryDirectory(prefix="upgrader-lint-") as tmp:
        files = {}
        for i, (revision, text) in enumerate(sql.items()):
            path = Path(tmp) / f"{i:05d}.sql"
            path.write_text(text)
            files[str(path)] = (revision, text.splitlines())
        done = subprocess.run(
            [tool, "--reporter", "json", "--no-error-on-unmatched-pattern", *files],
            capture_output=True,
            text=True,
            timeout=300,
        )
    found: dict[str, list[Finding]] = {}
    seen: set[tuple[str, str, str]] = set()
    for item in json.loads(done.stdout or "[]"):
        mapped = SQUAWK.get(item.get("rule_name", ""))
        if mapped is None or item.get("file") not in files:
            continue
        revision, lines = files[item["file"]]
        statement = " ".join(lines[item["line"] : item.get("line_end", item["line"]) + 1])
        once = (revision, statement, mapped[1] or item["rule_name"])
        if once in seen:
            continue  # two of squawk's rules saying one thing (a foreign key, not valid)
        seen.add(once)
        ours = lint.RULES.get(mapped[1] or "")
        found.setdefault(revision, []).append(
            Finding(
                revision,
                item["rule_name"],
                mapped[0],
                " ".join(statement.split()),
                item.get("message") or (ours.why if ours else ""),
                ours.safe if ours else item.get("help") or "",  # ours says what to do instead
                source="squawk",
            )
        )
    return found
