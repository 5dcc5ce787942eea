"""The web-server fallback against a real nginx, and several server processes on one database."""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import SAMPLE, cli_args, free_port, install, run_cli, wait_for_port
from upgrader.sample.releases import CURRENT

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def get(port: int, path: str = "/", source: str = "127.0.0.1") -> tuple[int, dict[str, str], str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5, source_address=(source, 0))
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read().decode()
    finally:
        conn.close()


@pytest.fixture
def nginx_available() -> None:
    if not os.path.exists(NGINX) and not os.environ.get("CI"):
        pytest.skip("nginx is not installed (.ci/run installs it)")


def test_nginx_serves_the_static_page_while_the_flag_exists(
    nginx_available: None, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    install(url, CURRENT)
    static = tmp_path / "static"
    base = cli_args(url)
    on = run_cli(
        *base, "maintenance", "on", "--message", "New disks tonight", "--static", str(static)
    )
    assert on.exit_code == 0, on.output
    assert (static / "maintenance.html").is_file() and (static / "maintenance.flag").is_file()
    snippet = run_cli(*base, "webserver", "nginx", "--static", str(static), "--allow", "127.0.0.2")
    assert snippet.exit_code == 0
    http_part, server_part = snippet.output.split("# In the server { } block of the site:")
    port = free_port()
    temp = tmp_path / "nginx"
    temp.mkdir()
    (temp / "nginx.conf").write_text(f"""
user root;
worker_processes 1;
daemon off;
pid {temp}/nginx.pid;
error_log {temp}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    {http_part}
    server {{
        listen 127.0.0.1:{port};
        {server_part}
        location / {{ return 200 "the application\\n"; }}
    }}
}}
""")
    server = subprocess.Popen(
        [NGINX, "-p", str(temp), "-c", str(temp / "nginx.conf")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port)
        status, headers, body = get(port, "/books/1")
        assert status == 503
        assert "Down for Maintenance" in body and "New disks tonight" in body
        assert headers["Retry-After"] == "120"
        assert headers["Cache-Control"] == "no-store"
        status, _, body = get(port, "/books/1", source="127.0.0.2")  # allow-listed
        assert (status, body) == (200, "the application\n")
        off = run_cli(*base, "maintenance", "off", "--static", str(static))
        assert off.exit_code == 0 and not (static / "maintenance.flag").exists()
        assert get(port, "/")[0] == 200
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.mark.slow
def test_every_server_process_blocks_within_the_ttl(server_db_url: str, tmp_path: Path) -> None:
    """Three `upgrader serve` processes on one database; maintenance is switched on elsewhere."""
    url = server_db_url
    install(url, CURRENT)
    env = {k: v for k, v in os.environ.items() if not k.startswith("UPGRADER_")}
    env.update(
        UPGRADER_DATABASE_URL=url,
        SHELF_DATABASE_URL=url,
        UPGRADER_APP=SAMPLE,
        UPGRADER_CACHE_TTL="1",
        UPGRADER_INSTALLER_DIR=str(tmp_path / "none"),
    )
    ports = [free_port() for _ in range(3)]
    servers = [
        subprocess.Popen(
            [sys.executable, "-m", "upgrader", "serve", "--port", str(p)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for p in ports
    ]
    try:
        for port in ports:
            wait_for_port(port)
            assert get(port)[0] == 200
        switched = time.monotonic()
        assert run_cli(*cli_args(url), "maintenance", "on").exit_code == 0
        blocked_after: list[float] = []
        for port in ports:
            while get(port)[0] != 503:
                assert time.monotonic() - switched < 10, "a server never blocked"
                time.sleep(0.05)
            blocked_after.append(time.monotonic() - switched)
        # TTL 1 s, plus the time a refresh takes: every process blocks well within 2 s.
        assert max(blocked_after) < 2.0, blocked_after
        assert run_cli(*cli_args(url), "maintenance", "off").exit_code == 0
        time.sleep(1.5)
        assert [get(p)[0] for p in ports] == [200, 200, 200]
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            server.wait(timeout=10)


class Proxy:
    """A TCP proxy to the database server that the test can cut and restore."""

    def __init__(self, target_port: int) -> None:
        import threading

        self.target = target_port
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(32)
        self.port = int(self.listener.getsockname()[1])
        self.up = True
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import threading

        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.up:
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.up = False
        for s in self.sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        self.sockets.clear()

    def restore(self) -> None:
        self.up = True


def test_database_outage_gives_err1_and_recovers(server_db_url: str, tmp_path: Path) -> None:
    from sqlalchemy import make_url
    from werkzeug.test import Client

    from tests.test_guard import guard

    install(server_db_url, CURRENT)
    real = make_url(server_db_url)
    proxy = Proxy(real.port or (5432 if real.get_backend_name() == "postgresql" else 3306))
    via_proxy = real.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    middleware = guard(via_proxy, tmp_path, cache_ttl=0.5, connect_timeout=1)
    client = Client(middleware)
    assert client.get("/").status_code == 200
    proxy.cut()
    time.sleep(0.6)
    started = time.monotonic()
    down = client.get("/")
    assert time.monotonic() - started < 12  # bounded by the connect and read timeouts
    assert down.status_code == 503 and down.headers["X-Upgrader-State"] == "database_unavailable"
    assert "Down for Maintenance (Err1)" in down.text
    cached = time.monotonic()
    for _ in range(50):  # within the TTL the answer is cached: no request waits again
        assert client.get("/").status_code == 503
    assert time.monotonic() - cached < 2
    proxy.restore()
    deadline = time.monotonic() + 10
    while client.get("/").status_code != 200:
        assert time.monotonic() < deadline, "the guard did not recover"
        time.sleep(0.2)
    middleware.cache.close()
