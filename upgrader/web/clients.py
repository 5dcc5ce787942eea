"""Who is asking: the client address, the allow-list, and the signed bypass cookie.

The client address is REMOTE_ADDR. X-Forwarded-For counts only when
REMOTE_ADDR is a configured trusted proxy, and then the rightmost address that
is not itself a trusted proxy is the client: everything left of it could have
been written by the client itself.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import ipaddress
import logging
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
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


def client_ip(environ: Mapping[str, Any], trusted: tuple[Network, ...]) -> Address | None:
    remote = _address(str(environ.get("REMOTE_ADDR", "")))
    if remote is None:
        return None
    if not trusted or not _within(remote, trusted):
        return remote
    forwarded = str(environ.get("HTTP_X_FORWARDED_FOR", ""))
    for hop in reversed([h for h in forwarded.split(",") if h.strip()]):
        address = _address(hop)
        if address is None:
            return remote  # a garbled header from behind our own proxy: trust only the proxy
        if not _within(address, trusted):
            return address
    return remote


def client_address(environ: Mapping[str, Any], trusted: tuple[Network, ...]) -> str | None:
    address = client_ip(environ, trusted)
    return None if address is None else str(address)


def within(address: Address | None, nets: tuple[Network, ...]) -> bool:
    return address is not None and _within(address, nets)


# ------------------------------------------------------------- the site's key

KEY_FILE = ".upgrader-key"


def site_key(secret: str | None, directory: Path) -> bytes:
    """The key that signs bypass cookies: from the configured secret (UPGRADER_SECRET_KEY,
    or Flask's SECRET_KEY; the same on every node), else from a 0600 file made on first
    use in a 0700 directory (one node). Never derived from anything in the database."""
    if secret:
        return hashlib.sha256(b"upgrader-site-key:" + secret.encode()).digest()
    path = directory / KEY_FILE
    try:
        return bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError):
        pass
    key = os.urandom(32)
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(key.hex() + "\n")
    except FileExistsError:
        return bytes.fromhex(path.read_text().strip())  # another process made it first
    except OSError:
        log.warning(
            "cannot write %s: bypass cookies are valid in this process only; set "
            "UPGRADER_SECRET_KEY",
            path,
        )
    return key


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


def read_cookie(environ: Mapping[str, Any], name: str = COOKIE) -> str | None:
    """The cookie as browsers send it, parsed as werkzeug parses it: a malformed cookie
    of another application beside ours must not hide ours."""
    from werkzeug.http import parse_cookie

    value = parse_cookie(str(environ.get("HTTP_COOKIE", ""))).get(name)
    return value if isinstance(value, str) else None
