"""Who is asking: the client address, the scheme, the allow-list, and the signed bypass
cookie, from the plain values of a request (core/requests.py).

The client address is the peer's. X-Forwarded-For counts only when the peer is a
configured trusted proxy, and then the rightmost address that is not itself a trusted
proxy is the client: everything left of it could have been written by the client itself.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import ipaddress
import logging
import time
from collections.abc import Iterable
from typing import Any

from upgrader.core.maintenance import check_secret

__all__ = ["check_secret"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
COOKIE = "upgrader_bypass"
log = logging.getLogger("upgrader")


def networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """Parse addresses and CIDR ranges; a bad entry is a configuration error (ValueError)."""
    return tuple(ipaddress.ip_network(e.strip(), strict=False) for e in entries if e.strip())


Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@functools.lru_cache(maxsize=4096)
def _address(text: str) -> Address | None:
    """Parsed once per distinct string (a request's addresses repeat; the cache is bounded)."""
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


def client_ip(remote: str, forwarded_for: str, trusted: tuple[Network, ...]) -> Address | None:
    """The client: the peer, or, when the peer is a trusted proxy, the rightmost address of
    X-Forwarded-For that is not itself a trusted proxy. When every address there is one (a
    browser on the proxy's own machine: `::1` through a web server that reaches the
    application over 127.0.0.1), the leftmost: the request started there, not at the peer."""
    peer = _address(remote)
    if peer is None:
        return None
    if not trusted or not _within(peer, trusted):
        return peer
    origin = peer
    for hop in reversed([h for h in forwarded_for.split(",") if h.strip()]):
        address = _address(hop)
        if address is None:
            return peer  # a garbled header from behind our own proxy: trust only the proxy
        if not _within(address, trusted):
            return address
        origin = address
    return origin


def client_address(remote: str, forwarded_for: str, trusted: tuple[Network, ...]) -> str | None:
    address = client_ip(remote, forwarded_for, trusted)
    return None if address is None else str(address)


def scheme(
    own: str, remote: str, forwarded_proto: str, forwarded: str, trusted: tuple[Network, ...]
) -> str:
    """ "https" when the request came over https: to this server (`own`), or to a trusted
    proxy in front of it that says so (X-Forwarded-Proto, or RFC 7239's Forwarded:
    proto=). What any other client says of itself counts for nothing."""
    if own == "https" or not trusted:
        return own or "http"
    peer = _address(remote)
    if peer is None or not _within(peer, trusted):
        return own or "http"
    said = _last(forwarded_proto)
    if not said:
        for part in _last(forwarded).split(";"):
            key, _, value = part.partition("=")
            if key.strip().lower() == "proto":
                said = value.strip().strip('"')
    said = said.lower()
    return said if said in ("http", "https") else own or "http"


def _last(header: str) -> str:
    """The rightmost element of a list header: what the nearest proxy added."""
    return header.rsplit(",", 1)[-1].strip()


def within(address: Address | None, nets: tuple[Network, ...]) -> bool:
    return address is not None and _within(address, nets)


# ------------------------------------------------------------- bypass cookie


def _signature(key: bytes, stored: str, expires: int) -> str:
    """Keyed by the site's secret key (never stored in the database, so a copy of the
    database or a backup cannot forge a cookie) and by the stored secret's hash (so a new
    bypass secret retires every cookie made for the old one)."""
    material = b"upgrader-bypass-cookie:" + stored.encode("utf-8", "replace")
    per_secret = hmac.new(key, material, hashlib.sha256).digest()
    mac = hmac.new(per_secret, str(expires).encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()).decode().rstrip("=")


def make_cookie(
    key: bytes, stored: str, lifetime: float, now: float | None = None
) -> tuple[str, int]:
    expires = int((now or time.time()) + lifetime)
    return f"{expires}.{_signature(key, stored, expires)}", expires


def cookie_valid(
    key: bytes, value: str | None, stored: str | None, now: float | None = None
) -> bool:
    """Whatever a client sends, an answer: never an exception."""
    if not value or not stored or len(value) > 100:
        return False
    expires_text, _, signature = value.partition(".")
    if not expires_text.isdigit() or len(expires_text) > 12:
        return False
    expires = int(expires_text)
    if expires < (now or time.time()):
        return False
    expected = _signature(key, stored, expires)
    return hmac.compare_digest(signature.encode("utf-8", "replace"), expected.encode())


def read_cookie(header: str, name: str = COOKIE) -> str | None:
    """The cookie `name` of a Cookie header as browsers send it (RFC 6265's `a=1; b=2`), or
    None. Whatever the header holds is an answer, never an exception: bytes that are not
    UTF-8 are replaced (servers hand headers over as latin-1), a malformed pair of another
    application beside ours is skipped, and the first pair of that name wins."""
    if name not in header:
        return None
    text = header.encode("latin-1", "replace").decode("utf-8", "replace")
    for pair in text.split(";"):
        key, sep, value = pair.partition("=")
        if sep and key.strip() == name:
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            return value
    return None
