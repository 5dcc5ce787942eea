"""PyMySQL's TLS against a MariaDB server that offers it: a server of the test's own, on a
port of its own, with a self-signed certificate (the machine's MariaDB offers no TLS).

upgrader's connections build PyMySQL's "preferred" TLS context without the CA store that
context never reads (core/database.py); here they must still speak TLS to a server that
offers it, and a TLS option of the application's must still be PyMySQL's to enforce.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import exc, text

from tests.conftest import SERVER_URLS
from tests.helpers import free_port
from upgrader.core import database

pytestmark = pytest.mark.slow


def _self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.pem", directory / f"{name}-key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture(scope="module")
def tls_server() -> Iterator[tuple[str, Path]]:
    """(URL, the server certificate) of a MariaDB server that offers TLS."""
    if not SERVER_URLS["mysql"]:
        pytest.skip("TEST_MYSQL_URL is not set")
    root = Path(tempfile.mkdtemp(prefix="upgrader-tls-"))
    root.chmod(0o755)  # the server's own user reads its certificate here
    cert, key = _self_signed(root, "server")
    user = ["--user=mysql"] if os.geteuid() == 0 else []
    data = root / "data"
    subprocess.run(
        ["mariadb-install-db", "--no-defaults", f"--datadir={data}", *user,
         "--auth-root-authentication-method=normal", "--skip-test-db"],
        check=True, capture_output=True,
    )  # fmt: skip
    if user:
        for path in (root, *root.rglob("*")):
            shutil.chown(path, "mysql", "mysql")
    port = free_port()
    server = subprocess.Popen(
        ["/usr/sbin/mariadbd", "--no-defaults", *user, f"--datadir={data}", f"--port={port}",
         "--bind-address=127.0.0.1", f"--socket={root / 'sock'}", f"--pid-file={root / 'pid'}",
         f"--ssl-cert={cert}", f"--ssl-key={key}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"mysql+pymysql://root@127.0.0.1:{port}/mysql"
    try:
        _wait_for(url, server)
        yield url, cert
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)


def _wait_for(url: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while True:
        assert server.poll() is None, "the TLS test server stopped"
        try:
            _cipher(url, ssl_disabled=True)
            return
        except exc.OperationalError:
            assert time.monotonic() < deadline, "the TLS test server never answered"
            time.sleep(0.1)


def _cipher(url: str, **connect_args: object) -> str:
    """The TLS cipher of a connection of upgrader's engine ('' in plain text)."""
    engine = database.make_engine(url, connect_args=connect_args)
    try:
        with engine.connect() as conn:
            row = conn.execute(text("SHOW SESSION STATUS LIKE 'Ssl_cipher'")).one()
            return str(row[1])
    finally:
        engine.dispose()


def test_upgraders_connections_speak_tls_to_a_server_that_offers_it(
    tls_server: tuple[str, Path],
) -> None:
    url, _ = tls_server
    assert _cipher(url).startswith("TLS_")  # told nothing: TLS, as PyMySQL's own default
    assert _cipher(url, ssl_disabled=True) == ""  # the application said no TLS


def test_the_applications_tls_options_are_pymysqls_to_enforce(
    tls_server: tuple[str, Path], tmp_path: Path
) -> None:
    url, cert = tls_server
    assert _cipher(url, ssl_ca=str(cert), ssl_verify_cert=True).startswith("TLS_")
    stranger, _ = _self_signed(tmp_path, "stranger")  # a CA that did not sign the server's
    with pytest.raises(exc.OperationalError, match=r"(?i)certificate"):
        _cipher(url, ssl_ca=str(stranger), ssl_verify_cert=True)
