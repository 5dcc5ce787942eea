"""The sample application's tables, as the current release (see releases.py) has them."""

from __future__ import annotations

from sqlalchemy import Column, Date, ForeignKey, Index, Integer, MetaData, String, Table

metadata = MetaData()

authors = Table(
    "authors",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200), nullable=False),
    Column("sort_name", String(200)),  # 2.0.0
    Index("ix_authors_sort_name", "sort_name"),  # 2.0.0
)

books = Table(
    "books",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("title", String(300), nullable=False),
    Column("author_id", Integer, ForeignKey("authors.id"), nullable=False),
    Column("year", Integer),
    Column("isbn", String(20)),  # 1.1.0; normalised to ISBN-13 by 2.0.0
    Index("ix_books_isbn", "isbn"),  # 2.0.0
)

loans = Table(  # 1.1.0
    "loans",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("book_id", Integer, ForeignKey("books.id"), nullable=False),
    Column("borrower", String(200), nullable=False),
    Column("loaned_on", Date, nullable=False),
    Column("returned_on", Date),
)
