"""What an integrator relies on: upgrader's tables kept out of autogenerate (and refused when a
release drops them anyway), honest journalling of changes made outside upgrader, the Flask
extension's banner and command group, and the application's engine options."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from flask import Flask, render_template_string
from sqlalchemy import inspect

from tests.helpers import (
    MIGRATIONS,
    FlaskRunner,
    cli_args,
    code_with,
    extra_revision,
    install,
    migrate,
    run_cli,
)
from upgrader.alembic import include_name, include_name_for
from upgrader.core.database import guard_engine
from upgrader.sample.releases import CURRENT, RELEASES
from upgrader.settings import resolve
from upgrader.web.flask import Upgrader, guard_of

DROPPING = extra_revision(
    '    op.drop_index("ix_upgrader_steps_run_id", table_name="upgrader_steps")\n'
    '    op.drop_table("upgrader_steps")\n'
    '    op.drop_table("upgrader_runs")\n'
    '    op.add_column("books", sa.Column("shelf", sa.String(20)))'
)


def test_a_release_that_would_drop_upgraders_tables_is_refused(db_url: str, tmp_path: Path) -> None:
    install(db_url, CURRENT)
    code = code_with(tmp_path, "code-2.1.0", extra=DROPPING)
    args = ["--database-url", db_url, "--migrations", str(code), "--code-version", "2.1.0"]
    status = json.loads(run_cli(*args, "status", "--json").output)
    assert (status["state"], status["code"]) == ("schema_unknown", "Err3")
    assert any("upgrader_runs, upgrader_steps" in d for d in status["details"]), status
    assert "0004_extra" in status["fix"] and "include_name" in status["fix"]
    refused = run_cli(*args, "upgrade", "--yes")
    assert refused.exit_code == 3, refused.output
    from sqlalchemy import create_engine

    engine = create_engine(db_url)
    try:
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert {"upgrader_runs", "upgrader_steps", "upgrader_state"} <= tables
    assert "shelf" not in {c["name"] for c in _columns(db_url, "books")}


def _columns(url: str, table: str) -> list[Any]:
    from sqlalchemy import create_engine

    engine = create_engine(url)
    try:
        return list(inspect(engine).get_columns(table))
    finally:
        engine.dispose()


def test_include_name_skips_only_upgraders_tables() -> None:
    assert include_name("upgrader_state", "table", {}) is False
    assert include_name("upgrader_runs", "table", {}) is False
    assert include_name("books", "table", {}) is True
    assert include_name("upgrader_state", "column", {"table_name": "x"}) is True
    theirs = include_name_for("app_", chained=lambda name, type_, parents: name != "legacy")
    assert theirs("app_runs", "table", {}) is False
    assert theirs("legacy", "table", {}) is False  # the application's own hook still applies
    assert theirs("upgrader_runs", "table", {}) is True  # another prefix is another set


@pytest.mark.parametrize("migrate_first", [True, False])
def test_flask_migrate_gets_the_filter_in_either_order(migrate_first: bool) -> None:
    app = Flask(__name__)
    app.config.update(
        SQLALCHEMY_DATABASE_URI="sqlite://",
        UPGRADER_MIGRATIONS=str(MIGRATIONS),
        UPGRADER_CODE_VERSION=CURRENT,
    )

    def theirs(name: Any, type_: str, parents: Any) -> bool:
        return name != "legacy"

    def register_migrate() -> None:  # what Flask-Migrate's init_app leaves behind
        app.extensions["migrate"] = SimpleNamespace(
            directory="migrations", configure_args={"include_name": theirs}
        )

    if migrate_first:
        register_migrate()
    Upgrader().init_app(app)
    if not migrate_first:
        register_migrate()
    with app.app_context():  # `flask db migrate` runs in one
        hook = app.extensions["migrate"].configure_args["include_name"]
    assert hook("upgrader_steps", "table", {}) is False
    assert hook("legacy", "table", {}) is False and hook("books", "table", {}) is True
    with app.app_context():  # the hook is installed once, not wrapped again and again
        assert app.extensions["migrate"].configure_args["include_name"] is hook


def test_a_schema_change_outside_upgrader_is_journalled_as_such(
    db_url: str, tmp_path: Path
) -> None:
    older = cli_args(db_url, tmp_path, "1.1.0")
    assert run_cli(*older, "install", "--yes").exit_code == 0
    migrate(db_url, RELEASES[CURRENT])  # `flask db upgrade`, run by hand with the new code
    status = json.loads(run_cli(*cli_args(db_url), "status", "--json").output)
    assert (status["state"], status["schema_version"]) == ("ok", CURRENT)
    text = " ".join(status["details"])
    assert "changed outside upgrader, from revision 0002_loans_isbn to 0003_sort_names" in text
    assert "adds no migrations" not in text
    history = json.loads(run_cli(*cli_args(db_url), "history", "--json").output)
    assert history[0]["kind"] == "external"
    assert "with no backup" in history[0]["note"]
    again = json.loads(run_cli(*cli_args(db_url), "status", "--json").output)
    assert not any("outside" in d for d in again["details"])  # recorded once, then quiet


def shelf_app(db_url: str, tmp_path: Path, template: str) -> Flask:
    app = Flask(__name__)
    app.config.update(
        SQLALCHEMY_DATABASE_URI=db_url,
        UPGRADER_MIGRATIONS=str(MIGRATIONS),
        UPGRADER_CODE_VERSION=CURRENT,
        UPGRADER_INSTALLER_DIR=str(tmp_path / "none"),
    )
    Upgrader().init_app(app)

    @app.get("/page")
    def page() -> str:
        return render_template_string(template)

    @app.get("/fragment")
    def fragment() -> str:
        return "<li>one more row</li>"

    return app


def test_the_banner_appears_once_and_never_in_fragments(db_url: str, tmp_path: Path) -> None:
    install(db_url, CURRENT)
    on = run_cli(*cli_args(db_url), "maintenance", "on", "--level", "banner", "--message", "Sun")
    assert on.exit_code == 0, on.output
    placed = "<!doctype html><html><body><nav>menu</nav>{{ upgrader_banner() }}<p>hi</p></body>"
    app = shelf_app(db_url, tmp_path, placed)
    client = app.test_client()
    html = client.get("/page").text
    assert html.count("upgrader-banner") == 1
    assert html.index("upgrader-banner") > html.index("<nav>")  # where the template put it
    assert client.get("/fragment").text == "<li>one more row</li>"
    plain = shelf_app(db_url, tmp_path, "<html><body><p>hi</p></body></html>").test_client()
    inserted = plain.get("/page").text
    assert inserted.count("upgrader-banner") == 1 and inserted.index("upgrader-banner") > 0
    guard_of(app).cache.close()


def test_flask_upgrader_carries_what_fits_under_flask(db_url: str, tmp_path: Path) -> None:
    install(db_url, "1.0.0")
    app = shelf_app(db_url, tmp_path, "")
    # `flask upgrader` as the `flask` command finds it: a `flask.commands` entry point
    runner = FlaskRunner(app)
    listed = runner.invoke(args=["upgrader", "--help"]).output
    assert "status" in listed and "stamp" in listed
    assert " demo " not in listed and " serve " not in listed
    status = runner.invoke(args=["upgrader", "status", "--json"])
    assert status.exit_code == 2 and json.loads(status.output)["state"] == "upgrade_pending"
    elsewhere = runner.invoke(args=["upgrader", "-d", str(tmp_path / "nope"), "status"])
    assert elsewhere.exit_code == 3 and "is not a directory" in elsewhere.output
    usage = runner.invoke(args=["upgrader", "status", "--bogus"])
    assert usage.exit_code == 64
    broken = shelf_app(db_url, tmp_path, "")
    broken.config["UPGRADER_CONNECT_TIMEOUT"] = "soon"
    config = FlaskRunner(broken).invoke(args=["upgrader", "status"])
    assert config.exit_code == 64 and "UPGRADER_CONNECT_TIMEOUT" in config.output
    assert "Traceback" not in config.output


def test_the_applications_engine_options_apply(tmp_path: Path) -> None:
    settings = resolve(
        {},
        environ={},
        app=SimpleNamespace(
            config={
                "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'x.db'}",
                "SQLALCHEMY_ENGINE_OPTIONS": {"pool_recycle": 123, "echo_pool": True},
                "UPGRADER_MIGRATIONS": str(MIGRATIONS),
                "UPGRADER_CODE_VERSION": "1",
            }
        ),
    )
    engine = guard_engine(settings)
    try:
        assert engine.pool._recycle == 123  # type: ignore[attr-defined]
        assert engine.pool.echo is True
    finally:
        engine.dispose()
