"""Settings, resolved in one documented order, remembering where each came from.

    1. command-line flags
    2. UPGRADER_* environment variables (UPGRADER_DATABASE_URL first among them)
    3. the application's config (`app.config["UPGRADER_*"]`; SQLALCHEMY_DATABASE_URI
       is accepted for the database)
    4. defaults: the bundled sample application on a SQLite file, unless an
       application was named, in which case there is no default database

`doctor` prints the source of every value, so support staff can see at once
that, say, an environment variable overrides the application's config.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SAMPLE_APP = "sampleapp:create_app"


class ConfigError(Exception):
    """The configuration cannot work; the message says which setting and why."""


def _path(value: Any) -> Path:
    return Path(str(value)).expanduser()


def _positive(value: Any) -> float:
    number = float(value)
    if number <= 0:
        raise ValueError("must be greater than zero")
    return number


def _strings(value: Any) -> tuple[str, ...]:
    items = value if isinstance(value, list | tuple) else str(value).split(",")
    return tuple(str(i).strip() for i in items if str(i).strip())


def _status(value: Any) -> int:
    code = int(value)
    if not 400 <= code <= 599:
        raise ValueError("must be an HTTP error status (400-599)")
    return code


def _releases(value: Any) -> dict[str, str]:
    if isinstance(value, Mapping):
        return {str(k): str(v) for k, v in value.items()}
    pairs = [p.split("=", 1) for p in str(value).split(",") if p.strip()]
    if any(len(p) != 2 for p in pairs):
        raise ValueError("expected VERSION=REVISION pairs separated by commas")
    return {k.strip(): v.strip() for k, v in pairs}


# name -> (converter, default when no application is named, default for a named application)
_FIELDS: dict[str, tuple[Callable[[Any], Any], Any, Any]] = {
    "database_url": (str, None, None),
    "migrations": (_path, None, "migrations"),
    "code_version": (str, None, None),
    "distribution": (str, None, None),
    "version_table": (str, "alembic_version", "alembic_version"),
    "table_prefix": (str, "upgrader_", "upgrader_"),
    "installer_dir": (_path, None, "install"),
    "backup_dir": (_path, None, "backups"),
    "connect_timeout": (_positive, 5.0, 5.0),
    "lease_seconds": (_positive, 60.0, 60.0),
    "releases": (_releases, None, {}),
    # the request guard (docs/embedding.md)
    "cache_ttl": (_positive, 2.0, 2.0),
    "status_path": (str, "/upgrader/status", "/upgrader/status"),
    "bypass_path": (str, "/upgrader/bypass/", "/upgrader/bypass/"),
    "installer_path": (str, "/install", "/install"),
    "allow_paths": (_strings, (), ()),
    "allow_ips": (_strings, (), ()),
    "trusted_proxies": (_strings, (), ()),
    "blocked_status": (_status, 503, 503),
    "retry_after": (_positive, 120.0, 120.0),
    "template_dir": (_path, None, None),
    "static_dir": (_path, None, None),
}


@dataclass(frozen=True)
class Settings:
    database_url: str
    migrations: Path
    code_version: str | None = None
    distribution: str | None = None
    version_table: str = "alembic_version"
    table_prefix: str = "upgrader_"
    installer_dir: Path | None = None
    backup_dir: Path = Path("backups")
    connect_timeout: float = 5.0
    lease_seconds: float = 60.0
    releases: dict[str, str] = field(default_factory=dict)
    cache_ttl: float = 2.0
    status_path: str = "/upgrader/status"
    bypass_path: str = "/upgrader/bypass/"
    installer_path: str = "/install"
    allow_paths: tuple[str, ...] = ()
    allow_ips: tuple[str, ...] = ()
    trusted_proxies: tuple[str, ...] = ()
    blocked_status: int = 503
    retry_after: float = 120.0
    template_dir: Path | None = None
    static_dir: Path | None = None
    app: str | None = None
    sources: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def cli(self) -> str:
        """The command prefix to print in fixes, so they can be pasted as they are."""
        return "upgrader" if self.app in (None, SAMPLE_APP) else f"upgrader --app {self.app}"

    def resolved_code_version(self) -> str:
        """The code version: configured, or read from the distribution's metadata."""
        if self.code_version:
            return self.code_version
        if self.distribution:
            try:
                return importlib.metadata.version(self.distribution)
            except importlib.metadata.PackageNotFoundError as exc:
                raise ConfigError(
                    f"distribution {self.distribution!r} is not installed, so its version "
                    "cannot be read; set UPGRADER_CODE_VERSION instead"
                ) from exc
        raise ConfigError(
            "no code version: set UPGRADER_CODE_VERSION, or UPGRADER_DISTRIBUTION "
            "to read it from the installed package"
        )


