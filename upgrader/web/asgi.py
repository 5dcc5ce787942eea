"""The request guard around any ASGI application: FastAPI, Starlette, Litestar or a plain one.

    app.add_middleware(UpgraderMiddleware, settings=resolve({...}))   # FastAPI, Starlette
    app = UpgraderMiddleware(Litestar(...), resolve({...}))           # Litestar, any ASGI app

Pure ASGI, and as thin over the gate (core/gate.py) as the WSGI guard is: it reads the
scope into the gate's plain terms and sends the gate's answer. The event loop never waits
on the database: in the steady state (the site simply open, the diagnosis fresh) a request
goes to the application at once, with no I/O and no await of the guard's own; a refresh
runs in a worker thread, single flight, and meanwhile requests get the previous answer (in
a process that has none yet, a provisional Err1 after a second at most), as the WSGI
guard's threads do. A blocked site refuses WebSockets; lifespan passes through, and its
startup primes the diagnosis. The installer and the console, small WSGI applications, are
run through a2wsgi (the `asgi` extra).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from time import monotonic as _monotonic
from typing import Any

from upgrader.console.context import USER
from upgrader.core.cache import SLOW, DiagnosisCache
from upgrader.core.diagnosis import Diagnosis
from upgrader.core.gate import Application, Mount, Page, plain
from upgrader.core.requests import HEADERS, Request
from upgrader.http.pages import banner_html, insert_banner
from upgrader.http.wsgi import WSGIApp, status_line
from upgrader.kinds import refuse_wsgi
from upgrader.settings import Settings, resolve
from upgrader.web import background
from upgrader.web.mounts import Mounts, assemble

try:
    from a2wsgi import WSGIMiddleware
except ImportError as missing:  # pragma: no cover - the extra is part of the test install
    raise ImportError(
        "upgrader's ASGI guard needs its asgi extra: pip install 'upgrader[asgi]'"
    ) from missing

log = logging.getLogger("upgrader")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Authorize = Callable[[Scope], Any]

EXTRA = "upgrader.environ"
"""Scope key: what the mounted WSGI applications find in their environ."""

__all__ = ["ASGIApp", "Authorize", "UpgraderMiddleware", "banner_html"]


class UpgraderMiddleware:
    """Wrap an ASGI application; `app.add_middleware(UpgraderMiddleware, settings=...)`."""

    def __init__(
        self,
        app: ASGIApp,
        settings: Settings | None = None,
        *,
        cache: DiagnosisCache | None = None,
        poll_seconds: float = 5.0,
        bypass_lifetime: float = 12 * 3600,
        authorize: Authorize | None = None,
    ) -> None:
        refuse_wsgi(app)
        self.app = app
        self.settings = settings or resolve()
        self.cache, self.gate, pages = assemble(self.settings, cache, poll_seconds, bypass_lifetime)
        self.authorize = authorize  # who may use the admin console (else its key)
        self.refresher = Refresher(self.cache, warm=pages.warm)
        self.mounts = Mounts(
            self.settings,
            self.cache,
            key=self.gate.key,
            home=self._home,
            integrated=authorize is not None,
        )
        self._status_path = self.settings.status_path
        self._console_path = self.gate.console
        self._bridges: dict[str, ASGIApp] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        background.register(self)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            if kind == "lifespan":
                receive = self._priming(receive)
            return await self.app(scope, receive, send)
        path = scope["path"]
        root = scope.get("root_path")
        if root and path.startswith(root):
            path = path[len(root) :]
        began = _monotonic()
        expires, site_open = self.cache.fast
        if not (
            site_open
            and began < expires
            and path != self._status_path
            and not path.startswith(self._console_path)
        ):
            return await self._guard(scope, receive, send, began)
        if kind == "websocket":
            return await self.app(scope, receive, send)
        watch = Watch(self, send, scope, began)  # no I/O, no await of its own
        try:
            await self.app(scope, receive, watch)
        except Exception:
            if not await self._instead(watch, send):
                raise

    # ------------------------------------------------------------------- slow path

    async def _guard(self, scope: Scope, receive: Receive, send: Send, began: float) -> None:
        self._loop = asyncio.get_running_loop()
        req = request_of(scope)
        d = await self.refresher.diagnosis()
        if req.path == self._status_path:  # reads the node registry for administrators
            answer = await self.refresher.call(self.gate.answer, req, d)
        else:
            answer = self.gate.answer(req, d)
        if scope["type"] == "websocket":
            return await self._websocket(answer, scope, receive, send)
        if isinstance(answer, Page):
            return await send_page(send, answer)
        if isinstance(answer, Mount):
            return await self._mount(answer, req, scope, receive, send)
        scope = {**scope, "upgrader.diagnosis": answer.diagnosis, "upgrader.admin": answer.admin}
        if answer.banner:
            scope["upgrader.banner"] = answer.banner
        if answer.guarded:
            return await self._guarded(answer.diagnosis, req, scope, receive, send)
        if not answer.watched:
            return await self.app(scope, receive, send)
        banner = banner_html(scope) if answer.banner else None
        return await self._watched(scope, receive, send, began, req, banner)

    async def _watched(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        began: float,
        req: Request | None,
        banner: str | None = None,
    ) -> None:
        """The application, for a request the site serves. When it fails (a 5xx answer, or
        an exception) because the database has gone away since the last refresh, the gate
        answers with Err1 instead; a failure of the application's own passes unchanged."""

        if banner is None:
            watch = Watch(self, send, scope, began)
            try:
                return await self.app(scope, receive, watch)
            except Exception:
                if not await self._instead(watch, send):
                    raise
                return None

        async def failing(_: str) -> Page | None:
            return await self.down(scope, began, req)

        relay = Relay(send, failing, banner, scope)
        try:
            await self.app(scope, receive, relay)
        except Exception:
            if not await self._instead(relay, send):
                raise

    async def down(self, scope: Scope, began: float, req: Request | None) -> Page | None:
        """Err1 for a request the application failed, when the database has gone away
        since it began; None when the failure is the application's own."""
        d = await self.refresher.recheck(began)
        return self.gate.failed(req or request_of(scope), d)

    async def _instead(self, watch: Watch | Relay, send: Send) -> bool:
        """After the application raised: whether the visitor has the guard's answer (sent
        now, or instead of the application's 5xx); False, and the error goes on, if not."""
        if watch.started:
            return watch.replaced  # a replaced answer's failure is logged, not raised
        page = await watch.down()
        if page is None:
            return False
        await send_page(send, page)
        return True

    async def _guarded(
        self, d: Diagnosis, req: Request, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """An administrator in a mismatch: the application, or the state if it fails."""

        async def failing(error: str) -> Page:
            return self.gate.failed_for_admin(req, d, error)

        relay = Relay(send, failing, banner_html(scope) or None, scope)
        try:
            await self.app(scope, receive, relay)
        except Exception as exc:
            log.warning("the application failed for an administrator in %s: %r", d.state, exc)
            if not relay.started:
                await send_page(send, await failing(f"{type(exc).__name__}: {exc}"))

    async def _websocket(
        self, answer: Application | Page | Mount, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """Into the application only while it may serve it; refused otherwise, before any
        handshake reaches the application."""
        if isinstance(answer, Application):
            return await self.app(scope, receive, send)
        page = answer if isinstance(answer, Page) else plain(404, "Not Found")
        await refuse_websocket(scope, receive, send, page)

    # ---------------------------------------------------------------------- mounts

    async def _mount(
        self, answer: Mount, req: Request, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """The installer or the console, as WSGI applications below their prefix, as the
        visitor reached them (https behind a trusted proxy: their cookies are Secure)."""
        extra: dict[str, Any] = {"upgrader.site_root": req.root}
        if answer.app == "installer":
            mounted = self.mounts.installer()
        else:
            extra[USER] = self._authorize(scope)
            mounted = self.mounts.console()
        if isinstance(mounted, Page):
            return await send_page(send, mounted)
        inner = dict(scope)
        inner["root_path"] = (scope.get("root_path") or "") + answer.prefix
        inner["path"] = (scope.get("root_path") or "") + _relative(scope)
        inner["scheme"] = self.gate.scheme(req)
        inner[EXTRA] = extra
        await self._bridge(answer.app, mounted)(inner, receive, send)

    def _bridge(self, name: str, mounted: WSGIApp) -> ASGIApp:
        bridge = self._bridges.get(name)
        if bridge is None:

            def with_extra(environ: dict[str, Any], start_response: Any) -> Any:
                environ.update(environ["asgi.scope"].get(EXTRA) or {})
                return mounted(environ, start_response)

            made: Any = WSGIMiddleware(with_extra, workers=4)  # type: ignore[arg-type]
            bridge = self._bridges[name] = made
        return bridge

    def _authorize(self, scope: Scope) -> Any:
        """The integrator's check sees the request as the application would."""
        if self.authorize is None:
            return None
        try:
            return self.authorize(scope)
        except Exception as exc:  # a broken check admits nobody, and never shows a trace
            log.warning("the console's authorize check failed: %r", exc)
            return None

    def _home(self, environ: dict[str, Any]) -> str:
        """GET / of the application past the guard, for the installer's last check. The
        installer runs in a worker thread; the application answers on the event loop."""
        loop = self._loop
        if loop is None:
            return "no answer"
        outer = environ.get("asgi.scope") or {}
        future = asyncio.run_coroutine_threadsafe(home_page(self.app, outer), loop)
        try:
            return future.result(timeout=30)
        except Exception as exc:
            return f"error ({type(exc).__name__})"

    # -------------------------------------------------------------------- lifespan

    def _priming(self, receive: Receive) -> Receive:
        """Lifespan passes through; at startup the first diagnosis begins, in a thread."""

        async def primed() -> Message:
            message = await receive()
            if message.get("type") == "lifespan.startup":
                self._loop = asyncio.get_running_loop()
                self.refresher.start()
            return message

        return primed


class Refresher:
    """The cache's refreshes and rechecks in worker threads, single flight: the event loop
    only ever awaits them, and never longer than the cache itself would wait."""

    def __init__(self, cache: DiagnosisCache, warm: Callable[[], None]) -> None:
        self.cache = cache
        self.pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="upgrader")
        self._refresh: asyncio.Future[Diagnosis] | None = None
        self._warm: Callable[[], None] | None = warm  # done once, with the first refresh

    def start(self) -> asyncio.Future[Diagnosis]:
        if self._warm is not None:
            self.pool.submit(self._warm)
            self._warm = None
        future = self._refresh
        if future is None or future.done():
            loop = asyncio.get_running_loop()
            future = self._refresh = loop.run_in_executor(self.pool, self.cache.get)
        return future

    async def diagnosis(self) -> Diagnosis:
        """The cached diagnosis; past its TTL a refresh begins. The request that begins it
        waits for it (a second at most); others get the previous answer meanwhile, or
        wait as well in a process that has none yet."""
        d = self.cache.current()
        if d is not None:
            return d
        running = self._refresh is not None and not self._refresh.done()
        future = self.start()
        if running and self.cache.answered:
            return self.cache.meanwhile()
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout=SLOW)
        except asyncio.TimeoutError:
            return self.cache.meanwhile()

    async def recheck(self, began: float) -> Diagnosis:
        """A diagnosis made after `began`: the application has just failed a request."""
        d = self.cache.since(began)
        if d is not None:
            return d
        d = await self.call(self.cache.recheck, began)
        assert isinstance(d, Diagnosis)
        return d

    async def call(self, function: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.pool, function, *args)


class Watch:
    """The application's `send` while the site serves, as cheap as a `send` can be watched:
    each message is passed on as it is (the inner send's awaitable returned, no coroutine of
    its own), except a 5xx start, held while the guard looks again: when the database has
    gone away since the request began, the visitor gets Err1 instead."""

    __slots__ = ("began", "guard", "phase", "scope", "send")

    def __init__(self, guard: UpgraderMiddleware, send: Send, scope: Scope, began: float) -> None:
        self.guard, self.send, self.scope, self.began = guard, send, scope, began
        self.phase = 0  # 1: an answer has begun to go out; 2: it is the guard's

    @property
    def started(self) -> bool:
        return self.phase > 0

    @property
    def replaced(self) -> bool:
        """The guard's answer went out: the rest of the application's is dropped."""
        return self.phase == 2

    def __call__(self, message: Message) -> Awaitable[None]:
        if message["type"] == "http.response.start":
            if message["status"] >= 500:
                return self._failed(message)
            self.phase = 1
        elif self.phase == 2:
            return _nothing()
        return self.send(message)

    async def down(self) -> Page | None:
        return await self.guard.down(self.scope, self.began, None)

    async def _failed(self, start: Message) -> None:
        page = await self.down()
        if page is None:
            self.phase = 1
            return await self.send(start)
        self.phase = 2
        await send_page(self.send, page)


async def _nothing() -> None:
    return None


class Relay:
    """The application's `send`, watched: a 5xx answer is replaced when the guard has a
    better one (Err1 while the database is gone; the state, for an administrator in a
    mismatch); an HTML page gets the banner. Anything else passes straight through."""

    __slots__ = ("banner", "body", "failing", "held", "replaced", "scope", "send", "started")

    def __init__(
        self,
        send: Send,
        failing: Callable[[str], Awaitable[Page | None]],
        banner: str | None,
        scope: Scope,
    ) -> None:
        self.send, self.failing, self.banner, self.scope = send, failing, banner, scope
        self.started = False  # an answer has begun to go out
        self.replaced = False  # the guard's went out: the rest of the application's is dropped
        self.held: Message | None = None  # an HTML page's start, while its body is gathered
        self.body: list[bytes] = []

    async def __call__(self, message: Message) -> None:
        if self.replaced:
            return
        kind = message["type"]
        if kind == "http.response.start":
            if message["status"] >= 500:
                page = await self.failing(f"the application answered {message['status']}")
                if page is not None:
                    self.started = self.replaced = True
                    return await send_page(self.send, page)
            self.started = True
            if self.banner is not None and _html(message):
                self.held = message
                return None
        elif kind == "http.response.body" and self.held is not None:
            self.body.append(message.get("body", b""))
            if not message.get("more_body"):
                await self._with_banner(self.held)
            return None
        await self.send(message)

    async def down(self) -> Page | None:
        return await self.failing("")

    async def _with_banner(self, start: Message) -> None:
        data = b"".join(self.body)
        if self.banner and not self.scope.get("upgrader.banner.rendered"):
            data = insert_banner(data, self.banner)
        headers = [(k, v) for k, v in start.get("headers", ()) if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(data)).encode()))
        await self.send({**start, "headers": headers})
        await self.send({"type": "http.response.body", "body": data})


