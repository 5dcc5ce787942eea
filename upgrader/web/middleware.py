"""The request guard: WSGI middleware around any application.

It renders the cached diagnosis and decides only who gets through:

- the status endpoint, the installer's paths and configured paths (health checks) always;
- administrators: an allow-listed client address (X-Forwarded-For only from trusted proxies),
  or a valid bypass cookie, got from the secret bypass URL;
- everyone, when the state is ok.

Everyone else gets "Down for Maintenance (ErrN)": a 503 (configurable) with Retry-After,
no-store and X-Upgrader-State; HTML for people, RFC 9457 problem+json for API clients.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from http import HTTPStatus
from pathlib import Path
from time import monotonic as _monotonic
from typing import Any
from urllib.parse import parse_qs

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, PackageLoader, select_autoescape

from upgrader import i18n
from upgrader.core.diagnosis import Diagnosis, State
from upgrader.core.records import Maintenance
from upgrader.core.times import utcnow
from upgrader.settings import Settings, resolve
from upgrader.web import clients
from upgrader.web.cache import DiagnosisCache
from upgrader.web.throttle import Throttle

log = logging.getLogger("upgrader")

StartResponse = Callable[..., Any]
Authorize = Callable[[dict[str, Any]], Any]
"""Who may use the admin console: given the WSGI environ, falsy refuses, a string names
the administrator (docs/maintenance.md)."""
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

ERR2 = (
    State.UPGRADE_PENDING,
    State.UPGRADE_RUNNING,
    State.UPGRADE_INTERRUPTED,
    State.UPGRADE_FAILED,
)


def public_status(d: Diagnosis, versions: bool = False) -> dict[str, Any]:
    """What any anonymous caller may see (Nextcloud's status.php in spirit): the state, a
    calm summary and when to come back. Versions (which tell an attacker what to try) only
    with UPGRADER_PUBLIC_VERSIONS; administrators get everything."""
    m = d.maintenance
    active = m is not None and m.active(d.checked_at)
    body: dict[str, Any] = {
        "installed": d.state is not State.NOT_INSTALLED,
        "state": d.state.value,
        "code": d.code,
        "maintenance": d.state is State.MAINTENANCE or active,
        "needs_upgrade": d.state in ERR2
        or d.state in (State.ONLINE_PENDING, State.POST_DEPLOY_PENDING),
        "summary": d.summary,
    }
    if versions:
        body["versions"] = {"code": d.code_version, "schema": d.schema_version}
    if m is not None and m.mode != "off" and (active or m.upcoming(d.checked_at)):
        body["window"] = {
            "level": m.mode,
            "start": _iso(m.start),
            "end": _iso(m.end),
            "until": _iso(m.until),
            "message": m.message,
        }
    return body


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat() + "Z"


def _utc(value: dt.datetime) -> str:
    return f"{value:%Y-%m-%d %H:%M} UTC"


def maintenance_notice(m: Maintenance, now: dt.datetime, _: i18n.Translate) -> str:
    """A window as people read it: when it begins (or began) and when it should end."""
    end = m.end or m.until
    if m.upcoming(now) and m.start is not None:
        if end is not None:
            return _("Scheduled maintenance from %(start)s until about %(end)s.") % {
                "start": _utc(m.start),
                "end": _utc(end),
            }
        return _("Scheduled maintenance from %(start)s.") % {"start": _utc(m.start)}
    since = m.start or m.set_at
    if since is not None and end is not None:
        return _("Maintenance since %(start)s, until about %(end)s.") % {
            "start": _utc(since),
            "end": _utc(end),
        }
    if since is not None:
        return _("Maintenance since %(start)s.") % {"start": _utc(since)}
    if end is not None:
        return _("Maintenance until about %(end)s.") % {"end": _utc(end)}
    return _("Maintenance.")


class Pages:
    """The blocked page, from the integrator's template directory first, then ours."""

    def __init__(self, template_dir: Any = None) -> None:
        loaders: list[Any] = [PackageLoader("upgrader.web", "templates")]
        if template_dir:
            loaders.insert(0, FileSystemLoader(str(template_dir)))
        self.env = Environment(loader=ChoiceLoader(loaders), autoescape=select_autoescape())

    def admin(self, d: Diagnosis, *, installer: str | None, error: str | None, go_on: str) -> str:
        """What an administrator sees while the database does not fit the code."""
        return self.env.get_template("admin.html").render(
            d=d, installer=installer, error=error, go_on=go_on
        )

    def blocked(
        self,
        d: Diagnosis,
        *,
        settings: Settings,
        poll_seconds: float,
        refresh: int,
        language: str = i18n.DEFAULT,
    ) -> str:
        m = d.maintenance
        run = d.run
        back = (m.until or m.end) if m is not None and m.active(d.checked_at) else None
        _ = i18n.gettext_for(language, settings.locale_dir)
        return self.env.get_template("blocked.html").render(
            _=_,
            lang=language,
            headline=d.headline_in(_),
            summary=d.summary_in(_),
            state=d.state.value,
            code=d.code,
            step=run.step if run else 0,
            steps=run.steps if run else 0,
            until=_iso(back) if back else None,
            until_text=_utc(back) if back else "",
            status_url=settings.status_path,
            poll_seconds=poll_seconds,
            refresh=refresh,
        )


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
        self.app = app
        self.settings = settings or resolve()
        self.cache = cache or DiagnosisCache(self.settings)
        self.poll_seconds = poll_seconds
        self.bypass_lifetime = bypass_lifetime
        self.trusted = clients.networks(self.settings.trusted_proxies)
        self.allow = clients.networks(self.settings.allow_ips)
        self.pages = Pages(self.settings.template_dir)
        self.key = clients.site_key(self.settings.secret_key, Path(self.settings.backup_dir))
        self.bypass_throttle = Throttle()
        # the blocked page, rendered once per diagnosis and language
        self._pages: tuple[Diagnosis, int, dict[str, bytes]] | None = None
        status = self.settings.blocked_status
        self._blocked_line = f"{status} {_reason(status)}"
        self._status_path = self.settings.status_path
        self._wizard: WSGIApp | None = None
        self.authorize = authorize  # who may use the admin console (else its key)
        self._console: WSGIApp | None = None
        self._admin_path = self.settings.admin_path.rstrip("/")
        self._maintenance_allow: tuple[tuple[str, ...], tuple[clients.Network, ...]] = ((), ())
        from upgrader.web import background

        background.register(self)

    # ------------------------------------------------------------------ WSGI

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        if path != self._status_path:
            began = _monotonic()
            expires, site_open = self.cache.fast
            if site_open and began < expires and not path.startswith(self._admin_path):
                return self._watched(environ, start_response, began)  # no query, no lock
            self.cache.registration.kind = "web"  # this process answers requests
            return self._guard(environ, start_response, path, self.cache.get(), began)
        return self._status(environ, start_response)

    def _guard(
        self,
        environ: dict[str, Any],
        start_response: StartResponse,
        path: str,
        d: Diagnosis,
        began: float,
    ) -> Iterable[bytes]:
        installer = self.settings.installer_path.rstrip("/")
        if path == installer or path.startswith(installer + "/"):
            return self._installer(environ, start_response, installer, path)
        if path == self._admin_path or path.startswith(self._admin_path + "/"):
            return self._admin_console(environ, start_response, path)
        if path.startswith(self.settings.bypass_path):
            return self._bypass(environ, start_response, path, d)
        admin = self.is_admin(environ, d)
        environ["upgrader.diagnosis"] = d
        environ["upgrader.admin"] = admin
        language = i18n.negotiate(environ.get("HTTP_ACCEPT_LANGUAGE"), self.settings.locale_dir)
        banner = self.banner(d, admin, language)
        if banner:
            environ["upgrader.banner"] = banner
        if d.state.serving:
            if banner:
                return self._with_banner(environ, start_response, began)
            return self._watched(environ, start_response, began)
        if self._exempt(path):
            return self.app(environ, start_response)
        if admin:
            return self._for_admin(environ, start_response, d, began)
        if d.state is State.NOT_INSTALLED and d.installer_present and not d.missing_file:
            start_response(
                "303 See Other",
                [("Location", self.settings.installer_path), ("Cache-Control", "no-store")],
            )
            return [b""]
        return self.blocked(environ, start_response, d)

    # --------------------------------------------------------- administrators

    def _for_admin(
        self, environ: dict[str, Any], start_response: StartResponse, d: Diagnosis, began: float
    ) -> Iterable[bytes]:
        """During maintenance an administrator simply gets the site. While the database
        does not fit the code, they first get a page with the state, its fix and the way
        to the installer, and may go on to the application from there; if the application
        then fails (it is running against the wrong schema), that page again, with the
        error, never a bare 500."""
        if d.state is State.MAINTENANCE:
            return self._with_banner(environ, start_response, began)
        if wants_json(environ):  # an API client: the application, or the state if it fails
            return self._guarded_call(environ, start_response, d)
        query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        if CONTINUE in query:
            location = environ.get("SCRIPT_NAME", "") + (environ.get("PATH_INFO") or "/")
            start_response(
                "303 See Other",
                [
                    ("Location", location),
                    (
                        "Set-Cookie",
                        f"{CONTINUE}=1; Path=/; Max-Age=3600; HttpOnly; SameSite=Lax"
                        + ("; Secure" if clients.scheme(environ, self.trusted) == "https" else ""),
                    ),
                    ("Cache-Control", "no-store"),
                ],
            )
            return [b""]
        if clients.read_cookie(environ, CONTINUE) is None:
            return self._admin_page(environ, start_response, d, None)
        return self._guarded_call(environ, start_response, d)

    def _guarded_call(
        self, environ: dict[str, Any], start_response: StartResponse, d: Diagnosis
    ) -> Iterable[bytes]:
        try:
            called = _Call(self.app, environ)
        except Exception as exc:
            log.warning("the application failed for an administrator in %s: %r", d.state, exc)
            error = f"{type(exc).__name__}: {exc}"
            return self._failed_for_admin(environ, start_response, d, error)
        if called.status[:1] == "5":
            called.close()
            error = f"the application answered {called.status}"
            return self._failed_for_admin(environ, start_response, d, error)
        return called.respond(start_response, environ)

    def _failed_for_admin(
        self, environ: dict[str, Any], start_response: StartResponse, d: Diagnosis, error: str
    ) -> Iterable[bytes]:
        """The application failed an administrator while the database does not fit the
        code: the state instead (the page, or problem+json for an API client)."""
        if wants_json(environ):
            return self.blocked(environ, start_response, d)
        return self._admin_page(environ, start_response, d, error)

    def _watched(
        self, environ: dict[str, Any], start_response: StartResponse, began: float
    ) -> Iterable[bytes]:
        """The application, for a request the site serves. When it fails (a 5xx answer, or
        an exception) because the database has gone away since the last refresh, the
        visitor gets Err1 instead, as every request will from the next refresh on; a
        failure of the application's own passes unchanged."""
        held = _Held(start_response)
        try:
            body = self.app(environ, held)
        except Exception:
            down = self._outage(began)
            if down is None:
                raise
            return self._down(environ, start_response, down)
        held.open = False
        if held.status is None:
            return body
        down = self._outage(began)
        if down is None:
            return held.release(body)
        close = getattr(body, "close", None)
        if close is not None:
            close()
        return self._down(environ, start_response, down)

    def _outage(self, began: float) -> Diagnosis | None:
        """The diagnosis, made after the failed request `began`, if it says Err1."""
        d = self.cache.recheck(began)
        return d if d.state is State.DATABASE_UNAVAILABLE else None

    def _down(
        self, environ: dict[str, Any], start_response: StartResponse, d: Diagnosis
    ) -> Iterable[bytes]:
        client = clients.client_address(environ, self.trusted) or "unknown"
        log.warning(
            "the application failed %s for %s while the database is unavailable: Err1 instead",
            environ.get("PATH_INFO") or "/",
            client,
        )
        if self.is_admin(environ, d):
            error = "the application failed: its database cannot be reached"
            return self._admin_page(environ, start_response, d, error)
        return self.blocked(environ, start_response, d)

    def _with_banner(
        self, environ: dict[str, Any], start_response: StartResponse, began: float
    ) -> Iterable[bytes]:
        """The application's response, with the banner after `<body>` of an HTML page (not in
        fragments, nor where the page placed it with `upgrader_banner()`). Only while there is
        a banner to show: the steady state never comes here."""
        try:
            called = _Call(self.app, environ)
        except Exception:
            down = self._outage(began)
            if down is None:
                raise
            return self._down(environ, start_response, down)
        if called.status[:1] == "5":
            down = self._outage(began)
            if down is not None:
                called.close()
                return self._down(environ, start_response, down)
        return called.respond(start_response, environ)

    def _admin_page(
        self,
        environ: dict[str, Any],
        start_response: StartResponse,
        d: Diagnosis,
        error: str | None,
    ) -> Iterable[bytes]:
        html = self.pages.admin(
            d,
            installer=self.settings.installer_path if d.installer_present else None,
            error=error,
            go_on=f"?{CONTINUE}",
        ).encode()
        status = self.settings.blocked_status
        start_response(
            f"{status} {_reason(status)}",
            [
                ("Content-Type", "text/html; charset=utf-8"),
                ("Content-Length", str(len(html))),
                ("Cache-Control", "no-store"),
                ("X-Upgrader-State", d.state.value),
                *SECURITY_HEADERS,
            ],
        )
        return [b""] if environ.get("REQUEST_METHOD") == "HEAD" else [html]

    def _exempt(self, path: str) -> bool:
        return any(fnmatch.fnmatchcase(path, pattern) for pattern in self.settings.allow_paths)

    def _installer(
        self, environ: dict[str, Any], start_response: StartResponse, prefix: str, path: str
    ) -> Iterable[bytes]:
        """The wizard, while install/ exists: checked on every such request, so deleting
        the directory switches the installer off at once, without a restart."""
        directory = self.settings.installer_dir
        if directory is None or not os.path.isdir(directory):
            return _plain(
                start_response,
                "404 Not Found",
                "The installer is not on this server (its install/ directory was removed).",
            )
        if self._wizard is None:
            from upgrader.wizard.app import create_wizard  # only where an installer is used

            try:
                self._wizard = create_wizard(self.settings, self.cache, site=self.app)
            except OSError as exc:
                return _plain(
                    start_response,
                    "500 Internal Server Error",
                    f"The installer cannot start: it must be able to write its keys into "
                    f"{directory} ({exc.strerror or exc}). Make that directory writable by the "
                    "web server's user, or run `upgrader upgrade` on the server instead.",
                )
        environ["wsgi.url_scheme"] = clients.scheme(environ, self.trusted)  # Secure cookies
        environ["upgrader.site_root"] = environ.get("SCRIPT_NAME", "")
        environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + prefix
        environ["PATH_INFO"] = path[len(prefix) :] or "/"
        return self._wizard(environ, start_response)

    def _admin_console(
        self, environ: dict[str, Any], start_response: StartResponse, path: str
    ) -> Iterable[bytes]:
        """The admin console, in every state. The integrator's check sees the request as
        the application would (its own path, its own cookies)."""
        from upgrader.web.console import USER, create_console

        if self.authorize is not None:
            try:
                environ[USER] = self.authorize(environ)
            except Exception as exc:  # a broken check admits nobody, and never shows a trace
                log.warning("the console's authorize check failed: %r", exc)
                environ[USER] = None
        if self._console is None:
            self._console = create_console(
                self.settings,
                self.cache,
                signing_key=self.key,
                integrated=self.authorize is not None,
            )
        if path == self._admin_path:  # the console's pages are relative to its root
            location = environ.get("SCRIPT_NAME", "") + path + "/"
            start_response("308 Permanent Redirect", [("Location", location)])
            return [b""]
        environ["wsgi.url_scheme"] = clients.scheme(environ, self.trusted)  # Secure cookies
        environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + self._admin_path
        environ["PATH_INFO"] = path[len(self._admin_path) :]
        return self._console(environ, start_response)

    # ----------------------------------------------------------------- who

    def is_admin(self, environ: dict[str, Any], d: Diagnosis) -> bool:
        stored = self._db_allow(d)
        if self.allow or stored:  # no address is even parsed where nobody is allow-listed
            address = clients.client_ip(environ, self.trusted)
            if clients.within(address, self.allow) or clients.within(address, stored):
                return True
        m = d.maintenance
        secret = m.secret_hash if m is not None else None
        if not secret or "HTTP_COOKIE" not in environ:
            return False
        return clients.cookie_valid(self.key, clients.read_cookie(environ), secret)

    def _db_allow(self, d: Diagnosis) -> tuple[clients.Network, ...]:
        entries = d.maintenance.allow if d.maintenance is not None else ()
        if entries != self._maintenance_allow[0]:
            parsed: list[clients.Network] = []
            for entry in entries:
                try:
                    parsed.extend(clients.networks([entry]))
                except ValueError:
                    continue  # a bad stored entry admits no one (`maintenance status` shows it)
            self._maintenance_allow = (entries, tuple(parsed))
        return self._maintenance_allow[1]

    def banner(
        self, d: Diagnosis, admin: bool, language: str = i18n.DEFAULT
    ) -> dict[str, str] | None:
        """A notice for the page, in the visitor's language: a maintenance window (when it
        began or begins, and its expected end), or what administrators must know."""
        m = d.maintenance
        now = d.checked_at
        _ = i18n.gettext_for(language, self.settings.locale_dir)
        if admin and d.state is not State.OK:
            return {"level": "admin", "text": f"{d.headline_in(_)} ({d.state.value}): {d.fix}"}
        if m is not None and m.mode != "off" and (m.active(now) or m.upcoming(now)):
            text = maintenance_notice(m, now, _)
            return {"level": "maintenance", "text": f"{text} {m.message or ''}".strip()}
        if admin and d.installer_present:
            return {
                "level": "admin",
                "text": _(
                    "The upgrade is complete: delete the install/ directory from the server, "
                    "so nobody can run the installer again."
                ),
            }
        return None

    # ------------------------------------------------------------ responses

    def retry_after(self, d: Diagnosis) -> int:
        m = d.maintenance
        if d.state is State.MAINTENANCE and m is not None:
            end = m.until or m.end
            if end is not None:
                return max(1, int((end - utcnow()).total_seconds()))
        if d.state is State.UPGRADE_RUNNING:
            return 30
        return int(self.settings.retry_after)

    def blocked(
        self, environ: dict[str, Any], start_response: StartResponse, d: Diagnosis
    ) -> Iterable[bytes]:
        status = self.settings.blocked_status
        retry = self.retry_after(d)
        line = self._blocked_line
        headers = [
            ("Retry-After", str(retry)),
            ("Cache-Control", "no-store"),
            ("X-Upgrader-State", d.state.value),
            *SECURITY_HEADERS,
        ]
        if wants_json(environ):
            problem = {
                "type": f"urn:upgrader:state:{d.state.value}",
                "title": d.headline,
                "status": status,
                "detail": d.summary,
                "state": d.state.value,
                "code": d.code,
                "retry_after": retry,
            }
            body = json.dumps(problem).encode()
            headers.append(("Content-Type", "application/problem+json"))
        else:
            language = i18n.negotiate(environ.get("HTTP_ACCEPT_LANGUAGE"), self.settings.locale_dir)
            body = self._blocked_page(d, min(retry, 60), language)
            headers.append(("Content-Type", "text/html; charset=utf-8"))
            headers.append(("Content-Language", language))
            headers.append(("Vary", "Accept-Language"))
        headers.append(("Content-Length", str(len(body))))
        start_response(line, headers)
        return [b""] if environ.get("REQUEST_METHOD") == "HEAD" else [body]

    def _blocked_page(self, d: Diagnosis, refresh: int, language: str) -> bytes:
        """Rendered once per diagnosis and language (so once per refresh at most), then
        served from memory: during an outage every request is a blocked one."""
        pages = self._pages
        if pages and pages[0] is d and pages[1] == refresh:
            cached = pages[2].get(language)
            if cached is not None:
                return cached
        else:
            pages = self._pages = (d, refresh, {})
        html = self.pages.blocked(
            d,
            settings=self.settings,
            poll_seconds=self.poll_seconds,
            refresh=refresh,
            language=language,
        )
        pages[2][language] = html.encode()
        return pages[2][language]

    def _status(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        self.cache.registration.kind = "web"
        d = self.cache.get()
        admin = self.is_admin(environ, d)
        body: dict[str, Any] = public_status(d, versions=admin or self.settings.public_versions)
        if admin:
            if d.state is State.UPGRADE_RUNNING and d.run is not None:
                body["progress"] = {"step": d.run.step, "steps": d.run.steps}
            body["diagnosis"] = d.to_dict()
            body.update(self._nodes(d))
        query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        ready = d.state.serving  # a load balancer keeps every node that serves
        code = 200 if "ready" not in query or ready else 503
        payload = json.dumps(body).encode()
        start_response(
            f"{code} {_reason(code)}",
            [
                ("Content-Type", "application/json"),
                ("Cache-Control", "no-store"),
                ("X-Upgrader-State", d.state.value),
                ("Content-Length", str(len(payload))),
                *SECURITY_HEADERS,
            ],
        )
        return [b""] if environ.get("REQUEST_METHOD") == "HEAD" else [payload]

    def _nodes(self, d: Diagnosis) -> dict[str, Any]:
        """For administrators: this process, and every process the registry has seen."""
        from upgrader.core import nodes

        host, pid, _ = nodes.this_process().rsplit(":", 2)
        found: dict[str, Any] = {
            "node": {"host": host, "pid": int(pid), "code_version": d.code_version}
        }
        if not d.state.readable:
            return found
        try:
            with self.cache.engine.connect() as conn:
                live = nodes.live(
                    conn, self.cache.registration.tables, beat=self.settings.node_beat
                )
        except Exception as exc:  # the registry is a help, never a reason to fail
            log.warning("cannot read the node registry: %r", exc)
            return found
        found["nodes"] = [n.to_dict(d.checked_at) for n in live]
        found["nodes_behind"] = nodes.summary(live, d.code_version)
        return found

    def _bypass(
        self, environ: dict[str, Any], start_response: StartResponse, path: str, d: Diagnosis
    ) -> Iterable[bytes]:
        secret = path[len(self.settings.bypass_path) :]
        m = d.maintenance
        stored = m.secret_hash if m is not None else None
        client = clients.client_address(environ, self.trusted) or "unknown"
        if self.bypass_throttle.wait(client) > 0:
            log.warning("bypass refused to %s: too many wrong secrets", client)
            return self.blocked(environ, start_response, d)  # reveals nothing
        if not secret or not clients.check_secret(secret, stored):
            count = self.bypass_throttle.failed(client)
            log.warning("bypass refused to %s: wrong secret (%d in a row)", client, count)
            return self.blocked(environ, start_response, d)  # reveals nothing
        self.bypass_throttle.succeeded(client)
        log.info("bypass granted to %s (cookie for %ds)", client, self.bypass_lifetime)
        value, _ = clients.make_cookie(self.key, stored or "", self.bypass_lifetime)
        secure = "; Secure" if clients.scheme(environ, self.trusted) == "https" else ""
        cookie = (
            f"{clients.COOKIE}={value}; Path=/; Max-Age={int(self.bypass_lifetime)}; "
            f"HttpOnly; SameSite=Lax{secure}"
        )
        start_response(
            "303 See Other",
            [("Location", "/"), ("Set-Cookie", cookie), ("Cache-Control", "no-store")],
        )
        return [b""]


SECURITY_HEADERS = (
    ("X-Frame-Options", "DENY"),
    ("Content-Security-Policy", "frame-ancestors 'none'"),
    ("X-Content-Type-Options", "nosniff"),
)
"""upgrader's own pages are never framed (clickjacking) nor sniffed."""


CONTINUE = "upgrader-continue"
"""An administrator who chose to go on to the application while its database does not fit."""


class _Held:
    """start_response for a request the site serves: an answer of 5xx is held back until
    the guard knows whether the database has gone away; any other passes on at once, and
    so does everything once the application has returned (a generator that answers late
    is passed through as it is)."""

    __slots__ = ("exc_info", "headers", "open", "start_response", "status", "written")

    def __init__(self, start_response: StartResponse) -> None:
        self.start_response = start_response
        self.status: str | None = None
        self.headers: list[Any] = []
        self.exc_info: Any = None
        self.written: list[bytes] = []
        self.open = True

    def __call__(self, status: str, headers: list[Any], exc_info: Any = None) -> Any:
        if self.open and status[:1] == "5":
            self.status, self.headers, self.exc_info = status, headers, exc_info
            return self.written.append
        return self.start_response(status, headers, exc_info)

    def release(self, body: Iterable[bytes]) -> Iterable[bytes]:
        """The held answer, passed on as the application gave it."""
        write = self.start_response(self.status, self.headers, self.exc_info)
        for chunk in self.written:
            write(chunk)
        return body


class _Call:
    """The application called with a start_response of ours, for the rare paths that must
    see its answer before passing it on (an administrator in a mismatch; a banner to
    insert). HTML is read whole to insert the banner; anything else streams through."""

    def __init__(self, app: WSGIApp, environ: dict[str, Any]) -> None:
        self.captured: list[Any] = []

        def capture(status: str, headers: list[Any], exc_info: Any = None) -> Any:
            self.captured[:] = [status, list(headers), exc_info]
            return lambda data: None  # write() is not for these paths

        self.body = app(environ, capture)
        self.chunks = iter(self.body)
        # Most applications call start_response before returning; a generator calls it on
        # its first chunk.
        self.first: bytes | None = None if self.captured else next(self.chunks, b"")
        if not self.captured:
            self.captured[:] = ["500 Internal Server Error", [], None]

    @property
    def status(self) -> str:
        return str(self.captured[0])

    def close(self) -> None:
        close = getattr(self.body, "close", None)
        if close is not None:
            close()

    def respond(self, start_response: StartResponse, environ: dict[str, Any]) -> Iterable[bytes]:
        status, headers, exc_info = self.captured
        kind = next((v for k, v in headers if k.lower() == "content-type"), "")
        if "upgrader.banner" in environ and kind.startswith("text/html"):
            data = (self.first or b"") + b"".join(self.chunks)
            self.close()
            if not environ.get("upgrader.banner.rendered"):
                data = _insert_banner(data, environ)
            headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
            headers.append(("Content-Length", str(len(data))))
            start_response(status, headers, exc_info)
            return [data]
        start_response(status, headers, exc_info)
        if self.first is None:
            return self.body
        return _chain(self.first, self.chunks, self.body)


def _insert_banner(data: bytes, environ: dict[str, Any]) -> bytes:
    """After `<body …>` of a whole page; a fragment (HTMX, a health check) has none."""
    at = data.find(b"<body")
    if at == -1:
        return data
    end = data.find(b">", at)
    if end == -1:
        return data
    return data[: end + 1] + banner_html(environ).encode() + data[end + 1 :]


def _chain(first: bytes, rest: Iterator[bytes], body: Iterable[bytes]) -> Iterator[bytes]:
    try:
        yield first
        yield from rest
    finally:
        if hasattr(body, "close"):
            body.close()


def _plain(start_response: StartResponse, status: str, text: str) -> list[bytes]:
    body = text.encode()
    start_response(
        status,
        [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
        ],
    )
    return [body]


def wants_json(environ: dict[str, Any]) -> bool:
    accept = str(environ.get("HTTP_ACCEPT", "")).lower()
    if "json" not in accept:
        return False
    html = accept.find("text/html")
    return html == -1 or accept.find("json") < html


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def banner_html(environ: dict[str, Any]) -> str:
    """The banner as a self-contained HTML snippet, for templates of any framework."""
    from markupsafe import escape

    banner = environ.get("upgrader.banner")
    if not banner:
        return ""
    colour = "#fff3cd" if banner["level"] == "maintenance" else "#fde2e1"
    return (
        f'<div role="status" class="upgrader-banner" style="background:{colour};color:#222;'
        'padding:.6rem 1rem;font:15px/1.4 system-ui,sans-serif;border-bottom:1px solid #d9c98f">'
        f"{escape(banner['text'])}</div>"
    )
