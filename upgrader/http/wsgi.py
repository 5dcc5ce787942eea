"""The WSGI protocol's side of the guard: a request as the gate reads it, the gate's pages
written out, and the application called in ways that let the guard see its answer (a
5xx held back while the guard looks at the database; a banner inserted into HTML)."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Iterator, Mapping
from http import HTTPStatus
from typing import Any

from upgrader.core import clients
from upgrader.core.gate import Page
from upgrader.core.requests import HEADERS, Request
from upgrader.http.pages import banner_html, insert_banner

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


ENVIRON_KEYS = tuple((name, "HTTP_" + name.upper().replace("-", "_")) for name in HEADERS)
"""The environ's key of each header the gate reads."""


def request_of(environ: Mapping[str, Any]) -> Request:
    """The request as the gate reads it (made on the slow path only). WSGI's values are
    native strings (PEP 3333)."""
    return Request(
        environ.get("REQUEST_METHOD") or "GET",
        environ.get("PATH_INFO") or "/",
        environ.get("QUERY_STRING") or "",
        environ.get("REMOTE_ADDR") or "",
        environ.get("wsgi.url_scheme") or "http",
        {name: environ[key] for name, key in ENVIRON_KEYS if key in environ},
        environ.get("SCRIPT_NAME") or "",
    )


def respond(page: Page, start_response: StartResponse) -> list[bytes]:
    start_response(status_line(page.status), list(page.headers))
    return [page.body]


_LINES: dict[int, str] = {}


def status_line(status: int) -> str:
    """'503 Service Unavailable', made once per status."""
    line = _LINES.get(status)
    if line is None:
        line = _LINES[status] = f"{status} {reason(status)}"
    return line


def reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


class Held:
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


def close(body: Iterable[bytes]) -> None:
    closer = getattr(body, "close", None)
    if closer is not None:
        closer()


class Call:
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
        close(self.body)

    def respond(self, start_response: StartResponse, environ: dict[str, Any]) -> Iterable[bytes]:
        status, headers, exc_info = self.captured
        kind = next((v for k, v in headers if k.lower() == "content-type"), "")
        if "upgrader.banner" in environ and kind.startswith("text/html"):
            data = (self.first or b"") + b"".join(self.chunks)
            self.close()
            if not environ.get("upgrader.banner.rendered"):
                data = insert_banner(data, banner_html(environ))
            headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
            headers.append(("Content-Length", str(len(data))))
            start_response(status, headers, exc_info)
            return [data]
        start_response(status, headers, exc_info)
        if self.first is None:
            return self.body
        return _chain(self.first, self.chunks, self.body)


def _chain(first: bytes, rest: Iterator[bytes], body: Iterable[bytes]) -> Iterator[bytes]:
    try:
        yield first
        yield from rest
    finally:
        close(body)


class TrustedScheme:
    """WSGI middleware that sets `wsgi.url_scheme` as a trusted proxy in front says the
    visitor used it (X-Forwarded-Proto, Forwarded: proto=), so everything behind it (Flask's
    `request.is_secure`, its URLs, its Secure cookies) sees https: `upgrader serve`."""

    def __init__(self, app: WSGIApp, trusted: tuple[clients.Network, ...]) -> None:
        self.app, self.trusted = app, trusted

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        environ["wsgi.url_scheme"] = scheme_of(environ, self.trusted)
        return self.app(environ, start_response)


def scheme_of(environ: Mapping[str, Any], trusted: tuple[clients.Network, ...]) -> str:
    return clients.scheme(
        str(environ.get("wsgi.url_scheme") or "http"),
        str(environ.get("REMOTE_ADDR") or ""),
        str(environ.get("HTTP_X_FORWARDED_PROTO") or ""),
        str(environ.get("HTTP_FORWARDED") or ""),
        trusted,
    )


def home_page(site: WSGIApp, environ: dict[str, Any]) -> str:
    """GET / of the application itself (past the guard), in this process, as the request
    in `environ` reached it: its status line (the installer's last check)."""
    env = {k: v for k, v in environ.items() if not k.startswith(("werkzeug.", "upgrader."))}
    env.update(
        REQUEST_METHOD="GET",
        SCRIPT_NAME=environ.get("upgrader.site_root", ""),
        PATH_INFO="/",
        QUERY_STRING="",
        CONTENT_LENGTH="0",
        HTTP_ACCEPT="text/html",
    )
    env.pop("CONTENT_TYPE", None)
    env["wsgi.input"] = io.BytesIO(b"")
    seen: list[str] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        seen.append(status)
        return lambda data: None

    try:
        body = site(env, start_response)
        try:
            for _ in body:
                pass
        finally:
            close(body)
    except Exception as exc:
        return f"error ({type(exc).__name__})"
    return seen[-1] if seen else "no answer"
