"""Where settings come from: flags, UPGRADER_* variables, the app's config, defaults."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from sampleapp.config import ROOT
from sampleapp.releases import CURRENT
from tests.helpers import run_cli
from upgrader.settings import ConfigError, resolve


def test_defaults_are_the_sample_application() -> None:
    s = resolve({}, environ={})
    assert s.database_url.endswith("instance/sampleapp.db")
    assert s.migrations == ROOT / "migrations"
    assert s.code_version == CURRENT
    assert s.sources["database_url"] == "default"
    assert s.cli == "upgrader"


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


def test_named_application_gets_no_sample_database() -> None:
    app = SimpleNamespace(config={"SQLALCHEMY_DATABASE_URI": "postgresql://db/app"})
    s = resolve({}, environ={}, app=app)
    assert s.database_url == "postgresql://db/app"
    assert s.migrations == Path("migrations")
    with pytest.raises(ConfigError, match="no database"):
        resolve({}, environ={}, app=SimpleNamespace(config={}))


def test_distribution_from_a_higher_layer_beats_a_lower_code_version() -> None:
    s = resolve({}, environ={"UPGRADER_DISTRIBUTION": "alembic"})
    assert s.code_version is None
    assert s.resolved_code_version() == __import__("alembic").__version__
    missing = resolve({}, environ={"UPGRADER_DISTRIBUTION": "no-such-dist-xyz"})
    with pytest.raises(ConfigError, match="not installed"):
        missing.resolved_code_version()


def test_app_import_string_is_loaded_like_flask() -> None:
    s = resolve({"app": "sampleapp:create_app"}, environ={})
    assert s.code_version == CURRENT and s.sources["code_version"] == (
        "application config UPGRADER_CODE_VERSION"
    )
    s = resolve({"app": "sampleapp"}, environ={})  # finds create_app
    assert s.sources["migrations"] == "application config UPGRADER_MIGRATIONS"


def test_bad_values_are_configuration_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="UPGRADER_CONNECT_TIMEOUT"):
        resolve({}, environ={"UPGRADER_CONNECT_TIMEOUT": "soon"})
    result = run_cli("status", env={"UPGRADER_CONNECT_TIMEOUT": "-1"})
    assert result.exit_code == 64
    assert "UPGRADER_CONNECT_TIMEOUT" in result.output
    result = run_cli("--app", "no_such_module_xyz", "status")
    assert result.exit_code == 64 and "cannot import" in result.output


def test_usage_errors_do_not_look_like_err2() -> None:
    result = run_cli("status", "--no-such-flag")
    assert result.exit_code == 64
    assert run_cli("no-such-command").exit_code == 64


def test_fixes_name_the_application(tmp_path: Path) -> None:
    s = resolve(
        {
            "app": "myapp.wsgi:create",
            "database_url": "sqlite://",
            "migrations": "m",
            "code_version": "1",
        },
        environ={},
        app=SimpleNamespace(config={}),
    )
    assert s.cli == "upgrader --app myapp.wsgi:create"
