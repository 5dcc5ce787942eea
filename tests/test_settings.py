"""Where settings come from: flags, UPGRADER_* variables, the application, defaults."""

from __future__ import annotations

import shlex
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from flask import Flask

from tests.helpers import run_cli
from upgrader.sample.config import MIGRATIONS
from upgrader.sample.releases import CURRENT
from upgrader.settings import ConfigError, load_app, portable_ref, resolve


def test_nothing_configured_says_what_to_set() -> None:
    with pytest.raises(ConfigError, match="UPGRADER_DATABASE_URL, UPGRADER_MIGRATIONS"):
        resolve({}, environ={})
    result = run_cli("status")
    assert result.exit_code == 64
    assert "--app module:factory" in result.output and "upgrader demo" in result.output


def test_only_a_database_is_not_enough() -> None:
    """No silent fallback to anything: the migrations must be named."""
    with pytest.raises(ConfigError, match="UPGRADER_MIGRATIONS"):
        resolve({}, environ={"UPGRADER_DATABASE_URL": "sqlite:///x.db"})


def test_precedence_flag_env_app_default() -> None:
    app = SimpleNamespace(
        config={
            "UPGRADER_DATABASE_URL": "sqlite:///app.db",
            "UPGRADER_MIGRATIONS": "/app/migrations",
            "UPGRADER_CODE_VERSION": "3.0",
        }
    )
    env = {"UPGRADER_DATABASE_URL": "sqlite:///env.db", "UPGRADER_CODE_VERSION": "4.0"}
    s = resolve({"code_version": "5.0"}, environ=env, app=app)
    assert (s.code_version, s.sources["code_version"]) == ("5.0", "--code-version")
    assert (s.database_url, s.sources["database_url"]) == (
        "sqlite:///env.db",
        "environment UPGRADER_DATABASE_URL",
    )
    assert (str(s.migrations), s.sources["migrations"]) == (
        "/app/migrations",
        "application config UPGRADER_MIGRATIONS",
    )
    assert s.table_prefix == "upgrader_" and s.sources["table_prefix"] == "default"
    # Without an instance folder, backups and the installer sit beside the migrations.
    assert s.backup_dir == Path("/app/backups") and s.installer_dir == Path("/app/install")


def test_relative_paths_become_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    env = {
        "UPGRADER_DATABASE_URL": "sqlite:///x.db",
        "UPGRADER_MIGRATIONS": "migrations",
        "UPGRADER_BACKUP_DIR": "../backups",
    }
    s = resolve({}, environ=env)
    assert s.migrations == tmp_path / "migrations"
    assert s.backup_dir == tmp_path.parent / "backups"
    assert s.installer_dir == tmp_path / "install"


def flask_app(root: Path, **config: Any) -> Flask:
    app = Flask("notes_settings_probe", root_path=str(root), instance_path=str(root / "instance"))
    app.config.update(config)
    return app


def test_a_flask_application_gives_its_defaults(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "notes").mkdir(parents=True)
    (project / "migrations").mkdir()
    (project / "migrations" / "env.py").write_text("")
    options = {"pool_recycle": 300, "connect_args": {"application_name": "notes"}}
    app = flask_app(
        project / "notes",
        SQLALCHEMY_DATABASE_URI="sqlite:///notes.db",
        SQLALCHEMY_ENGINE_OPTIONS=options,
        UPGRADER_CODE_VERSION="1.2.0",
    )
    s = resolve({}, environ={}, app=app)
    assert s.sources["database_url"] == "application config SQLALCHEMY_DATABASE_URI"
    assert s.engine_options == options
    # migrations/ beside the package, as `flask db init` made it in the project directory
    assert s.migrations == project / "migrations"
    assert s.backup_dir == project / "notes" / "instance" / "backups"
    assert s.installer_dir == project / "notes" / "instance" / "install"
    assert "instance folder" in s.sources["backup_dir"]


def test_flask_migrate_directory_is_used(tmp_path: Path) -> None:
    (tmp_path / "db" / "alembic").mkdir(parents=True)
    app = flask_app(tmp_path, SQLALCHEMY_DATABASE_URI="sqlite://", UPGRADER_CODE_VERSION="1")
    app.extensions["migrate"] = SimpleNamespace(directory="db/alembic", configure_args={})
    s = resolve({}, environ={}, app=app)
    assert s.migrations == tmp_path / "db" / "alembic"  # against the app, not the cwd
    assert s.sources["migrations"] == "Flask-Migrate's directory"


def test_code_version_from_the_application_package(tmp_path: Path) -> None:
    module = SimpleNamespace(__version__="7.1.0")
    sys.modules["notes_version_probe"] = module  # type: ignore[assignment]
    try:
        app = Flask("notes_version_probe", root_path=str(tmp_path))
        app.config.update(SQLALCHEMY_DATABASE_URI="sqlite://", UPGRADER_MIGRATIONS=str(tmp_path))
        s = resolve({}, environ={}, app=app)
    finally:
        del sys.modules["notes_version_probe"]
    assert s.code_version == "7.1.0"
    assert s.sources["code_version"] == "default (notes_version_probe.__version__)"


