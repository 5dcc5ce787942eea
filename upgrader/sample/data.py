"""Sample data: real books, so the upgrade visibly keeps and rewrites real rows.

`seed()` writes the rows a library would have entered while running a given
release: 1.0.0 knows authors and books; 1.1.0 added ISBNs and loans.
"""

from __future__ import annotations

import datetime as dt

from packaging.version import Version
from sqlalchemy import Connection, column, table

from upgrader.sample.text import isbn13, sort_name

AUTHORS: list[tuple[int, str]] = [
    (1, "Jane Austen"),
    (2, "Mary Shelley"),
    (3, "Herman Melville"),
    (4, "Leo Tolstoy"),
    (5, "George Eliot"),
    (6, "Fyodor Dostoevsky"),
    (7, "Charlotte Bronte"),
    (8, "Arthur Conan Doyle"),
    (9, "Ursula K. Le Guin"),
    (10, "Ludwig van Beethoven"),
]

# (id, title, author id, year, ISBN-10 as printed on an old edition)
BOOKS: list[tuple[int, str, int, int, str]] = [
    (1, "Pride and Prejudice", 1, 1813, "0-14-143951-3"),
    (2, "Emma", 1, 1815, "0-14-143958-0"),
    (3, "Persuasion", 1, 1817, "0-14-143968-8"),
    (4, "Frankenstein", 2, 1818, "0-14-143947-5"),
    (5, "Moby-Dick", 3, 1851, "0-14-243724-7"),
    (6, "War and Peace", 4, 1869, "1-4000-7998-8"),
    (7, "Anna Karenina", 4, 1878, "0-14-303500-2"),
    (8, "Middlemarch", 5, 1871, "0-14-143954-8"),
    (9, "Crime and Punishment", 6, 1866, "0-14-305814-2"),
    (10, "The Brothers Karamazov", 6, 1880, "0-374-52837-5"),
    (11, "Jane Eyre", 7, 1847, "0-14-144114-3"),
    (12, "A Study in Scarlet", 8, 1887, "0-14-043908-0"),
    (13, "The Hound of the Baskervilles", 8, 1902, "0-14-043786-X"),
    (14, "A Wizard of Earthsea", 9, 1968, "0-553-38304-3"),
    (15, "The Left Hand of Darkness", 9, 1969, "0-441-47812-3"),
    (16, "Letters", 10, 1827, "0-486-22769-3"),
]

LOANS: list[tuple[int, int, str, dt.date, dt.date | None]] = [
    (1, 1, "Ada Lovelace", dt.date(2026, 3, 1), dt.date(2026, 3, 20)),
    (2, 5, "Grace Hopper", dt.date(2026, 4, 2), None),
    (3, 9, "Alan Turing", dt.date(2026, 4, 10), dt.date(2026, 5, 1)),
    (4, 14, "Katherine Johnson", dt.date(2026, 6, 5), None),
]


def seed(conn: Connection, release: str) -> None:
    """Insert the sample rows as the application at `release` would have stored them."""
    version = Version(release)
    has_isbn = version >= Version("1.1.0")
    normalised = version >= Version("2.0.0")  # sort names and ISBN-13 from 2.0.0 on
    author_cols = ["id", "name"] + (["sort_name"] if normalised else [])
    conn.execute(
        table("authors", *map(column, author_cols)).insert(),
        [dict(zip(author_cols, (i, n, sort_name(n)), strict=False)) for i, n in AUTHORS],
    )
    book_cols = ["id", "title", "author_id", "year"] + (["isbn"] if has_isbn else [])
    conn.execute(
        table("books", *map(column, book_cols)).insert(),
        [
            dict(zip(book_cols, (i, t, a, y, isbn13(isbn) if normalised else isbn), strict=False))
            for i, t, a, y, isbn in BOOKS
        ],
    )
    if has_isbn:
        loan_cols = ["id", "book_id", "borrower", "loaned_on", "returned_on"]
        conn.execute(
            table("loans", *map(column, loan_cols)).insert(),
            [dict(zip(loan_cols, loan, strict=True)) for loan in LOANS],
        )


FIRST = (
    "Ada",
    "Alan",
    "Clara",
    "Dmitri",
    "Elena",
    "Farid",
    "Grace",
    "Hiro",
    "Ines",
    "Jonas",
    "Kwame",
    "Lena",
    "Mateo",
    "Nadia",
    "Oskar",
    "Priya",
    "Quentin",
    "Rosa",
    "Sven",
    "Tomoko",
)
LAST = (
    "Abara",
    "Berg",
    "Castillo",
    "Dubois",
    "Eriksen",
    "Fontaine",
    "Gruber",
    "Hansen",
    "Ivanova",
    "Jensen",
    "Kowalski",
    "Lindqvist",
    "Moreau",
    "Nakamura",
    "Okafor",
    "Petrov",
    "Quinn",
    "Rossi",
    "Schmidt",
    "Tanaka",
    "Usman",
    "Varga",
    "Weber",
    "Yilmaz",
    "Zhou",
)


DEMO_AUTHORS = 100_000
"""About six seconds of the 2.0.0 migration on a laptop: long enough to watch it progress."""


def catalogue(conn: Connection, authors: int) -> None:
    """A library's worth of further authors, one book each, for `upgrader demo`: enough
    rows that the upgrade shows several seconds of real progress, step by step."""
    start = len(AUTHORS) + 1
    names = [
        f"{FIRST[i % len(FIRST)]} {LAST[(i // len(FIRST)) % len(LAST)]} {i // 500 + 1}"
        for i in range(authors)
    ]
    conn.execute(
        table("authors", column("id"), column("name")).insert(),
        [{"id": start + i, "name": name} for i, name in enumerate(names)],
    )
    first_book = len(BOOKS) + 1
    conn.execute(
        table("books", column("id"), column("title"), column("author_id"), column("year")).insert(),
        [
            {
                "id": first_book + i,
                "title": f"Collected Notes, volume {i + 1}",
                "author_id": start + i,
                "year": 1900 + i % 120,
            }
            for i in range(authors)
        ],
    )
