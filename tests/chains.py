"""Alembic environments that are not the sample's: generated chains of revisions.

The env.py is Alembic's generic one (`alembic init`), with none of the sample's care: no
transaction per migration and, on SQLite, schema changes outside any transaction, so a
killed migration leaves what real applications leave (half-applied revisions, batch
copies named `_alembic_tmp_*`). A revision sleeps between its two halves when the
environment variable CHAIN_SLEEP_AT names it, which lets a test kill it in the middle.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

ENV_PY = """\
from alembic import context
from sqlalchemy import engine_from_config, pool

config = context.config


def run_migrations_offline():
    context.configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online():
    connectable = engine_from_config(
        config.get_section(config.config_ini_section, {}),
        prefix="sqlalchemy.",
        poolclass=pool.NullPool,
    )
    with connectable.connect() as connection:
        context.configure(connection=connection, target_metadata=None)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
"""

HEADER = '''\
"""{message}"""
import os
import time

import sqlalchemy as sa
from alembic import op

revision = {revision!r}
down_revision = {down!r}
branch_labels = {labels!r}
depends_on = {depends!r}


def pause():
    if os.environ.get("CHAIN_SLEEP_AT") == revision:
        time.sleep(float(os.environ.get("CHAIN_SLEEP", "30")))


def upgrade():
'''


def write_revision(
    versions: Path,
    revision: str,
    down: str | tuple[str, ...] | None,
    body: str,
    *,
    message: str = "",
    labels: tuple[str, ...] | None = None,
    depends: str | None = None,
) -> None:
    head = HEADER.format(
        message=message or f"revision {revision}",
        revision=revision,
        down=down,
        labels=labels,
        depends=depends,
    )
    (versions / f"{revision}.py").write_text(head + textwrap.indent(textwrap.dedent(body), "    "))


def environment(root: Path) -> Path:
    """An empty Alembic environment with Alembic's generic env.py."""
    (root / "versions").mkdir(parents=True, exist_ok=True)
    (root / "env.py").write_text(ENV_PY)
    return root


# The recovery chain: a base table with data, then six revisions of two halves each,
# of the kinds real releases have (a column and its data, a table and its index, a
# batch alteration, a data copy).
RECOVERY: list[tuple[str, str]] = [
    (
        "r01",
        """
        op.create_table("items", sa.Column("id", sa.Integer, primary_key=True),
                        sa.Column("name", sa.String(60), nullable=False))
        pause()
        """,
    ),
    (
        "r02",
        """
        op.add_column("items", sa.Column("price", sa.Integer))
        pause()
        op.execute("UPDATE items SET price = id * 10")
        """,
    ),
    (
        "r03",
        """
        op.create_table("tags", sa.Column("id", sa.Integer, primary_key=True),
                        sa.Column("name", sa.String(40)))
        pause()
        op.create_index("ix_tags_name", "tags", ["name"])
        """,
    ),
    (
        "r04",
        """
        with op.batch_alter_table("items") as batch:
            batch.alter_column("name", type_=sa.String(120), existing_nullable=False)
        pause()
        op.add_column("tags", sa.Column("colour", sa.String(20)))
        """,
    ),
    (
        "r05",
        """
        op.create_table("orders", sa.Column("id", sa.Integer, primary_key=True),
                        sa.Column("item_id", sa.Integer), sa.Column("total", sa.Integer))
        pause()
        op.execute("INSERT INTO orders (id, item_id, total) SELECT id, id, price FROM items")
        """,
    ),
    (
        "r06",
        """
        op.drop_index("ix_tags_name", table_name="tags")
        pause()
        op.create_index("ix_tags_name_colour", "tags", ["name", "colour"])
        """,
    ),
    (
        "r07",
        """
        with op.batch_alter_table("orders") as batch:
            batch.add_column(sa.Column("note", sa.String(40)))
        pause()
        op.execute("UPDATE orders SET note = 'ok'")
        """,
    ),
]


