"""What a revision's SQL does to the release still running: each statement classified.

A revision applied with the site up (`upgrader_phase = "online"`) runs while every node
still serves the previous release. Its statements are read, not trusted:

- *contract*: breaks the previous release (a table or column it reads goes or is renamed,
  a type changes under it, a column becomes required that it does not fill, a constraint
  narrows what it may write);
- *locking*: a rewrite or a long lock on that database (an index built without
  CONCURRENTLY, a constraint validated in the same step, a volatile default on PostgreSQL;
  an ALTER that MariaDB/MySQL can only do by copying the table);
- *data*: a backfill inside the migration's transaction.

Statements are parsed with sqlglot (for every dialect); on PostgreSQL, squawk's rules are
added where squawk is installed (engine/lint.py). A revision acknowledges a finding with
`upgrader_safe = {"rule": "why"}`: it is then shown as acknowledged, with the reason.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, replace

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError

KINDS = ("contract", "locking", "data")
"""What a finding may be; `expand` (backward-compatible) is what has none."""

DIALECTS = {"postgresql": "postgres", "mysql": "mysql", "mariadb": "mysql", "sqlite": "sqlite"}
"""upgrader's dialect names, as sqlglot reads them."""


@dataclass(frozen=True)
class Rule:
    name: str
    kind: str  # contract | locking | data
    why: str
    safe: str


@dataclass(frozen=True)
class Finding:
    revision: str
    rule: str
    kind: str
    statement: str
    why: str
    safe: str
    source: str = "upgrader"  # or "squawk"
    acknowledged: str | None = None  # the revision's reason, from `upgrader_safe`

    def to_dict(self) -> dict[str, str | None]:
        return {
            "revision": self.revision,
            "rule": self.rule,
            "kind": self.kind,
            "statement": self.statement,
            "why": self.why,
            "safe": self.safe,
            "source": self.source,
            "acknowledged": self.acknowledged,
        }


def _rules(*rules: Rule) -> dict[str, Rule]:
    return {r.name: r for r in rules}


RULES = _rules(
    Rule(
        "drop-table",
        "contract",
        "the previous release still reads and writes this table",
        "stop using the table in one release; drop it in a post-deploy revision of the next",
    ),
    Rule(
        "drop-column",
        "contract",
        "the previous release still selects and inserts this column",
        "stop using the column first (SQLAlchemy: deferred, then removed from the model); "
        "drop it in a post-deploy revision",
    ),
    Rule(
        "rename-table",
        "contract",
        "the previous release still uses the old name",
        "create the new table (or a view under the old name), write to both, move readers, "
        "then drop the old one post-deploy",
    ),
    Rule(
        "rename-column",
        "contract",
        "the previous release still uses the old name",
        "add the new column, write to both, backfill in batches, move readers, drop the old "
        "column post-deploy",
    ),
    Rule(
        "change-type",
        "contract",
        "the previous release reads and writes the old type; on PostgreSQL and MariaDB most "
        "type changes also rewrite the table under a lock",
        "add a column of the new type, backfill it in batches, switch readers, drop the old "
        "one post-deploy",
    ),
    Rule(
        "required-column",
        "contract",
        "NOT NULL without a default: every insert of the previous release fails",
        "add the column nullable (or with a default) now, backfill in batches, add NOT NULL "
        "in a post-deploy revision",
    ),
    Rule(
        "set-not-null",
        "contract",
        "inserts of the previous release that leave the column empty fail; PostgreSQL scans "
        "the whole table under an exclusive lock to check it",
        "backfill first; on PostgreSQL add CHECK (col IS NOT NULL) NOT VALID, VALIDATE it, "
        "then SET NOT NULL; do it post-deploy",
    ),
    Rule(
        "add-unique",
        "contract",
        "narrows what the previous release may write: its duplicate inserts fail; building "
        "the index locks the table against writes",
        "create the unique index CONCURRENTLY (PostgreSQL) in its own revision, once the "
        "code no longer writes duplicates",
    ),
    Rule(
        "index-not-concurrent",
        "locking",
        "CREATE INDEX without CONCURRENTLY blocks every write to the table while it builds",
        "CREATE INDEX CONCURRENTLY (op.create_index(..., postgresql_concurrently=True)) in a "
        "revision of its own, outside a transaction (with op.get_context().autocommit_block())",
    ),
    Rule(
        "constraint-not-valid",
        "locking",
        "adding a foreign key or check constraint validates every row under a lock that "
        "blocks writes (both tables, for a foreign key)",
        "add it NOT VALID (postgresql_not_valid=True), then VALIDATE CONSTRAINT in a later "
        "revision: validation takes a weaker lock",
    ),
    Rule(
        "volatile-default",
        "locking",
        "a volatile default (random(), gen_random_uuid(), clock_timestamp()…) makes "
        "PostgreSQL rewrite the whole table under an exclusive lock",
        "add the column without a default, set the default afterwards, backfill in batches",
    ),
    Rule(
        "copy-alter",
        "locking",
        "MariaDB/MySQL can only do this ALTER by copying the table (ALGORITHM=COPY): writes "
        "block for the length of the copy",
        "add a new column and backfill instead, or run the change in a maintenance window "
        "(a blocking revision)",
    ),
    Rule(
        "table-rebuild",
        "locking",
        "SQLite cannot alter this in place: Alembic's batch mode copies the table into a "
        "new one, and the database is locked for writes while it does",
        "run it as a blocking revision: on SQLite every write waits for it anyway",
    ),
    Rule(
        "backfill",
        "data",
        "rewriting rows inside the migration's transaction holds their locks until it "
        "commits, and the previous release may write them meanwhile",
        "backfill in batches outside the schema change (a post-deploy revision or a job), "
        "with the code already writing the new shape",
    ),
)

