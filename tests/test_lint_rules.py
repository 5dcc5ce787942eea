"""The catalogue: for each rule, a statement that triggers it and its safe twin that does
not, on each dialect the rule concerns, asserted finding by finding (core/lint.py).
The statements are as Alembic's offline mode writes them."""

from __future__ import annotations

import pytest

from upgrader.core.lint import RULES, acknowledge, findings, suggested_phase

# (rule, dialect, triggering SQL, safe twin)
CATALOGUE = [
    ("drop-table", "postgresql", "DROP TABLE loans;", "CREATE TABLE loans2 (id INTEGER);"),
    ("drop-table", "mysql", "DROP TABLE loans;", "CREATE TABLE loans2 (id INTEGER);"),
    (
        "drop-column",
        "postgresql",
        "ALTER TABLE books DROP COLUMN isbn;",
        "ALTER TABLE books ADD COLUMN isbn13 VARCHAR(13);",
    ),
    (
        "drop-column",
        "mysql",
        "ALTER TABLE books DROP COLUMN isbn;",
        "ALTER TABLE books ADD COLUMN isbn13 VARCHAR(13);",
    ),
    (
        "drop-column",
        "sqlite",
        "ALTER TABLE books DROP COLUMN isbn;",
        "ALTER TABLE books ADD COLUMN isbn13 VARCHAR(13);",
    ),
    (
        "rename-column",
        "postgresql",
        "ALTER TABLE books RENAME COLUMN title TO name;",
        "ALTER TABLE books ADD COLUMN name VARCHAR(200);",
    ),
    (
        "rename-column",
        "mysql",
        "ALTER TABLE books CHANGE title name VARCHAR(200) NULL;",
        "ALTER TABLE books ADD COLUMN name VARCHAR(200) NULL;",
    ),
    (
        "rename-table",
        "postgresql",
        "ALTER TABLE books RENAME TO titles;",
        "CREATE TABLE titles (id INTEGER NOT NULL, PRIMARY KEY (id));",
    ),
    (
        "rename-table",
        "sqlite",
        "ALTER TABLE books RENAME TO titles;",
        "CREATE TABLE titles (id INTEGER NOT NULL, PRIMARY KEY (id));",
    ),
    (
        "change-type",
        "postgresql",
        "ALTER TABLE books ALTER COLUMN year TYPE BIGINT;",
        "ALTER TABLE books ADD COLUMN year_big BIGINT;",
    ),
    (
        "change-type",
        "mysql",
        "ALTER TABLE books MODIFY year BIGINT NULL;",
        "ALTER TABLE books ADD COLUMN year_big BIGINT NULL;",
    ),
    (
        "required-column",
        "postgresql",
        "ALTER TABLE books ADD COLUMN pages INTEGER NOT NULL;",
        "ALTER TABLE books ADD COLUMN pages INTEGER DEFAULT 0 NOT NULL;",
    ),
    (
        "required-column",
        "mysql",
        "ALTER TABLE books ADD COLUMN pages INTEGER NOT NULL;",
        "ALTER TABLE books ADD COLUMN pages INTEGER NULL;",
    ),
    (
        "required-column",
        "sqlite",
        "ALTER TABLE books ADD COLUMN pages INTEGER NOT NULL;",
        "ALTER TABLE books ADD COLUMN pages INTEGER;",
    ),
    (
        "set-not-null",
        "postgresql",
        "ALTER TABLE books ALTER COLUMN isbn SET NOT NULL;",
        "ALTER TABLE books ALTER COLUMN isbn DROP NOT NULL;",
    ),
    (
        "add-unique",
        "postgresql",
        "CREATE UNIQUE INDEX ux_isbn ON books (isbn);",
        "CREATE INDEX CONCURRENTLY ix_isbn ON books (isbn);",
    ),
    (
        "add-unique",
        "mysql",
        "ALTER TABLE books ADD CONSTRAINT uq_isbn UNIQUE (isbn);",
        "CREATE INDEX ix_isbn ON books (isbn);",
    ),
    (
        "index-not-concurrent",
        "postgresql",
        "CREATE INDEX ix_title ON books (title);",
        "CREATE INDEX CONCURRENTLY ix_title ON books (title);",
    ),
    (
        "constraint-not-valid",
        "postgresql",
        "ALTER TABLE loans ADD CONSTRAINT fk_book FOREIGN KEY(book_id) REFERENCES books (id);",
        "ALTER TABLE loans ADD CONSTRAINT fk_book FOREIGN KEY(book_id) REFERENCES books (id) "
        "NOT VALID;",
    ),
    (
        "constraint-not-valid",
        "postgresql",
        "ALTER TABLE books ADD CONSTRAINT ck_year CHECK (year > 0);",
        "ALTER TABLE books ADD CONSTRAINT ck_year CHECK (year > 0) NOT VALID;",
    ),
    (
        "volatile-default",
        "postgresql",
        "ALTER TABLE books ADD COLUMN token UUID DEFAULT gen_random_uuid();",
        "ALTER TABLE books ADD COLUMN added TIMESTAMP DEFAULT now();",
    ),
    (
        "volatile-default",
        "postgresql",
        "ALTER TABLE books ADD COLUMN r FLOAT DEFAULT random();",
        "ALTER TABLE books ADD COLUMN r FLOAT DEFAULT 0.5;",
    ),
    (
        "copy-alter",
        "mysql",
        "CREATE FULLTEXT INDEX ft_title ON books (title);",
        "CREATE INDEX ix_title ON books (title);",
    ),
    (
        "table-rebuild",
        "sqlite",
        "CREATE TABLE _alembic_tmp_books (id INTEGER NOT NULL, title VARCHAR(200));\n"
        "INSERT INTO _alembic_tmp_books (id, title) SELECT books.id, books.title FROM books;\n"
        "DROP TABLE books;\nALTER TABLE _alembic_tmp_books RENAME TO books;",
        "CREATE TABLE shelves (id INTEGER NOT NULL, PRIMARY KEY (id));",
    ),
    (
        "backfill",
        "postgresql",
        "UPDATE books SET sort_name = lower(title);",
        "ALTER TABLE books ADD COLUMN sort_name VARCHAR(200);",
    ),
    (
        "backfill",
        "mysql",
        "INSERT INTO loans_archive (id) SELECT id FROM loans;",
        "INSERT INTO settings (name, value) VALUES ('theme', 'light');",
    ),
    (
        "backfill",
        "sqlite",
        "DELETE FROM loans WHERE returned_at IS NOT NULL;",
        "CREATE INDEX ix_loans_returned ON loans (returned_at);",
    ),
]
"""Two 'add a column' statements whose only difference is a default or NULL show the rule
reads the statement, not its verb."""


