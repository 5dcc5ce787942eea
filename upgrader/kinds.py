"""WSGI or ASGI: each guard refuses the other kind of application when it is built, not at
the first request after an upgrade (when a WSGI guard around FastAPI would answer 500)."""

from __future__ import annotations

import inspect
from typing import Any

WSGI_GUARD = "upgrader.web.middleware.UpgraderMiddleware"
ASGI_GUARD = "upgrader.asgi.UpgraderMiddleware"


def is_asgi(app: Any) -> bool:
    """An ASGI application is a coroutine function of (scope, receive, send), or an object
    whose `__call__` is one (FastAPI, Starlette, Litestar)."""
    if inspect.iscoroutinefunction(app):
        return True
    return callable(app) and inspect.iscoroutinefunction(type(app).__call__)


def is_wsgi(app: Any) -> bool:
    """A WSGI application: a plain callable of (environ, start_response)."""
    if not callable(app) or is_asgi(app):
        return False
    try:
        parameters = inspect.signature(app).parameters.values()
    except (TypeError, ValueError):  # a builtin or an extension type: cannot tell
        return False
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) == 2


def refuse_asgi(app: Any) -> None:
    if is_asgi(app):
        raise TypeError(
            f"{_name(app)} is an ASGI application; {WSGI_GUARD} guards WSGI applications. "
            f"Use {ASGI_GUARD}: app.add_middleware(UpgraderMiddleware, settings=...) in "
            "FastAPI or Starlette, or UpgraderMiddleware(app, settings) around any ASGI app."
        )


def refuse_wsgi(app: Any) -> None:
    if is_wsgi(app):
        raise TypeError(
            f"{_name(app)} is a WSGI application; {ASGI_GUARD} guards ASGI applications. "
            f"Use {WSGI_GUARD}: app.wsgi_app = UpgraderMiddleware(app.wsgi_app, settings), "
            "or Upgrader(app) for Flask."
        )


def _name(app: Any) -> str:
    kind = app if inspect.isroutine(app) else type(app)
    return f"{getattr(kind, '__module__', '?')}.{getattr(kind, '__qualname__', repr(app))}"