def _html(start: Message) -> bool:
    """An HTML page the banner can go into: not compressed, not a fragment's stream."""
    kind = encoded = b""
    for name, value in start.get("headers", ()):
        lower = name.lower()
        if lower == b"content-type":
            kind = value
        elif lower == b"content-encoding":
            encoded = value
    return kind.startswith(b"text/html") and not encoded


# ----------------------------------------------------------------- the protocol's side

_WANTED = frozenset(HEADERS)


def request_of(scope: Scope) -> Request:
    """The request as the gate reads it (made on the slow path only). Paths as WSGI has
    them (the raw bytes as latin-1), so both guards' answers are the same."""
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers") or ():
        name = raw_name.decode("latin-1").lower()
        if name in _WANTED:
            value = raw_value.decode("latin-1")
            if name in headers:  # HTTP/2 sends each cookie on a line of its own
                value = headers[name] + ("; " if name == "cookie" else ", ") + value
            headers[name] = value
    client = scope.get("client")
    scheme = scope.get("scheme") or "http"
    return Request(
        scope.get("method") or "GET",
        _relative(scope).encode("utf-8", "surrogateescape").decode("latin-1"),
        (scope.get("query_string") or b"").decode("latin-1"),
        client[0] if client else "",
        "https" if scheme in ("https", "wss") else "http",
        headers,
        (scope.get("root_path") or "").encode("utf-8", "surrogateescape").decode("latin-1"),
    )


