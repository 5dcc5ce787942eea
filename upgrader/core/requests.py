"""A request as the gate reads it: plain values, whatever the framework.

Adapters make one from their protocol (a WSGI environ, an ASGI scope) only on the guard's
slow path; the steady state never builds one. Header names are lower case; values are as
the server handed them over (WSGI and ASGI both give latin-1): whatever bytes a client
sent, they are a string here, never an exception.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qs


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: str
    remote: str  # the peer's address, as the server saw it
    scheme: str  # "http" or "https", as the server saw it
    headers: Mapping[str, str]  # lower-case names
    root: str = ""  # where the application is mounted (WSGI's SCRIPT_NAME, ASGI's root_path)

    def header(self, name: str) -> str:
        return self.headers.get(name) or ""

    def asks(self, key: str) -> bool:
        """Does the query string carry `key` (with or without a value)?"""
        return key in parse_qs(self.query, keep_blank_values=True)
