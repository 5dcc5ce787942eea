"""The request guard around any WSGI application: `UpgraderMiddleware(app, settings)`.

A thin adapter: in the steady state (the site simply open, the diagnosis fresh) it calls
the application at once, with no query and no lock; otherwise it reads the request into
the gate's plain terms (core/gate.py), which decides, and writes its answer back. It also
mounts upgrader's own applications there: the installer while install/ exists, and the
admin console.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from functools import partial
from time import monotonic as _monotonic
from typing import Any

from upgrader.console.context import USER
from upgrader.core.cache import DiagnosisCache
from upgrader.core.diagnosis import Diagnosis
from upgrader.core.gate import Application, Authorize, Mount, Page
from upgrader.core.requests import Request
from upgrader.http.pages import banner_html
from upgrader.http.wsgi import (
    Call,
    Held,
    StartResponse,
    WSGIApp,
    close,
    home_page,
    request_of,
    respond,
    scheme_of,
)
from upgrader.kinds import refuse_asgi
from upgrader.settings import Settings, resolve
from upgrader.web import background
from upgrader.web.mounts import Mounts, assemble

log = logging.getLogger("upgrader")

__all__ = ["Authorize", "StartResponse", "UpgraderMiddleware", "WSGIApp", "banner_html"]


class UpgraderMiddleware:
    """Wrap a WSGI application: `app.wsgi_app = UpgraderMiddleware(app.wsgi_app, settings)`."""

    def __init__(
        self,
        app: WSGIApp,
        settings: Settings | None = None,
        *,
        cache: DiagnosisCache | None = None,
        poll_seconds: float = 5.0,
        bypass_lifetime: float = 12 * 3600,
        authorize: Authorize | None = None,
    ) -> None:
        refuse_asgi(app)
        self.app = app
        self.settings = settings or resolve()
        self.cache, self.gate, _ = assemble(self.settings, cache, poll_seconds, bypass_lifetime)
        self.authorize = authorize  # who may use the admin console (else its key)
        self._status_path = self.settings.status_path
        self._console_path = self.gate.console
        self.mounts = Mounts(
            self.settings,
            self.cache,
            key=self.gate.key,
            home=partial(home_page, app),
            integrated=authorize is not None,
        )
        background.register(self)

    @property
    def key(self) -> bytes:
        """The key that signs bypass cookies."""
        return self.gate.key

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        began = _monotonic()
        expires, site_open = self.cache.fast
        if (
            site_open
            and began < expires
            and path != self._status_path
            and not path.startswith(self._console_path)
        ):
            return self._watched(environ, start_response, began)  # no query, no lock
        req = request_of(environ)
        answer = self.gate.answer(req, self.cache.get())
        if isinstance(answer, Page):
            return respond(answer, start_response)
        if isinstance(answer, Mount):
            return self._mount(answer, environ, start_response)
        return self._application(answer, req, environ, start_response, began)

    def is_admin(self, environ: dict[str, Any], d: Diagnosis) -> bool:
        """Whether this request comes from an administrator (allow-list, bypass cookie)."""
        return self.gate.is_admin(request_of(environ), d)

    # -------------------------------------------------------------- application

    def _application(
        self,
        answer: Application,
        req: Request,
        environ: dict[str, Any],
        start_response: StartResponse,
        began: float,
    ) -> Iterable[bytes]:
        environ["upgrader.diagnosis"] = answer.diagnosis
        environ["upgrader.admin"] = answer.admin
        if answer.banner:
            environ["upgrader.banner"] = answer.banner
        if answer.guarded:
            return self._guarded(answer.diagnosis, req, environ, start_response)
        if not answer.watched:
            return self.app(environ, start_response)
        if answer.banner:
            return self._with_banner(req, environ, start_response, began)
        return self._watched(environ, start_response, began, req)

    def _watched(
        self,
        environ: dict[str, Any],
        start_response: StartResponse,
        began: float,
        req: Request | None = None,
    ) -> Iterable[bytes]:
        """The application, for a request the site serves. When it fails (a 5xx answer, or
        an exception) because the database has gone away since the last refresh, the gate
        answers with Err1 instead; a failure of the application's own passes unchanged."""
        held = Held(start_response)
        try:
            body = self.app(environ, held)
        except Exception:
            down = self.gate.failed(req or request_of(environ), self.cache.recheck(began))
            if down is None:
                raise
            return respond(down, start_response)
        held.open = False
        if held.status is None:
            return body
        down = self.gate.failed(req or request_of(environ), self.cache.recheck(began))
        if down is None:
            return held.release(body)
        close(body)
        return respond(down, start_response)

    def _with_banner(
        self, req: Request, environ: dict[str, Any], start_response: StartResponse, began: float
    ) -> Iterable[bytes]:
        """The application's response, with the banner after `<body>` of an HTML page (not in
        fragments, nor where the page placed it with `upgrader_banner()`). Only while there is
        a banner to show: the steady state never comes here."""
        try:
            called = Call(self.app, environ)
        except Exception:
            down = self.gate.failed(req, self.cache.recheck(began))
            if down is None:
                raise
            return respond(down, start_response)
        if called.status[:1] == "5":
            down = self.gate.failed(req, self.cache.recheck(began))
            if down is not None:
                called.close()
                return respond(down, start_response)
        return called.respond(start_response, environ)

    def _guarded(
        self, d: Diagnosis, req: Request, environ: dict[str, Any], start_response: StartResponse
    ) -> Iterable[bytes]:
        """An administrator in a mismatch: the application, or the state if it fails."""
        try:
            called = Call(self.app, environ)
        except Exception as exc:
            log.warning("the application failed for an administrator in %s: %r", d.state, exc)
            page = self.gate.failed_for_admin(req, d, f"{type(exc).__name__}: {exc}")
            return respond(page, start_response)
        if called.status[:1] == "5":
            called.close()
            error = f"the application answered {called.status}"
            return respond(self.gate.failed_for_admin(req, d, error), start_response)
        return called.respond(start_response, environ)

    # ------------------------------------------------------------------- mounts

    def _mount(
        self, answer: Mount, environ: dict[str, Any], start_response: StartResponse
    ) -> Iterable[bytes]:
        """The installer or the console, below their prefix; as the visitor reached them
        (https behind a trusted proxy: their cookies are Secure)."""
        if answer.app == "installer":
            mounted = self.mounts.installer()
        else:
            self._authorize(environ)
            mounted = self.mounts.console()
        if isinstance(mounted, Page):
            return respond(mounted, start_response)
        root = environ.get("SCRIPT_NAME", "")
        environ["wsgi.url_scheme"] = scheme_of(environ, self.gate.trusted)
        environ["upgrader.site_root"] = root
        environ["SCRIPT_NAME"] = root + answer.prefix
        environ["PATH_INFO"] = (environ.get("PATH_INFO") or "/")[len(answer.prefix) :] or "/"
        return mounted(environ, start_response)

    def _authorize(self, environ: dict[str, Any]) -> None:
        """The integrator's check sees the request as the application would (its own
        path, its own cookies)."""
        if self.authorize is None:
            return
        try:
            environ[USER] = self.authorize(environ)
        except Exception as exc:  # a broken check admits nobody, and never shows a trace
            log.warning("the console's authorize check failed: %r", exc)
            environ[USER] = None