def test_distribution_from_a_higher_layer_beats_a_lower_code_version() -> None:
    env = {"UPGRADER_DATABASE_URL": "sqlite://", "UPGRADER_MIGRATIONS": "/m"}
    s = resolve({}, environ={**env, "UPGRADER_DISTRIBUTION": "alembic"})
    assert s.code_version is None
    assert s.resolved_code_version() == __import__("alembic").__version__
    missing = resolve({}, environ={**env, "UPGRADER_DISTRIBUTION": "no-such-dist-xyz"})
    with pytest.raises(ConfigError, match="not installed"):
        missing.resolved_code_version()


def test_the_sample_is_used_only_when_named() -> None:
    s = resolve({"app": "upgrader.sample:create_app"}, environ={})
    assert s.code_version == CURRENT
    assert s.sources["code_version"] == "application config UPGRADER_CODE_VERSION"
    assert s.migrations == MIGRATIONS
    s = resolve({"app": "upgrader.sample"}, environ={})  # finds create_app
    assert s.sources["migrations"] == "application config UPGRADER_MIGRATIONS"


def write_module(directory: Path, name: str, source: str) -> Path:
    path = directory / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    return path


def test_load_app_takes_wsgi_callables_factories_and_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_module(
        tmp_path,
        "plainwsgi_probe",
        """
        from upgrader.settings import resolve
        from upgrader.web import UpgraderMiddleware

        def application(environ, start_response):
            start_response("200 OK", [])
            return [b"hi"]

        def create(name="default"):
            return {"made": name}

        guarded = UpgraderMiddleware(
            application,
            resolve({"database_url": "sqlite://", "migrations": "/srv/m", "code_version": "9"},
                    environ={}),
        )
        """,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    wsgi = load_app("plainwsgi_probe:application")
    assert wsgi.__name__ == "application"  # a WSGI callable is not a factory
    assert load_app("plainwsgi_probe:create") == {"made": "default"}
    assert load_app("plainwsgi_probe:create('prod')") == {"made": "prod"}
    assert load_app(f"{path}:create(name='x')") == {"made": "x"}
    # A guarded plain WSGI application carries its settings: they are the application's layer.
    s = resolve({"app": "plainwsgi_probe:guarded"}, environ={})
    assert (s.code_version, str(s.migrations)) == ("9", "/srv/m")
    assert s.sources["code_version"].startswith("the wrapped UpgraderMiddleware")
    with pytest.raises(ConfigError, match="literal"):
        load_app("plainwsgi_probe:create(open)")


def test_a_module_found_through_the_current_directory_is_named_by_its_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_module(tmp_path, "cwd_only_probe", "app = object()\n")
    monkeypatch.chdir(tmp_path)
    load_app("cwd_only_probe:app")  # imported through the current directory
    ref = portable_ref("cwd_only_probe:app")
    assert ref == f"{tmp_path / 'cwd_only_probe.py'}:app"
    assert portable_ref("upgrader.sample:create_app") == "upgrader.sample:create_app"


def test_bad_values_are_configuration_errors() -> None:
    env = {"UPGRADER_DATABASE_URL": "sqlite://", "UPGRADER_MIGRATIONS": "/m"}
    with pytest.raises(ConfigError, match="UPGRADER_CONNECT_TIMEOUT"):
        resolve({}, environ={**env, "UPGRADER_CONNECT_TIMEOUT": "soon"})
    result = run_cli("status", env={**env, "UPGRADER_CONNECT_TIMEOUT": "-1"})
    assert result.exit_code == 64
    assert "UPGRADER_CONNECT_TIMEOUT" in result.output
    result = run_cli("--app", "no_such_module_xyz", "status")
    assert result.exit_code == 64 and "cannot import" in result.output


def test_usage_errors_do_not_look_like_err2() -> None:
    result = run_cli("status", "--no-such-flag")
    assert result.exit_code == 64
    assert run_cli("no-such-command").exit_code == 64


def test_fixes_name_the_application_and_the_flags(tmp_path: Path) -> None:
    s = resolve(
        {
            "app": "myapp.wsgi:create",
            "database_url": "sqlite:////srv/my app.db",
            "migrations": "/srv/m",
            "code_version": "1",
        },
        environ={},
        app=SimpleNamespace(config={}),
    )
    words = shlex.split(s.cli)
    assert Path(words[0]).name == "upgrader"
    assert words[1:] == [
        "--app",
        "myapp.wsgi:create",
        "--database-url",
        "sqlite:////srv/my app.db",
        "--migrations",
        "/srv/m",
        "--code-version",
        "1",
    ]
