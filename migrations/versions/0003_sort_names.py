"""Release 2.0.0: file authors by family name, ISBN-13 everywhere

Adds authors.sort_name and fills it for every existing author, rewrites every
ISBN to 13 digits, and indexes both columns.

Revision ID: 0003_sort_names
Revises: 0002_loans_isbn
"""

import sqlalchemy as sa
from alembic import op

from upgrader.sample.text import isbn13, sort_name

revision = "0003_sort_names"
down_revision = "0002_loans_isbn"
branch_labels = None
depends_on = None

authors = sa.table(
    "authors", sa.column("id", sa.Integer), sa.column("name"), sa.column("sort_name")
)
books = sa.table("books", sa.column("id", sa.Integer), sa.column("isbn"))


def upgrade() -> None:
    if op.get_context().as_sql:
        raise NotImplementedError(
            "this data migration computes new values from existing rows in Python, "
            "so it cannot be written out as SQL; run it online"
        )
    op.add_column("authors", sa.Column("sort_name", sa.String(200)))
    conn = op.get_bind()
    for author_id, name in conn.execute(sa.select(authors.c.id, authors.c.name)).all():
        conn.execute(
            authors.update().where(authors.c.id == author_id).values(sort_name=sort_name(name))
        )
    for book_id, isbn in conn.execute(
        sa.select(books.c.id, books.c.isbn).where(books.c.isbn.is_not(None))
    ).all():
        new = isbn13(isbn)
        if new != isbn:
            conn.execute(books.update().where(books.c.id == book_id).values(isbn=new))
    op.create_index("ix_authors_sort_name", "authors", ["sort_name"])
    op.create_index("ix_books_isbn", "books", ["isbn"])


def downgrade() -> None:
    op.drop_index("ix_books_isbn", table_name="books")
    op.drop_index("ix_authors_sort_name", table_name="authors")
    with op.batch_alter_table("authors") as batch:
        batch.drop_column("sort_name")
