"""A request as the gate reads it: plain values, whatever the framework.

Adapters make one from their protocol (a WSGI environ, an ASGI scope) only on the guard's
slow path; the steady state never builds one. The gate reads the headers named in
`HEADERS`, and only those: adapters copy just them, under their lower-case names, with
values as the server handed them over (WSGI and ASGI both give latin-1): whatever bytes a
client sent, they are a string here, never an exception.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qs

HEADERS = (
    "accept",  # the blocked page or problem+json
    "accept-language",  # the page's language
    "cookie",  # the bypass cookie; an administrator's choice to go on
    "x-forwarded-for",  # the client, from trusted proxies only
    "x-forwarded-proto",  # the scheme, from trusted proxies only
    "forwarded",  # both, as RFC 7239 says them
)
"""Every header the gate reads."""


@dataclass(slots=True)
class Request:
    """Read-only by convention: slotted, not frozen, as it is made per blocked request."""

    method: str
    path: str
    query: str
    remote: str  # the peer's address, as the server saw it
    scheme: str  # "http" or "https", as the server saw it
    headers: Mapping[str, str]  # those of HEADERS the request has
    root: str = ""  # where the application is mounted (WSGI's SCRIPT_NAME, ASGI's root_path)

    def header(self, name: str) -> str:
        return self.headers.get(name, "")

    def asks(self, key: str) -> bool:
        """Does the query string carry `key` (with or without a value)?"""
        return key in parse_qs(self.query, keep_blank_values=True)