VOLATILE = {"random", "gen_random_uuid", "uuid_generate_v4", "clock_timestamp", "nextval",
            "timeofday", "uuid"}  # fmt: skip
"""PostgreSQL functions whose default forces a rewrite (stable ones like now() do not)."""

OWN_TABLES = ("alembic_version", "upgrader_")

_OWN_STATEMENT = re.compile(
    r"(UPDATE|INSERT INTO|DELETE FROM)\s+[`\"]?(alembic_version|upgrader_)", re.IGNORECASE
)


def findings(revision: str, sql: str, dialect: str) -> list[Finding]:
    """Every finding of our own rules in one revision's SQL, in statement order."""
    read = DIALECTS.get(dialect, dialect)
    found: list[Finding] = []
    statements = list(_statements(sql, read))
    rebuilt = _rebuilt_tables(statements) if dialect == "sqlite" else set()
    for text, tree in statements:
        rules = _data(text) if tree is _DATA else _classify(tree, dialect, rebuilt)
        for rule in rules:
            r = RULES[rule]
            found.append(Finding(revision, rule, r.kind, text, r.why, r.safe))
    return found


def acknowledge(found: list[Finding], safe: dict[str, str]) -> list[Finding]:
    """Findings a revision acknowledged (`upgrader_safe = {"rule": "why"}`) keep showing,
    with the reason."""
    return [replace(f, acknowledged=safe[f.rule]) if f.rule in safe else f for f in found]


def suggested_phase(found: list[Finding]) -> str:
    """The phase a revision's findings call for: online when it only expands."""
    kinds = {f.kind for f in found if f.acknowledged is None}
    if "locking" in kinds:
        return "blocking"
    if kinds:
        return "post-deploy"
    return "online"


def _statements(sql: str, read: str) -> Iterator[tuple[str, exp.Expr | None]]:
    """(text, tree) per statement; the tree is None where sqlglot cannot parse it, and
    _DATA for a row-changing statement (its verb and table are its first words: no parse)."""
    for chunk in sql.split(";\n"):
        text = "\n".join(
            line for line in chunk.splitlines() if line.strip() and not line.startswith("--")
        ).strip()
        if not text or text.upper() in ("BEGIN", "COMMIT", "START TRANSACTION"):
            continue
        if _OWN_STATEMENT.match(text):
            continue  # Alembic's version table moving: one per revision, not worth a parse
        if _DML.match(text):
            yield " ".join(text.split()), _DATA
            continue
        try:
            tree = sqlglot.parse_one(text, read=read)
        except ParseError:
            tree = None
        if tree is not None and _own(tree):
            continue
        yield " ".join(text.split()), tree


_DATA = exp.Expr()
"""Marks a statement that changes rows (UPDATE, DELETE, INSERT)."""

_DML = re.compile(r"(UPDATE|DELETE\s+FROM|INSERT\s+INTO)\s+[`\"]?(\w+)", re.IGNORECASE)


def _data(text: str) -> Iterator[str]:
    """A backfill: rows rewritten, deleted or copied (an INSERT of literal values is not:
    seed rows are expand), except a batch rebuild's copy into `_alembic_tmp_`."""
    match = _DML.match(text)
    assert match is not None
    if match.group(2).lower().startswith("_alembic_tmp_"):
        return
    if match.group(1).upper().startswith("INSERT") and not _SELECT.search(text):
        return
    yield "backfill"


_SELECT = re.compile(r"\bSELECT\b", re.IGNORECASE)


def _own(tree: exp.Expr) -> bool:
    """Alembic's version table and upgrader's own: not the application's schema."""
    table = tree.find(exp.Table)
    return table is not None and table.name.lower().startswith(OWN_TABLES)


