"""Settings, resolved in one documented order, remembering where each came from.

    1. command-line flags
    2. UPGRADER_* environment variables (UPGRADER_DATABASE_URL first among them)
    3. the application: `app.config["UPGRADER_*"]`, SQLALCHEMY_DATABASE_URI,
       SQLALCHEMY_ENGINE_OPTIONS and Flask-Migrate's directory (Flask); or the
       settings of the UpgraderMiddleware a plain WSGI application is wrapped in
    4. defaults derived from the application: its instance folder (Flask), or the
       project directory that holds its migrations

There is no built-in application: with nothing configured, `resolve()` raises a
ConfigError that says what to set. `doctor` prints the source of every value.

Relative paths are made absolute here (flags and environment against the
current directory, the application's config against the application's folder),
so that a detached run, a pasted command and the server agree from any directory.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.metadata
import inspect
import os
import shlex
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version
from sqlalchemy.engine import make_url

from upgrader.apps import (
    ConfigError,
    console_script,
    executable,
    guess_ref,
    is_flask,
    load_app,
    looks_like_path,
    module_of,
    portable_ref,
)
from upgrader.inifile import find_ini, scripts_named

__all__ = ["ConfigError", "Settings", "load_app", "resolve"]


NOTHING_CONFIGURED = (
    "upgrader does not know which application to look after. Name it with "
    "--app module:factory (or UPGRADER_APP; `flask --app yourapp upgrader …` under Flask), "
    "or set UPGRADER_DATABASE_URL, UPGRADER_MIGRATIONS and UPGRADER_CODE_VERSION. "
    "`upgrader demo` shows it on a sample application."
)


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


def _pep440(value: Any) -> str:
    try:
        Version(str(value))
    except InvalidVersion:
        raise ValueError("not a PEP 440 version") from None
    return str(value)


def _options(value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError("must be a mapping of create_engine() options")
    return dict(value)


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected true or false")


def _path(value: Any) -> Path:
    return Path(str(value)).expanduser()


# name -> (converter, default with nothing else known)
_FIELDS: dict[str, tuple[Callable[[Any], Any], Any]] = {
    "database_url": (str, None),
    "migrations": (_path, None),
    "alembic_config": (_path, None),  # the application's alembic.ini, as Alembic's -c
    "code_version": (str, None),
    "distribution": (str, None),
    "version_table": (str, "alembic_version"),
    "table_prefix": (str, "upgrader_"),
    "installer_dir": (_path, None),
    "backup_dir": (_path, None),
    "connect_timeout": (_positive, 5.0),
    "lease_seconds": (_positive, 60.0),
    "lock_timeout": (_positive, 60.0),
    "releases": (_releases, {}),
    "upgrade_from": (_pep440, None),
    "engine_options": (_options, {}),
    # the request guard (docs/embedding.md)
    "cache_ttl": (_positive, 2.0),
    "node_beat": (_positive, 10.0),
    "status_path": (str, "/upgrader/status"),
    "bypass_path": (str, "/upgrader/bypass/"),
    "installer_path": (str, "/install"),
    "admin_path": (str, "/upgrader/admin"),
    "allow_paths": (_strings, ()),
    "allow_ips": (_strings, ()),
    "trusted_proxies": (_strings, ()),
    "blocked_status": (_status, 503),
    "retry_after": (_positive, 120.0),
    "template_dir": (_path, None),
    "static_dir": (_path, None),
    "locale_dir": (_path, None),
    "secret_key": (str, None),
    "public_versions": (_flag, False),
}
_PATHS = (
    "migrations",
    "alembic_config",
    "installer_dir",
    "backup_dir",
    "template_dir",
    "static_dir",
    "locale_dir",
)
_ORDER = ("flag", "env", "app config", "default")


@dataclass(frozen=True)
class Settings:
    database_url: str
    migrations: Path
    alembic_config: Path | None = None  # the alembic.ini the migrations run with, if any
    code_version: str | None = None
    distribution: str | None = None
    version_table: str = "alembic_version"
    table_prefix: str = "upgrader_"
    installer_dir: Path | None = None
    backup_dir: Path = Path("backups")
    connect_timeout: float = 5.0
    lease_seconds: float = 60.0
    lock_timeout: float = 60.0  # how long a migration waits for a table lock
    releases: dict[str, str] = field(default_factory=dict)
    upgrade_from: str | None = None  # the oldest release this code upgrades (an upgrade stop)
    engine_options: dict[str, Any] = field(default_factory=dict, compare=False)
    cache_ttl: float = 2.0
    node_beat: float = 10.0  # seconds between a process's writes to the node registry
    status_path: str = "/upgrader/status"
    bypass_path: str = "/upgrader/bypass/"
    installer_path: str = "/install"
    admin_path: str = "/upgrader/admin"
    allow_paths: tuple[str, ...] = ()
    allow_ips: tuple[str, ...] = ()
    trusted_proxies: tuple[str, ...] = ()
    blocked_status: int = 503
    retry_after: float = 120.0
    template_dir: Path | None = None
    static_dir: Path | None = None
    locale_dir: Path | None = None  # the integrator's own gettext catalogs (upgrader.i18n)
    secret_key: str | None = field(default=None, repr=False, compare=False)  # signs cookies
    public_versions: bool = False  # show code and schema versions to anonymous callers
    app: str | None = None  # the import string that reaches the application (--app)
    sources: dict[str, str] = field(default_factory=dict, compare=False)
    flags: dict[str, str] = field(default_factory=dict, compare=False)  # given on the command line
    via_flask: bool = False  # reached through `flask --app … upgrader`
    app_object: Any = field(default=None, compare=False, repr=False)

    @cached_property
    def app_ref(self) -> str | None:
        """How another process imports the application: named, or found from the object."""
        if self.app:
            return self.app
        return guess_ref(self.app_object) if self.app_object is not None else None

    @cached_property
    def cli(self) -> str:
        """The command prefix printed in fixes: pasted anywhere on the server, it reaches
        this same application (the configuration from the environment excepted, which
        the operator's shell carries)."""
        return shlex.join(self.argv(printable=True))

    def argv(self, *, printable: bool = False) -> list[str]:
        """The same prefix as words, to run a fresh process of upgrader on this application
        (one that reads the code as it is on disk now). Printed, it never holds a password."""
        ref = self.app_ref
        if ref and (self.via_flask or (self.app is None and is_flask(self.app_object))):
            words = [*executable("flask"), "--app", ref, "upgrader"]
            if "migrations" in self.flags:
                words += ["-d", self.flags["migrations"]]
            return words
        words = executable("upgrader")
        if ref:
            words += ["--app", ref]
        for name, value in self.flags.items():
            if name == "database_url" and printable:  # never a password in a page or a log
                value = _without_password(value)
            words += [f"--{name.replace('_', '-')}", value]
        return words

    @cached_property
    def short_cli(self) -> str:
        """The prefix without any server path, for pages anonymous visitors may see: the
        command as it is typed in the project's directory with its environment active."""
        words = shlex.split(self.cli)
        short = [Path(words[0]).name, *words[1:]]
        if "--app" in short:
            i = short.index("--app") + 1
            module, _, attr = short[i].rpartition(":") if ":" in short[i] else (short[i], "", "")
            if looks_like_path(module):
                name = Path(module)
                module = name.parent.name if name.stem == "__init__" else name.stem
            short[i] = f"{module}:{attr}" if attr else module
        for flag in ("--migrations", "-d", "--database-url"):
            while flag in short:  # paths and URLs: for the server's own shell only
                i = short.index(flag)
                del short[i : i + 2]
        return shlex.join(short)

    def key_command(self, command: str, option: str, directory: Path) -> str:
        """A command that prints a key file of this server (`install-key`, `admin-key`): the
        console script by its full path and the key's directory, so that it works pasted
        from any directory, in a shell without the virtualenv nor the application's
        settings (a page before login prints it: it names no database, no application)."""
        return shlex.join([*console_script(), command, option, str(directory)])

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


def resolve(
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    app: Any = None,
    *,
    via_flask: bool = False,
) -> Settings:
    """Resolve settings from flags, environment, an application and defaults.

    `flags` may hold `app` (an import string); the application is then loaded
    from it unless `app` is given as an object (the Flask extension and
    `flask upgrader` do that; the import string still names it then).
    """
    flags = {k: v for k, v in (flags or {}).items() if v is not None and v != ""}
    env = _environment(os.environ if environ is None else environ)
    app_name = flags.get("app") or env.get("app")
    if app is None and app_name:
        app = load_app(app_name)
    module = module_of(app_name) if app_name else None
    application = Application(app, module) if app is not None else None
    values, layer_of = _layered(flags, env, application)
    labels = application.labels if application else {}
    sources = {name: _describe(source, name, labels) for name, source in layer_of.items()}
    if application is not None:
        for name, (value, how) in application.defaults(values).items():
            values[name], sources[name] = value, f"default ({how})"
    _require(values, app_name, application is not None and application.flask)
    if "alembic_config" not in values:
        places = [Path.cwd(), *_anchors(application)]
        found = find_ini(Path(values["migrations"]), places)
        if found is not None:
            values["alembic_config"] = found
            sources["alembic_config"] = "found (its script_location is the migrations directory)"
    project, beside = _project(Path(values["migrations"]), values.get("alembic_config"))
    for name, folder in (("backup_dir", "backups"), ("installer_dir", "install")):
        if name not in values:
            values[name], sources[name] = project / folder, f"default (beside {beside})"
    shown: dict[str, str] = {
        n: str(values[n])
        for n in ("database_url", "migrations", "alembic_config", "code_version")
        if n in flags
    }
    return Settings(
        **values,
        app=portable_ref(app_name) if app_name else None,
        sources=sources,
        flags=shown,
        via_flask=via_flask,
        app_object=app,
    )


def _environment(environ: Mapping[str, str]) -> dict[str, str]:
    return {
        key[len("UPGRADER_") :].lower(): value
        for key, value in environ.items()
        if key.startswith("UPGRADER_") and value != ""
    }


def _layered(
    flags: Mapping[str, Any], env: Mapping[str, Any], application: Application | None
) -> tuple[dict[str, Any], dict[str, str]]:
    """Each setting from the first layer that has it, converted: (values, their layers)."""
    cwd = Path.cwd()
    layers: list[tuple[str, Mapping[str, Any], list[Path]]] = [
        ("flag", flags, [cwd]),
        ("env", env, [cwd]),
        ("app config", application.config if application else {}, _anchors(application)),
    ]
    values: dict[str, Any] = {}
    layer_of: dict[str, str] = {}
    for name, (convert, default) in _FIELDS.items():
        source, raw, anchors = next(
            ((s, layer[name], a) for s, layer, a in layers if name in layer),
            ("default", default, [cwd]),
        )
        if raw is None:
            continue
        try:
            value = convert(raw)
        except (TypeError, ValueError) as exc:
            label = f"UPGRADER_{name.upper()}"
            raise ConfigError(f"{label} ({source}): {raw!r} is not usable: {exc}") from exc
        values[name] = _absolute(value, anchors) if name in _PATHS else value
        layer_of[name] = source
    _settle(values, layer_of)
    return values, layer_of


def _settle(values: dict[str, Any], layer_of: dict[str, str]) -> None:
    """Settings that go together: the application's engine options are for the
    application's database (another named by a flag or the environment may be another
    driver altogether); of a version and a distribution to read one from, the higher layer
    decides, and on a tie the explicit version wins."""
    if layer_of.get("engine_options") == "app config" != layer_of.get("database_url"):
        del values["engine_options"], layer_of["engine_options"]
    if "code_version" in values and "distribution" in values:
        ranks = {n: _ORDER.index(layer_of[n]) for n in ("code_version", "distribution")}
        loser = "distribution" if ranks["code_version"] <= ranks["distribution"] else "code_version"
        del values[loser], layer_of[loser]


def _require(values: Mapping[str, Any], app_name: str | None, flask: bool) -> None:
    missing = [n for n in ("database_url", "migrations") if n not in values]
    if not missing:
        return
    if app_name and not flask:  # an application that gave nothing: its guard is the place
        what = " and its ".join("database" if n == "database_url" else n for n in missing)
        raise ConfigError(
            f"the application {app_name} does not say where its {what} are: pass its "
            "settings to upgrader's guard in it (UpgraderMiddleware(app, resolve({...})), or "
            "app.add_middleware(UpgraderMiddleware, settings=resolve({...})) in FastAPI and "
            f"Starlette), or set {' and '.join(f'UPGRADER_{n.upper()}' for n in missing)}"
        )
    if len(missing) == 2:
        raise ConfigError(NOTHING_CONFIGURED)
    if "database_url" in missing:
        raise ConfigError(
            "no database: set UPGRADER_DATABASE_URL (or SQLALCHEMY_DATABASE_URI in the "
            "application's config)"
        )
    raise ConfigError(
        "no migrations directory: set UPGRADER_MIGRATIONS to the application's Alembic "
        "directory (the one holding env.py)"
    )


def _without_password(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "$UPGRADER_DATABASE_URL"


def _describe(source: str, name: str, labels: Mapping[str, str]) -> str:
    if source == "flag":
        return f"--{name.replace('_', '-')}"
    if source == "env":
        return f"environment UPGRADER_{name.upper()}"
    if source == "app config":
        return labels.get(name) or f"application config UPGRADER_{name.upper()}"
    return "default"


def _absolute(path: Path, anchors: list[Path]) -> Path:
    """A relative path against the first anchor where it exists (else the first anchor)."""
    if path.is_absolute():
        return path
    for base in anchors:
        if (base / path).exists():
            return Path(os.path.normpath(base / path))
    return Path(os.path.normpath(anchors[0] / path))


def _project(migrations: Path, ini: Path | None) -> tuple[Path, str]:
    """The project's folder: where its alembic.ini is (`alembic init` puts it at the
    root), unless that is inside the migrations (Flask-Migrate's); else the migrations'
    parent."""
    if ini is not None and ini.parent != migrations:
        return ini.parent, "the alembic.ini"
    return migrations.parent, "the migrations"


def guard_settings(obj: Any) -> Settings | None:
    """The settings an application's guard was made with: the object is the guard (a
    plain WSGI or ASGI wrapper), or a Starlette or FastAPI application that added it
    (`app.add_middleware(UpgraderMiddleware, settings=...)`)."""
    own = getattr(obj, "settings", None)
    if isinstance(own, Settings):
        return own
    for entry in getattr(obj, "user_middleware", None) or ():
        given = [*getattr(entry, "args", ()), *getattr(entry, "kwargs", {}).values()]
        found = next((s for s in given if isinstance(s, Settings)), None)
        if found is not None:
            return found
    return None


def _anchors(application: Application | None) -> list[Path]:
    if application is None or application.root is None:
        return [Path.cwd()]
    return [application.root, application.root.parent, Path.cwd()]


# ------------------------------------------------------------- the application


class Application:
    """What the application object tells about its settings (layers 3 and 4)."""

    def __init__(self, obj: Any, module: Any = None) -> None:
        """`module`: where the import string found it (an application object's class lives
        in its framework's module, not the application's)."""
        self.obj = obj
        self.flask = is_flask(obj)
        self.labels: dict[str, str] = {}  # where config values came from, when not UPGRADER_*
        self.middleware = None if self.flask else guard_settings(obj)
        if self.flask:
            self.module_name: str | None = obj.import_name
            self.root: Path | None = Path(obj.root_path)
        else:
            module = module or inspect.getmodule(getattr(obj, "app", obj))
            file = getattr(module, "__file__", None)
            self.module_name = getattr(module, "__name__", None)
            self.root = Path(file).resolve().parent if file else None

    @cached_property
    def config(self) -> dict[str, Any]:
        """The UPGRADER_* keys of the application's config, without the prefix."""
        if self.middleware is not None:  # an UpgraderMiddleware made with its own settings
            wrapped = self.middleware
            self.labels = {
                n: f"the wrapped UpgraderMiddleware ({s})" for n, s in wrapped.sources.items()
            }
            return {
                name: getattr(wrapped, name)
                for name in _FIELDS
                if not wrapped.sources.get(name, "default").startswith("default")
            }
        config: Mapping[str, Any] = getattr(self.obj, "config", None) or {}
        values = {
            key[len("UPGRADER_") :].lower(): value
            for key, value in config.items()
            if key.startswith("UPGRADER_") and value is not None
        }
        for name, key in (
            ("database_url", "SQLALCHEMY_DATABASE_URI"),
            ("engine_options", "SQLALCHEMY_ENGINE_OPTIONS"),
            ("secret_key", "SECRET_KEY"),  # Flask's: the same on every node of the site
        ):
            if name not in values and config.get(key):
                values[name], self.labels[name] = config[key], f"application config {key}"
        migrate = getattr(self.obj, "extensions", {}).get("migrate")
        directory = getattr(migrate, "directory", None)
        if "migrations" not in values and directory:
            values["migrations"], self.labels["migrations"] = directory, "Flask-Migrate's directory"
        return values

    def defaults(self, known: Mapping[str, Any]) -> dict[str, tuple[Any, str]]:
        """Values the application implies where nothing set them: (value, how)."""
        found: dict[str, tuple[Any, str]] = {}
        if self.flask:
            instance = Path(self.obj.instance_path)
            for name, folder in (("backup_dir", "backups"), ("installer_dir", "install")):
                if name not in known:
                    found[name] = (instance / folder, "the application's instance folder")
        if "migrations" not in known and self.root is not None:
            for base in (self.root, self.root.parent):
                if (base / "migrations" / "env.py").is_file():
                    found["migrations"] = (base / "migrations", "beside the application")
                    break
                scripts = scripts_named(base / "alembic.ini")
                if scripts is not None:
                    found["migrations"] = (scripts, f"the script_location of {base}/alembic.ini")
                    break
        if "code_version" not in known and "distribution" not in known:
            version = self._version()
            if version is not None:
                found["code_version"] = version
        return found

    def _version(self) -> tuple[str, str] | None:
        """The installed distribution that provides the application's package, or its
        `__version__`."""
        if not self.module_name:
            return None
        top = self.module_name.split(".")[0]
        for dist in importlib.metadata.packages_distributions().get(top, []):
            try:
                return importlib.metadata.version(dist), f"installed distribution {dist}"
            except importlib.metadata.PackageNotFoundError:
                continue
        for name in (self.module_name, top):
            version = getattr(sys.modules.get(name), "__version__", None)
            if isinstance(version, str):
                return version, f"{name}.__version__"
        return None
