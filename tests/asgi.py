"""Calling an ASGI application in process, as a server would: HTTP requests, WebSocket
handshakes and the lifespan, with nothing between (no framework's test client)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes = b""
    messages: list[dict[str, Any]] = field(default_factory=list)

    @property
    def text(self) -> str:
        return self.body.decode()


def scope_of(
    method: str,
    path: str,
    headers: Mapping[str, str] | None = None,
    *,
    client: str = "203.0.113.9",
    kind: str = "http",
    query: str = "",
    root: str = "",
    extensions: dict[str, Any] | None = None,
) -> dict[str, Any]:
    scope: dict[str, Any] = {
        "type": kind,
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "scheme": "http" if kind == "http" else "ws",
        "path": root + path,
        "raw_path": (root + path).encode(),
        "root_path": root,
        "query_string": query.encode(),
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
        "client": (client, 50000),
        "server": ("127.0.0.1", 8000),
        "extensions": extensions or {},
    }
    if kind == "http":  # a WebSocket's scope has no method
        scope["method"] = method
    return scope


async def call(app: Any, scope: dict[str, Any], body: bytes = b"") -> Answer:
    sent: list[dict[str, Any]] = []
    inbox = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        if inbox:
            return inbox.pop(0)
        await asyncio.sleep(3600)  # a client that stays: the disconnect never comes
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    headers = {k.decode().lower(): v.decode() for k, v in start.get("headers", [])}
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return Answer(start["status"], headers, body, sent)


def get(app: Any, path: str = "/", headers: Mapping[str, str] | None = None, **kw: Any) -> Answer:
    return asyncio.run(call(app, scope_of(kw.pop("method", "GET"), path, headers, **kw)))


async def handshake(app: Any, scope: dict[str, Any]) -> list[dict[str, Any]]:
    """What the application sends for a WebSocket handshake (and one message after)."""
    sent: list[dict[str, Any]] = []
    inbox: list[dict[str, Any]] = [{"type": "websocket.connect"}]

    async def receive() -> dict[str, Any]:
        if inbox:
            return inbox.pop(0)
        return {"type": "websocket.disconnect", "code": 1000}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "websocket.accept":
            inbox.append({"type": "websocket.receive", "text": "ping"})

    await asyncio.wait_for(app(scope, receive, send), timeout=10)
    return sent


def websocket(
    app: Any, path: str = "/ws", *, denial: bool = True, **kw: Any
) -> list[dict[str, Any]]:
    extensions = {"websocket.http.response": {}} if denial else {}
    scope = scope_of("GET", path, kind="websocket", extensions=extensions, **kw)
    return asyncio.run(handshake(app, scope))