def recovery_chain(root: Path, upto: int = len(RECOVERY)) -> Path:
    versions = environment(root) / "versions"
    down = None
    for revision, body in RECOVERY[:upto]:
        write_revision(versions, revision, down, body)
        down = revision
    return root


def long_chain(root: Path, count: int, rows: int = 200) -> Path:
    """`count` revisions of schema and data changes over a growing set of tables, each
    table created with `rows` rows."""
    versions = environment(root) / "versions"
    down = None
    for i in range(1, count + 1):
        revision = f"l{i:03d}"
        table = f"t{(i - 1) // 4 + 1:02d}"
        kind = (i - 1) % 4
        if kind == 0:
            body = f"""
            op.create_table("{table}", sa.Column("id", sa.Integer, primary_key=True),
                            sa.Column("name", sa.String(60)), sa.Column("n", sa.Integer))
            op.execute("INSERT INTO {table} (id, name, n) VALUES " + ", ".join(
                f"({{k}}, 'row {{k}}', {{k}})" for k in range(1, {rows + 1})))
            """
        elif kind == 1:
            body = f"""
            op.add_column("{table}", sa.Column("twice", sa.Integer))
            op.execute("UPDATE {table} SET twice = n * 2")
            """
        elif kind == 2:
            body = f"""
            op.create_index("ix_{table}_n", "{table}", ["n"])
            """
        else:
            body = f"""
            op.execute("UPDATE {table} SET n = n + 1000")
            """
        write_revision(versions, revision, down, body)
        down = revision
    return root


def branched(root: Path, *, core: int = 6, plugin: bool = True, split: bool = False) -> Path:
    """A core branch, a plugin branch whose base `depends_on` the core's third revision
    (both labelled), and optionally an accidental split: two heads on top of the core."""
    versions = environment(root) / "versions"
    down = None
    for i in range(1, core + 1):
        revision = f"c{i:02d}"
        write_revision(
            versions,
            revision,
            down,
            f"""
            op.create_table("core_{i}", sa.Column("id", sa.Integer, primary_key=True),
                            sa.Column("v", sa.Integer))
            op.execute("INSERT INTO core_{i} (id, v) VALUES (1, {i}), (2, {i * 2})")
            """,
            message=f"core {i}",
            labels=("core",) if i == 1 else None,
        )
        down = revision
    if plugin:
        write_revision(
            versions,
            "p01",
            None,
            """
            op.create_table("plugin_notes", sa.Column("id", sa.Integer, primary_key=True),
                            sa.Column("core_id", sa.Integer))
            op.execute("INSERT INTO plugin_notes (id, core_id) SELECT id, id FROM core_3")
            """,
            message="plugin: notes on core rows",
            labels=("plugin",),
            depends="c03",
        )
        write_revision(
            versions,
            "p02",
            "p01",
            'op.add_column("plugin_notes", sa.Column("text", sa.String(40)))\n',
            message="plugin: note text",
        )
        write_revision(
            versions,
            "p03",
            "p02",
            "op.execute(\"UPDATE plugin_notes SET text = 'hello'\")\n",
            message="plugin: greet",
        )
    if split:
        for name in ("s1", "s2"):
            write_revision(
                versions,
                name,
                down,
                f'op.create_table("split_{name}", sa.Column("id", sa.Integer, primary_key=True))\n',
                message=f"a hotfix made twice: {name}",
            )
    return root


def trivial_chain(root: Path, count: int) -> Path:
    """`count` revisions that do next to nothing: what upgrader adds per revision shows."""
    versions = environment(root) / "versions"
    down = None
    for i in range(1, count + 1):
        body = (
            'op.create_table("seed", sa.Column("id", sa.Integer, primary_key=True))\n'
            if i == 1
            else 'op.execute("UPDATE seed SET id = id")\n'
        )
        write_revision(versions, f"v{i:04d}", down, body)
        down = f"v{i:04d}"
    return root
