"""Release 1.1.0: loans table and an ISBN for each book

Revision ID: 0002_loans_isbn
Revises: 0001_initial
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_loans_isbn"
down_revision = "0001_initial"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "loans",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("book_id", sa.Integer, sa.ForeignKey("books.id"), nullable=False),
        sa.Column("borrower", sa.String(200), nullable=False),
        sa.Column("loaned_on", sa.Date, nullable=False),
        sa.Column("returned_on", sa.Date),
    )
    op.add_column("books", sa.Column("isbn", sa.String(20)))


def downgrade() -> None:
    with op.batch_alter_table("books") as batch:
        batch.drop_column("isbn")
    op.drop_table("loans")
