"""Whatever bytes a client sends, every guard path answers: never a 500, never a trace.

Raw requests over a socket to `upgrader serve` (waitress), so the bytes reach the guard as
a real server hands them over: cookies, headers, paths and query strings that are not
UTF-8, not well formed, or absurdly long, on the blocked pages, the status endpoint, the
bypass, the admin console and the installer; for visitors and for administrators, while
an upgrade is pending and while maintenance is on. And behind a proxy that terminates
TLS, the cookies set are Secure exactly when a trusted proxy says the visitor used https.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import MIGRATIONS, cli_args, execute, install, run_cli
from upgrader.core.maintenance import hash_secret

SECRET = "open-sesame-4242"
VISITOR = b"203.0.113.5"
ADMIN = b"198.51.100.7"

PATHS = (
    b"/",
    b"/authors",
    b"/upgrader/status",
    b"/upgrader/status?ready",
    b"/upgrader/bypass/wrong",
    b"/upgrader/bypass/" + SECRET.encode(),
    b"/upgrader/bypass/%ff%fe",
    b"/upgrader/admin/",
    b"/upgrader/admin/key",
    b"/install",
    b"/install/key",
    b"/install/checks",
    b"/%ff%fe/\xe9",
    b"/?%ff%fe=%zz&upgrader-continue",
)

HEADERS = (
    b"Cookie: other=\xe9",
    b"Cookie: upgrader_bypass=\xff\xfe; upgrader_wizard=\xe9; upgrader_console=\xc3",
    b'Cookie: =;;;=\xc3; "=\xe9; upgrader_bypass="1.\xe9"',
    b"Cookie: upgrader-continue=1; upgrader_bypass=" + b"9" * 6000,
    b"Cookie: " + b"a=\xe9; " * 700,
    b"Accept-Language: \xff\xfe;q=x, de;q=\xe9",
    b"Accept: application/json\xe9, text/html;q=\xff",
    b"X-Forwarded-For: \xe9, 1.2.3.4, ::ffff:\xff",
    b"X-Forwarded-Proto: \xe9",
    b"Forwarded: for=\xe9;proto=\xff, for=[::1",
    b"User-Agent: \x01\x02\xe9",
)


def ask(port: int, method: bytes, path: bytes, *headers: bytes, body: bytes = b"") -> bytes:
    """One raw HTTP/1.1 request; the whole answer, as bytes."""
    lines = [method + b" " + path + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close"]
    lines += headers
    if body:
        lines += [b"Content-Type: application/x-www-form-urlencoded"]
        lines += [b"Content-Length: " + str(len(body)).encode()]
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


@pytest.fixture
def site(db_url: str, tmp_path: Path, serve: Any) -> Iterator[Any]:
    """The sample, one release behind its database (Err2), with a bypass secret set;
    198.51.100.7 is allow-listed, and 127.0.0.1 is the trusted proxy in front."""
    install(db_url, "1.0.0")
    secret = hash_secret(SECRET)
    execute(db_url, "UPDATE upgrader_state SET maintenance_secret = :s", s=secret)
    yield serve(
        db_url,
        MIGRATIONS,
        UPGRADER_TRUSTED_PROXIES="127.0.0.1",
        UPGRADER_ALLOW_IPS="198.51.100.7",
    )


def test_no_input_gives_a_500_on_any_guard_path(site: Any, db_url: str, tmp_path: Path) -> None:
    port = int(site.base.rsplit(":", 1)[1])
    answers: list[tuple[bytes, bytes, bytes, int]] = []
    for phase in ("upgrade pending", "maintenance"):
        if phase == "maintenance":
            run_cli(*cli_args(db_url, tmp_path), "upgrade", "--yes", "--no-backup")
            run_cli(*cli_args(db_url, tmp_path), "maintenance", "on", "--message", "back soon")
        for who in (VISITOR, ADMIN):
            for header in HEADERS:
                for path in PATHS:
                    forwarded = b"X-Forwarded-For: " + who
                    answer = ask(port, b"GET", path, forwarded, header)
                    answers.append((who, header, path, status(answer)))
                    assert b"Traceback" not in answer, (phase, who, header, path)
                posted = ask(
                    port,
                    b"POST",
                    b"/install/key",
                    b"X-Forwarded-For: " + who,
                    header,
                    body=b"key=%ff%fe\xe9&csrf_token=\xe9",
                )
                answers.append((who, header, b"POST /install/key", status(posted)))
    errors = [a for a in answers if a[3] >= 500 and a[3] != 503]
    assert not errors, errors
    assert len(answers) == 2 * 2 * len(HEADERS) * (len(PATHS) + 1)
    # the requests were answered by the guard, not turned away by the server before it
    assert sum(1 for a in answers if a[3] == 503) > len(answers) // 4


def set_cookies(answer: bytes) -> list[bytes]:
    head = answer.split(b"\r\n\r\n", 1)[0]
    return [line for line in head.split(b"\r\n") if line.lower().startswith(b"set-cookie:")]


def test_cookies_are_secure_behind_a_trusted_https_proxy(site: Any) -> None:
    port = int(site.base.rsplit(":", 1)[1])
    https = b"X-Forwarded-Proto: https"
    for path in (b"/install/key", b"/upgrader/admin/key", b"/upgrader/bypass/" + SECRET.encode()):
        over_https = set_cookies(ask(port, b"GET", path, https))
        assert over_https and all(b"; Secure" in c for c in over_https), (path, over_https)
        plain = set_cookies(ask(port, b"GET", path))
        assert plain and not any(b"Secure" in c for c in plain), (path, plain)
        rfc7239 = set_cookies(ask(port, b"GET", path, b'Forwarded: for=1.2.3.4;proto="https"'))
        assert all(b"; Secure" in c for c in rfc7239), (path, rfc7239)


def test_an_untrusted_client_cannot_claim_https(db_url: str, tmp_path: Path, serve: Any) -> None:
    install(db_url, "1.0.0")
    served = serve(db_url, MIGRATIONS, UPGRADER_TRUSTED_PROXIES="10.0.0.0/8")
    port = int(served.base.rsplit(":", 1)[1])
    cookies = set_cookies(ask(port, b"GET", b"/install/key", b"X-Forwarded-Proto: https"))
    assert cookies and not any(b"Secure" in c for c in cookies), cookies