def _classify(tree: exp.Expr | None, dialect: str, rebuilt: set[str]) -> Iterator[str]:
    if isinstance(tree, exp.Drop) and (tree.args.get("kind") or "").upper() == "TABLE":
        name = tree.find(exp.Table)
        if name is None or name.name not in rebuilt:
            yield "drop-table"
    elif isinstance(tree, exp.Alter):
        yield from _alter(tree, dialect)
    elif isinstance(tree, exp.Create):
        yield from _create(tree, dialect)
    elif isinstance(tree, exp.Command):
        yield from _command(tree, dialect)


def _alter(tree: exp.Alter, dialect: str) -> Iterator[str]:
    table = tree.find(exp.Table)
    if table is not None and table.name.startswith("_alembic_tmp_"):
        return  # the end of a batch rebuild: reported once, as table-rebuild
    for action in tree.args.get("actions") or ():
        simple = _ACTIONS.get(type(action))
        if isinstance(action, exp.Drop) and (action.args.get("kind") or "COLUMN") != "COLUMN":
            continue  # a constraint or a foreign key dropped: it allows more, not less
        if simple is not None:
            yield simple
        elif isinstance(action, exp.AlterColumn):
            yield from _alter_column(action)
        elif isinstance(action, exp.ModifyColumn):
            yield "rename-column" if action.args.get("rename_from") else "change-type"
            if dialect != "sqlite":
                yield "copy-alter"
        elif isinstance(action, exp.ColumnDef):
            yield from _add_column(action, dialect)
        elif isinstance(action, exp.AddConstraint):
            yield from _add_constraint(action, tree, dialect)


_ACTIONS: dict[type, str] = {
    exp.Drop: "drop-column",
    exp.RenameColumn: "rename-column",
    exp.AlterRename: "rename-table",
}


def _alter_column(action: exp.AlterColumn) -> Iterator[str]:
    if action.args.get("dtype") is not None:
        yield "change-type"
    if action.args.get("allow_null") is False:
        yield "set-not-null"


def _add_column(column: exp.ColumnDef, dialect: str) -> Iterator[str]:
    kinds = [c.args.get("kind") for c in column.args.get("constraints") or ()]
    default = next((k for k in kinds if isinstance(k, exp.DefaultColumnConstraint)), None)
    required = any(isinstance(k, exp.NotNullColumnConstraint) and not k.args.get("allow_null")
                   for k in kinds)  # fmt: skip
    if required and default is None:
        yield "required-column"
    if default is not None and dialect == "postgresql" and _volatile(default):
        yield "volatile-default"


def _volatile(default: exp.Expr) -> bool:
    if default.find(exp.Uuid, exp.Rand) is not None:
        return True
    names = {f.name.lower() for f in default.find_all(exp.Anonymous)}
    names |= {f.sql_name().lower() for f in default.find_all(exp.Func)}
    return bool(names & VOLATILE)


def _add_constraint(action: exp.AddConstraint, tree: exp.Alter, dialect: str) -> Iterator[str]:
    if action.find(exp.UniqueColumnConstraint, exp.PrimaryKey) is not None:
        yield "add-unique"
    checks = action.find(exp.ForeignKey, exp.CheckColumnConstraint)
    if checks is not None and dialect == "postgresql" and not tree.args.get("not_valid"):
        yield "constraint-not-valid"


def _create(tree: exp.Create, dialect: str) -> Iterator[str]:
    kind = (tree.args.get("kind") or "").upper()
    table = tree.find(exp.Table)
    if kind == "TABLE" and table is not None and table.name.startswith("_alembic_tmp_"):
        yield "table-rebuild"
    if kind != "INDEX":
        return
    if tree.args.get("unique"):
        yield "add-unique"
    elif dialect == "postgresql" and not tree.args.get("concurrently"):
        yield "index-not-concurrent"


def _command(tree: exp.Command, dialect: str) -> Iterator[str]:
    """What sqlglot leaves unparsed: MariaDB's FULLTEXT/SPATIAL indexes need a copy."""
    text = f"{tree.this} {tree.expression}".upper()
    if dialect in ("mysql", "mariadb") and any(k in text for k in ("FULLTEXT", "SPATIAL")):
        yield "copy-alter"


def _rebuilt_tables(statements: list[tuple[str, exp.Expr | None]]) -> set[str]:
    """Tables Alembic's batch mode rebuilds on SQLite (CREATE _alembic_tmp_x, copy, DROP
    x, rename): their DROP is part of the rebuild, not the end of the table."""
    return {
        tree.find(exp.Table).name.removeprefix("_alembic_tmp_")  # type: ignore[union-attr]
        for _, tree in statements
        if isinstance(tree, exp.Create)
        and tree.find(exp.Table) is not None
        and tree.find(exp.Table).name.startswith("_alembic_tmp_")  # type: ignore[union-attr]
    }
