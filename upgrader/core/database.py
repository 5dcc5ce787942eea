"""Engines with short connect timeouts, and error text with secrets removed.

Every message that may reach a page, a report or a log goes through
`describe_error()`, which strips the password of the URL in use and any
`user:password@` pair a driver may echo.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import re
import ssl
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

from sqlalchemy import URL, Connection, Engine, create_engine, event, make_url

from upgrader.core.deadline import NoAnswer, within
from upgrader.settings import Settings

_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):[^@\s]*@", re.I)
_PASSWORD_WORDS = re.compile(
    r"(?P<key>password|passwd|pwd)(?P<sep>\s*[=:]\s*)(?P<val>'[^']*'|\"[^\"]*\"|\S+)", re.I
)


def normalise_url(url: str | URL) -> URL:
    """Pick the driver we ship for a bare `postgresql://` or `mysql://` URL."""
    u = make_url(url)
    if u.drivername == "postgresql" and not _importable("psycopg2") and _importable("psycopg"):
        u = u.set(drivername="postgresql+psycopg")
    elif u.drivername in ("mysql", "mariadb") and not _importable("MySQLdb"):
        u = u.set(drivername=f"{u.drivername}+pymysql")
    return u


def make_engine(
    url: str | URL,
    connect_timeout: float = 5.0,
    query_timeout: float | None = None,
    **kwargs: Any,
) -> Engine:
    """An engine that gives up connecting after `connect_timeout` seconds.

    `query_timeout` bounds every statement too: right for the guard's tiny
    reads, wrong for migrations (which pass None). PyMySQL needs it even to
    connect: its `connect_timeout` covers only the TCP connect, and the server's
    handshake is read with the read timeout, which is infinite by default.
    """
    u = normalise_url(url)
    backend = u.get_backend_name()
    seconds = max(1, round(connect_timeout))
    connect_args: dict[str, Any] = {}
    if backend == "postgresql":
        connect_args["connect_timeout"] = seconds
        if query_timeout:
            connect_args["options"] = f"-c statement_timeout={int(query_timeout * 1000)}"
    elif backend in ("mysql", "mariadb"):
        connect_args["connect_timeout"] = seconds
        if query_timeout:
            connect_args["read_timeout"] = connect_args["write_timeout"] = max(
                1, round(query_timeout)
            )
    elif backend == "sqlite":
        connect_args["timeout"] = connect_timeout
    connect_args.update(kwargs.pop("connect_args", None) or {})  # the application's win
    kwargs.setdefault("pool_pre_ping", True)
    engine = create_engine(u, connect_args=connect_args, **kwargs)
    if backend != "sqlite":
        _bound_connects(engine, connect_timeout)
    return engine


def _bound_connects(engine: Engine, seconds: float) -> None:
    """Every new connection of `engine` gives up after `seconds`, whatever the driver's
    own timeouts (PyMySQL reads a silent server's handshake with its read timeout): a
    command against a hung server ends within its connect timeout, however many
    connections it would have opened."""
    dialect = engine.dialect
    connect = dialect.connect
    if dialect.driver == "pymysql":
        connect = _cheap_preferred_tls(dialect.loaded_dbapi.connections.Connection)

    @event.listens_for(engine, "do_connect")
    def bounded(dialect: Any, record: Any, cargs: Any, cparams: Any) -> Any:
        try:
            return within(seconds, lambda: connect(*cargs, **cparams), abandon=_close_quietly)
        except NoAnswer as exc:
            raise dialect.loaded_dbapi.OperationalError(
                f"the server accepted the connection but did not answer within {seconds:g} s"
            ) from exc


@functools.cache
def _cheap_preferred_tls(connection: type[Any]) -> type[Any]:
    """PyMySQL's connection, but for one thing. Told nothing about TLS, PyMySQL uses TLS
    if the server offers it, without checking the server's certificate or name, and builds
    that context with `ssl.create_default_context()` for every connection: that loads the
    system's CA certificates (17-35 ms of CPU), which a context that checks nothing never
    reads. Here the same context is built without them. Every TLS option the application
    or the URL gives goes to PyMySQL's own code, as before."""

    class CheapPreferredTLS(connection):  # type: ignore[misc]
        def _create_ssl_ctx(self, sslp: Any) -> Any:
            if sslp:  # options given: PyMySQL's own context
                return super()._create_ssl_ctx(sslp)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            context.verify_flags &= ~ssl.VERIFY_X509_STRICT
            return context

    return CheapPreferredTLS


def _close_quietly(connection: Any) -> None:
    with contextlib.suppress(Exception):
        connection.close()


def guard_engine(settings: Settings) -> Engine:
    """The engine for reading state: every wait bounded, so a hung server cannot hang a request.

    The application's own engine options (SQLALCHEMY_ENGINE_OPTIONS: TLS, pool
    settings) apply here too. Its pool does not ping a connection before each use (a round
    trip of every refresh): a read that finds its connection dead is made again, on a new
    one (core/gather.py), as SQLAlchemy's "optimistic" disconnect handling goes.
    """
    timeout = settings.connect_timeout
    options = {"pool_pre_ping": False, **settings.engine_options}  # see core/gather.py
    return make_engine(
        settings.database_url, timeout, query_timeout=max(5.0, 2 * timeout), **options
    )


def run_engine(settings: Settings) -> Engine:
    """The engine for runs (migrations, backups): a bounded connect, unbounded statements."""
    return make_engine(settings.database_url, settings.connect_timeout, **settings.engine_options)


def statement_connection(engine: Engine) -> Connection:
    """A connection for statements that each stand alone: on PostgreSQL they commit on
    their own (autocommit), which saves a refresh the BEGIN and the COMMIT or ROLLBACK,
    two round trips each time (at READ COMMITTED each statement sees a snapshot of its
    own either way). Elsewhere a transaction, to be committed as usual."""
    conn = engine.connect()
    if engine.dialect.name == "postgresql":
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
    return conn


def answers(engine: Engine, seconds: float) -> str | None:
    """Why the database does not answer a trivial query within `seconds`, or None if it
    does: the commands that then run long (backups, migrations) must not start against a
    server that would leave them waiting without end."""
    if engine.url.get_backend_name() == "sqlite":
        return None

    def probe() -> None:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")

    try:
        within(seconds, probe)
    except NoAnswer as exc:
        return f"{safe_url(engine.url)}: {exc}"
    except Exception as exc:
        return f"{safe_url(engine.url)}: {describe_error(exc, engine.url)}"
    return None


def missing_sqlite_file(url: URL) -> Path | None:
    """The path of a SQLite database file that does not exist yet, else None.

    Connecting would create it; callers report "not installed" instead.
    """
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    path = Path(url.database or "")
    return None if path.exists() else path


def safe_url(url: str | URL) -> str:
    """The URL as it may be shown anywhere: password replaced by ***."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return redact(str(url))


def redact(text: str, url: str | URL | None = None) -> str:
    """Remove the password of `url`, and anything that looks like a credential, from text."""
    if url is not None:
        try:
            password = make_url(url).password
        except Exception:
            password = None
        if password:
            for form in {str(password), quote(str(password), safe=""), quote_plus(str(password))}:
                if len(form) >= 2:
                    text = text.replace(form, "***")
    text = _CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    return _PASSWORD_WORDS.sub(lambda m: f"{m['key']}{m['sep']}***", text)


def describe_error(exc: BaseException, url: str | URL | None = None) -> str:
    """One line a person can act on: the driver's own message, redacted.

    SQLAlchemy wraps driver errors and appends the SQL and a help link; the
    driver's message (`exc.orig`) is the useful part.
    """
    orig = getattr(exc, "orig", None) or exc
    message = " ".join(str(orig).split()) or type(orig).__name__
    return redact(f"{type(orig).__name__}: {message}", url)


def _importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None
