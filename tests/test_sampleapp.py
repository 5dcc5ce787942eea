"""The sample application runs on each database, and its 2.0.0 data migration keeps every row."""

from __future__ import annotations

from sqlalchemy import create_engine, func, select

from tests.helpers import install, migrate
from upgrader.sample import create_app, schema
from upgrader.sample.data import AUTHORS, BOOKS, LOANS
from upgrader.sample.text import isbn13, sort_name


def test_text_rules() -> None:
    assert sort_name("Ursula K. Le Guin") == "Le Guin, Ursula K."
    assert sort_name("Ludwig van Beethoven") == "van Beethoven, Ludwig"
    assert sort_name("Homer") == "Homer"
    assert isbn13("0-14-143951-3") == "9780141439518"
    assert isbn13("0-14-043786-X") == "9780140437867"
    assert isbn13("9780141439518") == "9780141439518"
    assert isbn13("not an isbn") == "not an isbn"


def test_pages_render_on_the_current_schema(db_url: str) -> None:
    install(db_url, "2.0.1")
    app = create_app({"SQLALCHEMY_DATABASE_URI": db_url, "TESTING": True})
    client = app.test_client()
    books = client.get("/")
    assert books.status_code == 200
    assert b"Pride and Prejudice" in books.data and b"Shelf 2.0.1" in books.data
    authors = client.get("/authors").data.decode()
    assert "Le Guin, Ursula K." in authors
    assert "Grace Hopper" in client.get("/loans").data.decode()
    assert client.get("/books/5").status_code == 200
    assert client.get("/books/999").status_code == 404
    app.extensions["shelf.engine"].dispose()


def test_data_migration_rewrites_rows_and_keeps_them_all(db_url: str) -> None:
    install(db_url, "1.1.0")  # has ISBN-10s and loans
    migrate(db_url, "heads")
    engine = create_engine(db_url)
    with engine.connect() as conn:
        a, b, loans = schema.authors, schema.books, schema.loans
        assert conn.scalar(select(func.count()).select_from(loans)) == len(LOANS)
        got_authors = {r.id: (r.name, r.sort_name) for r in conn.execute(select(a))}
        assert got_authors == {i: (n, sort_name(n)) for i, n in AUTHORS}
        got_books = {r.id: (r.title, r.isbn) for r in conn.execute(select(b))}
        assert got_books == {i: (t, isbn13(isbn)) for i, t, _, _, isbn in BOOKS}
    engine.dispose()