def rules(sql: str, dialect: str) -> list[str]:
    return [f.rule for f in findings("r1", sql, dialect)]


@pytest.mark.parametrize(
    ("rule", "dialect", "bad", "safe"),
    CATALOGUE,
    ids=[f"{r}-{d}-{i}" for i, (r, d, _, _) in enumerate(CATALOGUE)],
)
def test_each_rule_and_its_safe_twin(rule: str, dialect: str, bad: str, safe: str) -> None:
    found = findings("r1", bad, dialect)
    assert rule in [f.rule for f in found], [f.rule for f in found]
    finding = next(f for f in found if f.rule == rule)
    assert finding.kind == RULES[rule].kind
    assert finding.revision == "r1" and finding.why and finding.safe
    assert rules(safe, dialect) == []


def test_the_catalogue_covers_every_rule_and_twenty_shapes() -> None:
    assert {r for r, *_ in CATALOGUE} == set(RULES)
    assert len(CATALOGUE) >= 20


def test_dialects_differ() -> None:
    """The same statement is a lock on one database and not on another."""
    index = "CREATE INDEX ix_title ON books (title);"
    assert rules(index, "postgresql") == ["index-not-concurrent"]
    assert rules(index, "mysql") == [] and rules(index, "sqlite") == []
    fk = "ALTER TABLE loans ADD CONSTRAINT fk FOREIGN KEY(book_id) REFERENCES books (id);"
    assert rules(fk, "postgresql") == ["constraint-not-valid"]
    assert rules(fk, "mysql") == []


def test_alembic_and_upgrader_tables_are_not_the_application() -> None:
    sql = (
        "BEGIN;\n\n-- Running upgrade a -> b\n\n"
        "UPDATE alembic_version SET version_num='b' WHERE alembic_version.version_num = 'a';\n\n"
        "DROP TABLE upgrader_nodes;\n\nCOMMIT;\n"
    )
    assert rules(sql, "postgresql") == []


def test_a_batch_rebuild_is_one_finding_not_a_dropped_table() -> None:
    rebuild = CATALOGUE[[r for r, *_ in CATALOGUE].index("table-rebuild")][2]
    assert rules(rebuild, "sqlite") == ["table-rebuild"]


def test_acknowledged_findings_keep_showing_with_the_reason() -> None:
    found = findings("r1", "ALTER TABLE books DROP COLUMN isbn;", "postgresql")
    assert suggested_phase(found) == "post-deploy"
    acked = acknowledge(found, {"drop-column": "nothing has read it since 1.2"})
    assert acked[0].acknowledged == "nothing has read it since 1.2"
    assert suggested_phase(acked) == "online"
    locking = findings("r1", "CREATE INDEX ix ON books (title);", "postgresql")
    assert suggested_phase(locking) == "blocking"
    assert suggested_phase([]) == "online"


def test_dropping_a_constraint_is_not_dropping_a_column() -> None:
    """It allows more, not less (JupyterHub's 0.8 revision drops a foreign key)."""
    assert rules("ALTER TABLE users DROP FOREIGN KEY users_ibfk_1;", "mysql") == []
    assert rules("ALTER TABLE users DROP CONSTRAINT users_fk;", "postgresql") == []
    assert rules("ALTER TABLE users DROP server_id;", "mysql") == ["drop-column"]


def test_unparsed_statements_are_not_findings() -> None:
    assert rules("SELECT pg_sleep(0);\nVACUUM books;", "postgresql") == []
