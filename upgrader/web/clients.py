"""Who is asking: the client address, the allow-list, and the signed bypass cookie.

The client address is REMOTE_ADDR. X-Forwarded-For counts only when
REMOTE_ADDR is a configured trusted proxy, and then the rightmost address that
is not itself a trusted proxy is the client: everything left of it could have
been written by the client itself.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import time
from collections.abc import Iterable, Mapping
from typing import Any

from upgrader.core.maintenance import check_secret

__all__ = ["check_secret"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
COOKIE = "upgrader_bypass"


def networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """Parse addresses and CIDR ranges; a bad entry is a configuration error (ValueError)."""
    return tuple(ipaddress.ip_network(e.strip(), strict=False) for e in entries if e.strip())


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def _within(address: Any, nets: tuple[Network, ...]) -> bool:
    return any(address.version == n.version and address in n for n in nets)


def client_address(environ: Mapping[str, Any], trusted: tuple[Network, ...]) -> str | None:
    remote = _address(str(environ.get("REMOTE_ADDR", "")))
    if remote is None:
        return None
    if not trusted or not _within(remote, trusted):
        return str(remote)
    forwarded = str(environ.get("HTTP_X_FORWARDED_FOR", ""))
    for hop in reversed([h for h in forwarded.split(",") if h.strip()]):
        address = _address(hop)
        if address is None:
            return str(remote)  # a garbled header from behind our own proxy: trust only the proxy
        if not _within(address, trusted):
            return str(address)
    return str(remote)


def allowed(address: str | None, nets: tuple[Network, ...]) -> bool:
    parsed = _address(address) if address else None
    return parsed is not None and _within(parsed, nets)


# ------------------------------------------------------------- bypass secret


def _signature(stored: str, expires: int) -> str:
    key = hashlib.sha256(b"upgrader-bypass-cookie:" + stored.encode()).digest()
    mac = hmac.new(key, str(expires).encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def make_cookie(stored: str, lifetime: float, now: float | None = None) -> tuple[str, int]:
    expires = int((now or time.time()) + lifetime)
    return f"{expires}.{_signature(stored, expires)}", expires


def cookie_valid(value: str | None, stored: str | None, now: float | None = None) -> bool:
    if not value or not stored:
        return False
    expires_text, _, signature = value.partition(".")
    if not expires_text.isdigit():
        return False
    expires = int(expires_text)
    if expires < (now or time.time()):
        return False
    return hmac.compare_digest(signature, _signature(stored, expires))


def read_cookie(environ: Mapping[str, Any], name: str = COOKIE) -> str | None:
    from http.cookies import CookieError, SimpleCookie

    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(str(environ.get("HTTP_COOKIE", "")))
    except CookieError:
        return None
    morsel = jar.get(name)
    return morsel.value if morsel else None
