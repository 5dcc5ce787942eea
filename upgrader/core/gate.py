"""What a request gets: decided once, by plain code, from plain inputs.

An adapter (the WSGI middleware, web/middleware.py; the ASGI one, web/asgi.py) translates
its protocol into a `Request` and the gate's answer back; nothing of this is its to decide.
An answer is:

- `Application`: the request goes on to the application (with a banner to insert; for an
  administrator in a mismatch, with the state shown instead should the application fail);
- `Page`: an answer of upgrader's own, finished (the blocked page or problem+json, the
  status document, a redirect, the bypass cookie);
- `Mount`: one of upgrader's own applications (the installer, the admin console).

Who gets through: the status endpoint, the installer and configured paths (health checks)
always; administrators (an allow-listed address, X-Forwarded-For only from trusted
proxies, or a valid bypass cookie got from the secret bypass URL); everyone while the
site serves. Everyone else gets "Down for Maintenance (ErrN)": a 503 (configurable) with
Retry-After, no-store and X-Upgrader-State; HTML for people, problem+json for API clients.
The steady state (the site simply open, the diagnosis fresh) never comes here: adapters
read `cache.fast` and call the application at once.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from upgrader import i18n
from upgrader.core import clients, nodes, notices
from upgrader.core.cache import DiagnosisCache
from upgrader.core.diagnosis import Diagnosis
from upgrader.core.keys import site_key
from upgrader.core.maintenance import check_secret
from upgrader.core.requests import Request
from upgrader.core.states import State
from upgrader.core.throttle import Throttle
from upgrader.settings import Settings

log = logging.getLogger("upgrader")

SECURITY_HEADERS = (
    ("X-Frame-Options", "DENY"),
    ("Content-Security-Policy", "frame-ancestors 'none'"),
    ("X-Content-Type-Options", "nosniff"),
)
"""upgrader's own pages are never framed (clickjacking) nor sniffed."""

CONTINUE = "upgrader-continue"
"""An administrator who chose to go on to the application while its database does not fit."""

Headers = tuple[tuple[str, str], ...]


# The answers are made per request on the guard's slow path (every request while the site
# is blocked): slotted classes, read-only by convention (a frozen dataclass costs 1 µs more).


@dataclass(slots=True)
class Page:
    """An answer the guard makes itself, finished."""

    status: int
    headers: Headers
    body: bytes = b""


@dataclass(slots=True)
class Application:
    """The request goes on to the application."""

    diagnosis: Diagnosis
    admin: bool
    banner: dict[str, str] | None = None
    guarded: bool = False  # an administrator in a mismatch: the state if the application fails
    watched: bool = True  # a failure while the database went away becomes Err1


@dataclass(slots=True)
class Mount:
    """One of upgrader's own applications, at `prefix` ("installer" or "console")."""

    app: str
    prefix: str


Answer = Page | Application | Mount


class Renderer(Protocol):
    """The pages' HTML, from templates (http/pages.py): the gate decides, it renders."""

    def blocked(self, d: Diagnosis, *, refresh: int, language: str) -> str: ...

    def admin(self, d: Diagnosis, *, installer: str | None, error: str | None) -> str: ...


