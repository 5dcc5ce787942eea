"""Shelf: the small lending library that upgrader is shown on.

A real self-hosted Flask application over three tables, with four releases
(see releases.py) whose migrations live in the repository's migrations/. It is
used by `upgrader demo` and the tests, and only when named: upgrader never
falls back to it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask, abort, render_template
from sqlalchemy import Engine, create_engine, func, select

from upgrader.sample import schema
from upgrader.sample.config import engine_options, shelf_config
from upgrader.sample.releases import CURRENT
from upgrader.web.flask import Upgrader

__version__ = CURRENT


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.update(shelf_config(app.instance_path))
    if test_config:
        app.config.update(test_config)
    url = app.config["SQLALCHEMY_DATABASE_URI"]
    options = app.config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", engine_options(url))
    engine = create_engine(url, **options)
    if engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:"):
        Path(engine.url.database).parent.mkdir(parents=True, exist_ok=True)
    app.extensions["shelf.engine"] = engine

    # The guard, embedded as any Flask application would (docs/embedding.md).
    Upgrader().init_app(app)

    @app.context_processor
    def version() -> dict[str, str]:
        return {"version": __version__}

    @app.get("/")
    def books() -> str:
        b, a = schema.books, schema.authors
        query = (
            select(b.c.id, b.c.title, b.c.year, b.c.isbn, a.c.name.label("author"))
            .join(a, a.c.id == b.c.author_id)
            .order_by(a.c.sort_name, b.c.year)
        )
        with _engine(app).connect() as conn:
            rows = conn.execute(query).all()
        return render_template("books.html", books=rows)

    @app.get("/books/<int:book_id>")
    def book(book_id: int) -> str:
        b, a, loan = schema.books, schema.authors, schema.loans
        with _engine(app).connect() as conn:
            row = conn.execute(
                select(b, a.c.name.label("author"))
                .join(a, a.c.id == b.c.author_id)
                .where(b.c.id == book_id)
            ).first()
            if row is None:
                abort(404)
            history = conn.execute(
                select(loan).where(loan.c.book_id == book_id).order_by(loan.c.loaned_on)
            ).all()
        return render_template("book.html", book=row, loans=history)

    @app.get("/authors")
    def authors() -> str:
        a, b = schema.authors, schema.books
        with _engine(app).connect() as conn:
            rows = conn.execute(select(a).order_by(a.c.sort_name)).all()
            per_author = select(b.c.author_id, func.count()).group_by(b.c.author_id)
            counts = {author: n for author, n in conn.execute(per_author).all()}
        return render_template("authors.html", authors=rows, counts=counts)

    @app.get("/loans")
    def loans() -> str:
        loan, b = schema.loans, schema.books
        with _engine(app).connect() as conn:
            rows = conn.execute(
                select(loan, b.c.title)
                .join(b, b.c.id == loan.c.book_id)
                .order_by(loan.c.loaned_on.desc())
            ).all()
        return render_template("loans.html", loans=rows)

    return app


def _engine(app: Flask) -> Engine:
    engine: Engine = app.extensions["shelf.engine"]
    return engine