def _relative(scope: Scope) -> str:
    """The path below where the application is mounted (ASGI's `path` includes it)."""
    path: str = scope.get("path") or "/"
    root = scope.get("root_path")
    if root and path.startswith(root):
        path = path[len(root) :] or "/"
    return path


async def send_page(send: Send, page: Page) -> None:
    await send({"type": "http.response.start", "status": page.status, "headers": _encoded(page)})
    await send({"type": "http.response.body", "body": page.body})


_ENCODED: dict[int, tuple[Page, list[tuple[bytes, bytes]]]] = {}


def _encoded(page: Page) -> list[tuple[bytes, bytes]]:
    """A page's headers as ASGI sends them; a blocked page's once (the gate keeps it)."""
    known = _ENCODED.get(id(page))
    if known is not None and known[0] is page:
        return list(known[1])
    headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in page.headers]
    if len(_ENCODED) > 64:
        _ENCODED.clear()
    _ENCODED[id(page)] = (page, headers)
    return list(headers)


async def refuse_websocket(scope: Scope, receive: Receive, send: Send, page: Page) -> None:
    """The page as an HTTP denial of the handshake where the server offers that
    (`websocket.http.response`); else the handshake accepted by the guard and closed at
    once with 1013, Try Again Later. The application never sees the socket."""
    message = await receive()
    if message.get("type") != "websocket.connect":
        return
    if "websocket.http.response" in (scope.get("extensions") or {}):
        await send(
            {
                "type": "websocket.http.response.start",
                "status": page.status,
                "headers": _encoded(page),
            }
        )
        await send({"type": "websocket.http.response.body", "body": page.body})
        return
    state = dict(page.headers).get("X-Upgrader-State", "unavailable")
    await send({"type": "websocket.accept"})
    await send(
        {"type": "websocket.close", "code": 1013, "reason": f"Down for Maintenance: {state}"}
    )


async def home_page(app: ASGIApp, outer: Scope) -> str:
    """GET / of the application itself (past the guard), as the request in `outer`
    reached upgrader: its status line (the installer's last check)."""
    root = (outer.get(EXTRA) or {}).get("upgrader.site_root", "")
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": outer.get("scheme", "http"),
        "path": root + "/",
        "raw_path": (root + "/").encode(),
        "root_path": root,
        "query_string": b"",
        "headers": [(b"accept", b"text/html"), (b"host", _host(outer))],
        "client": outer.get("client"),
        "server": outer.get("server"),
    }
    if "state" in outer:  # what the application's lifespan set up
        scope["state"] = dict(outer["state"])
    status: list[int] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    await app(scope, receive, send)
    return status_line(status[-1]) if status else "no answer"


def _host(scope: Scope) -> bytes:
    for name, value in scope.get("headers") or ():
        if name.lower() == b"host":
            return bytes(value)
    return b"localhost"