@dataclass
class Gate:
    settings: Settings
    cache: DiagnosisCache
    renderer: Renderer
    bypass_lifetime: float = 12 * 3600
    key: bytes = field(init=False)

    def __post_init__(self) -> None:
        settings = self.settings
        self.trusted = clients.networks(settings.trusted_proxies)
        self.allow = clients.networks(settings.allow_ips)
        self.key = site_key(settings.secret_key, Path(settings.backup_dir))
        self.bypass_throttle = Throttle()
        self.installer = settings.installer_path.rstrip("/")
        self.console = settings.admin_path.rstrip("/")
        self._stored_allow: tuple[tuple[str, ...], tuple[clients.Network, ...]] = ((), ())
        patterns = settings.allow_paths
        self._exempt = (
            re.compile("|".join(fnmatch.translate(p) for p in patterns)).match if patterns else None
        )
        self._languages: dict[str, str] = {}  # Accept-Language -> the page's language
        # the blocked answers made for one diagnosis, finished: during an outage every
        # request is a blocked one, and they differ only in these few ways
        self._blocked: tuple[Diagnosis | None, dict[tuple[Any, ...], Page]] = (None, {})

    # ------------------------------------------------------------------ answers

    def answer(self, req: Request, d: Diagnosis) -> Answer:
        """What the request gets, given the cached diagnosis. No I/O: the adapter got `d`
        from the cache as its protocol allows (an ASGI adapter off the event loop), except
        at the status endpoint, which reads the node registry for administrators."""
        path = req.path
        self.cache.registration.kind = "web"  # this process answers requests
        if path == self.settings.status_path:
            return self.status(req, d)
        if path.startswith(self.installer) and _under(path, self.installer):
            return Mount("installer", self.installer)
        if path.startswith(self.console) and _under(path, self.console):
            if path == self.console:  # the console's pages are relative to its root
                return redirect(308, req.root + path + "/")
            return Mount("console", self.console)
        if path.startswith(self.settings.bypass_path):
            return self.bypass(req, d)
        admin = self.is_admin(req, d)
        if d.state.serving:
            return Application(d, admin, self.banner(req, d, admin))
        if self.exempt(path):
            return Application(d, admin, watched=False)
        if admin:
            return self.for_admin(req, d)
        if d.state is State.NOT_INSTALLED and d.installer_present and not d.missing_file:
            return redirect(303, self.settings.installer_path)
        return self.blocked(req, d)

    def for_admin(self, req: Request, d: Diagnosis) -> Answer:
        """During maintenance an administrator simply gets the site. While the database
        does not fit the code, they first get a page with the state, its fix and the way
        to the installer, and may go on to the application from there; if the application
        then fails (it is running against the wrong schema), that page again, with the
        error, never a bare 500. An API client gets the application, or the state."""
        if d.state is State.MAINTENANCE:
            return Application(d, True, self.banner(req, d, True))
        if notices.wants_json(req.header("accept")):
            return Application(d, True, guarded=True)
        if req.asks(CONTINUE):
            cookie = f"{CONTINUE}=1; Path=/; Max-Age=3600; HttpOnly; SameSite=Lax"
            location = req.root + req.path
            return redirect(303, location, ("Set-Cookie", cookie + self._secure(req)))
        if clients.read_cookie(req.header("cookie"), CONTINUE) is None:
            return self.admin_page(req, d, None)
        return Application(d, True, self.banner(req, d, True), guarded=True)

    def failed(self, req: Request, d: Diagnosis) -> Page | None:
        """The application failed a request (a 5xx, an exception), and `d` was made after
        the request began (`cache.recheck`): when the database has gone away since, Err1
        instead, as every request will get from the next refresh on; else None, and the
        failure is the application's own, unchanged."""
        if d.state is not State.DATABASE_UNAVAILABLE:
            return None
        log.warning(
            "the application failed %s for %s while the database is unavailable: Err1 instead",
            req.path,
            self.client(req) or "unknown",
        )
        if self.is_admin(req, d):
            return self.admin_page(req, d, "the application failed: its database cannot be reached")
        return self.blocked(req, d)

    def failed_for_admin(self, req: Request, d: Diagnosis, error: str) -> Page:
        """The application failed an administrator while the database does not fit the
        code: the state instead (the page, or problem+json for an API client)."""
        if notices.wants_json(req.header("accept")):
            return self.blocked(req, d)
        return self.admin_page(req, d, error)

    # ---------------------------------------------------------------------- who

    def client(self, req: Request) -> str | None:
        return clients.client_address(req.remote, req.header("x-forwarded-for"), self.trusted)

    def scheme(self, req: Request) -> str:
        """The visitor's scheme, as a trusted proxy in front may say it."""
        return clients.scheme(
            req.scheme,
            req.remote,
            req.header("x-forwarded-proto"),
            req.header("forwarded"),
            self.trusted,
        )

    def _secure(self, req: Request) -> str:
        return "; Secure" if self.scheme(req) == "https" else ""

    def is_admin(self, req: Request, d: Diagnosis) -> bool:
        stored = self._db_allow(d)
        if self.allow or stored:  # no address is even parsed where nobody is allow-listed
            address = clients.client_ip(req.remote, req.header("x-forwarded-for"), self.trusted)
            if clients.within(address, self.allow) or clients.within(address, stored):
                return True
        m = d.maintenance
        secret = m.secret_hash if m is not None else None
        cookies = req.header("cookie")
        if not secret or not cookies:
            return False
        return clients.cookie_valid(self.key, clients.read_cookie(cookies), secret)

    def _db_allow(self, d: Diagnosis) -> tuple[clients.Network, ...]:
        entries = d.maintenance.allow if d.maintenance is not None else ()
        if entries != self._stored_allow[0]:
            parsed: list[clients.Network] = []
            for entry in entries:
                try:
                    parsed.extend(clients.networks([entry]))
                except ValueError:
                    continue  # a bad stored entry admits no one (`maintenance status` shows it)
            self._stored_allow = (entries, tuple(parsed))
        return self._stored_allow[1]

    def exempt(self, path: str) -> bool:
        return self._exempt is not None and self._exempt(path) is not None

    def language(self, req: Request) -> str:
        header = req.header("accept-language")
        language = self._languages.get(header)
        if language is None:
            if len(self._languages) > 256:  # headers are the visitors' to choose
                self._languages.clear()
            language = i18n.negotiate(header, self.settings.locale_dir)
            self._languages[header] = language
        return language

    def banner(self, req: Request, d: Diagnosis, admin: bool) -> dict[str, str] | None:
        language = self.language(req)
        return notices.banner(d, admin, i18n.gettext_for(language, self.settings.locale_dir))

    # -------------------------------------------------------------------- pages

    def blocked(self, req: Request, d: Diagnosis) -> Page:
        """Down for Maintenance: the page for people, problem+json for API clients. Made
        once per diagnosis and way of asking, then served from memory."""
        retry = notices.retry_after(d, self.settings.retry_after)
        api = notices.wants_json(req.header("accept"))
        language = "" if api else self.language(req)
        key = (retry, api, language, req.method == "HEAD")
        made_for, answers = self._blocked
        if made_for is not d:
            answers = {}
            self._blocked = (d, answers)
        elif len(answers) > 64:  # Retry-After counts down through a maintenance window
            answers.clear()
        found = answers.get(key)
        if found is None:
            found = answers[key] = self._blocked_page(req, d, retry, language)
        return found

    def _blocked_page(self, req: Request, d: Diagnosis, retry: int, language: str) -> Page:
        status = self.settings.blocked_status
        headers: list[tuple[str, str]] = [
            ("Retry-After", str(retry)),
            ("Cache-Control", "no-store"),
            ("X-Upgrader-State", d.state.value),
            *SECURITY_HEADERS,
        ]
        if not language:
            body = json.dumps(notices.problem(d, status, retry)).encode()
            headers.append(("Content-Type", "application/problem+json"))
        else:
            refresh = min(retry, 60)
            body = self.renderer.blocked(d, refresh=refresh, language=language).encode()
            headers += [
                ("Content-Type", "text/html; charset=utf-8"),
                ("Content-Language", language),
                ("Vary", "Accept-Language"),
            ]
        return page(req, status, headers, body)

    def admin_page(self, req: Request, d: Diagnosis, error: str | None) -> Page:
        """What an administrator sees while the database does not fit the code."""
        installer = self.settings.installer_path if d.installer_present else None
        html = self.renderer.admin(d, installer=installer, error=error).encode()
        headers = [
            ("Content-Type", "text/html; charset=utf-8"),
            ("Cache-Control", "no-store"),
            ("X-Upgrader-State", d.state.value),
            *SECURITY_HEADERS,
        ]
        return page(req, self.settings.blocked_status, headers, html)

    def status(self, req: Request, d: Diagnosis) -> Page:
        """The status endpoint: what anyone may see; administrators see everything, and a
        load balancer asking `?ready` gets 503 from a node that does not serve."""
        admin = self.is_admin(req, d)
        body = notices.public_status(d, versions=admin or self.settings.public_versions)
        if admin:
            if d.state is State.UPGRADE_RUNNING and d.run is not None:
                body["progress"] = {"step": d.run.step, "steps": d.run.steps}
            body["diagnosis"] = d.to_dict()
            body.update(self._nodes(d))
        ready = d.state.serving  # a load balancer keeps every node that serves
        code = 503 if req.asks("ready") and not ready else 200
        headers = [
            ("Content-Type", "application/json"),
            ("Cache-Control", "no-store"),
            ("X-Upgrader-State", d.state.value),
            *SECURITY_HEADERS,
        ]
        return page(req, code, headers, json.dumps(body).encode())

    def _nodes(self, d: Diagnosis) -> dict[str, Any]:
        """For administrators: this process, and every process the registry has seen."""
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

    def bypass(self, req: Request, d: Diagnosis) -> Page:
        """The secret bypass URL: a signed cookie for its holder; anyone else, the page
        everybody gets (it reveals nothing), and guesses are throttled per client."""
        secret = req.path[len(self.settings.bypass_path) :]
        m = d.maintenance
        stored = m.secret_hash if m is not None else None
        client = self.client(req) or "unknown"
        if self.bypass_throttle.wait(client) > 0:
            log.warning("bypass refused to %s: too many wrong secrets", client)
            return self.blocked(req, d)
        if not secret or not check_secret(secret, stored):
            count = self.bypass_throttle.failed(client)
            log.warning("bypass refused to %s: wrong secret (%d in a row)", client, count)
            return self.blocked(req, d)
        self.bypass_throttle.succeeded(client)
        log.info("bypass granted to %s (cookie for %ds)", client, self.bypass_lifetime)
        value, _ = clients.make_cookie(self.key, stored or "", self.bypass_lifetime)
        cookie = (
            f"{clients.COOKIE}={value}; Path=/; Max-Age={int(self.bypass_lifetime)}; "
            f"HttpOnly; SameSite=Lax{self._secure(req)}"
        )
        return redirect(303, "/", ("Set-Cookie", cookie))


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


def page(req: Request, status: int, headers: list[tuple[str, str]], body: bytes) -> Page:
    """A finished page: its length said, its body left out for HEAD."""
    headers.append(("Content-Length", str(len(body))))
    return Page(status, tuple(headers), b"" if req.method == "HEAD" else body)


def redirect(status: int, location: str, *extra: tuple[str, str]) -> Page:
    return Page(status, (("Location", location), *extra, ("Cache-Control", "no-store")), b"")


def plain(status: int, text: str) -> Page:
    body = text.encode()
    headers = (
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(body))),
        ("Cache-Control", "no-store"),
    )
    return Page(status, headers, body)


Authorize = Callable[[Any], Any]
"""Who may use the admin console: given the request as the adapter has it (the WSGI
environ), falsy refuses, a string names the administrator (docs/maintenance.md)."""