def load_app(import_string: str) -> Any:
    """Import `module:attribute` (calling it when it is a factory), as `flask --app` does."""
    module_name, _, attr = import_string.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import the application {import_string!r}: {exc}") from exc
    candidates = [attr] if attr else ["app", "application", "create_app", "make_app"]
    for name in candidates:
        obj = getattr(module, name, None)
        if obj is None:
            continue
        if callable(obj) and not hasattr(obj, "config"):
            obj = obj()
        return obj
    raise ConfigError(f"{import_string!r} names no application (tried {', '.join(candidates)})")


def app_config(app: Any) -> dict[str, Any]:
    """The UPGRADER_* keys of an application's config, without the prefix."""
    config: Mapping[str, Any] = getattr(app, "config", None) or {}
    values = {
        key[len("UPGRADER_") :].lower(): value
        for key, value in config.items()
        if key.startswith("UPGRADER_") and value is not None
    }
    if "database_url" not in values and config.get("SQLALCHEMY_DATABASE_URI"):
        values["database_url"] = config["SQLALCHEMY_DATABASE_URI"]
    return values


def _sample_defaults() -> dict[str, Any]:
    from sampleapp.config import default_database_url, upgrader_config

    values = app_config(type("Sample", (), {"config": upgrader_config()}))
    values["database_url"] = default_database_url()
    return values


def resolve(
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    app: Any = None,
) -> Settings:
    """Resolve settings from flags, environment, an application object and defaults.

    `flags` may hold `app` (an import string); the application is then loaded
    from it unless `app` is given as an object (the Flask extension does that).
    """
    flags = {k: v for k, v in (flags or {}).items() if v is not None and v != ""}
    environ = os.environ if environ is None else environ
    env = {
        key[len("UPGRADER_") :].lower(): value
        for key, value in environ.items()
        if key.startswith("UPGRADER_") and value != ""
    }
    app_name = flags.get("app") or env.get("app")
    if app is None and app_name:
        app = load_app(app_name)
    named_app = app is not None and app_name != SAMPLE_APP
    layers: list[tuple[str, Mapping[str, Any]]] = [
        ("flag", flags),
        ("env", env),
        ("app config", app_config(app) if app is not None else {}),
        ("default", {} if named_app else _sample_defaults()),
    ]
    values: dict[str, Any] = {}
    layer_of: dict[str, str] = {}
    for name, (convert, sample_default, app_default) in _FIELDS.items():
        source, raw = next(
            ((s, layer[name]) for s, layer in layers if name in layer),
            ("default", app_default if named_app else sample_default),
        )
        if raw is None:
            continue
        try:
            values[name] = convert(raw)
        except (TypeError, ValueError) as exc:
            label = f"UPGRADER_{name.upper()}"
            raise ConfigError(f"{label} ({source}): {raw!r} is not usable: {exc}") from exc
        layer_of[name] = source
    if "code_version" in values and "distribution" in values:
        # The higher layer decides how the version is found; on a tie the explicit version wins.
        ranks = {n: _ORDER.index(layer_of[n]) for n in ("code_version", "distribution")}
        loser = "distribution" if ranks["code_version"] <= ranks["distribution"] else "code_version"
        del values[loser], layer_of[loser]
    sources = {name: _describe(source, name) for name, source in layer_of.items()}
    if "database_url" not in values:
        raise ConfigError(
            "no database: set UPGRADER_DATABASE_URL, pass --database-url, or give the "
            "application's config UPGRADER_DATABASE_URL or SQLALCHEMY_DATABASE_URI"
        )
    if "migrations" not in values:
        raise ConfigError("no migrations directory: set UPGRADER_MIGRATIONS")
    values["app"] = app_name or (None if app is not None else SAMPLE_APP)
    return Settings(**values, sources=sources)


_ORDER = ("flag", "env", "app config", "default")


def _describe(source: str, name: str) -> str:
    if source == "flag":
        return f"--{name.replace('_', '-')}"
    if source == "env":
        return f"environment UPGRADER_{name.upper()}"
    if source == "app config":
        return f"application config UPGRADER_{name.upper()}"
    return "default"
