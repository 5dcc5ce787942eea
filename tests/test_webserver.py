"""The web-server fallback against a real nginx, and several server processes on one database."""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import SAMPLE, cli_args, free_port, install, run_cli, serving, wait_for_port
from upgrader.sample.releases import CURRENT

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
APACHE = shutil.which("apache2") or "/usr/sbin/apache2"
APACHE_MODULES = Path("/usr/lib/apache2/modules")


def get(
    port: int, path: str = "/", source: str = "127.0.0.1", host: str = "127.0.0.1"
) -> tuple[int, dict[str, str], str]:
    conn = http.client.HTTPConnection(host, port, timeout=5, source_address=(source, 0))
    try:
        conn.request("GET", path, headers={"Accept": "text/html"})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read().decode()
    finally:
        conn.close()


@contextlib.contextmanager
def nginx(snippet: str, port: int, upstream: int, work: Path) -> Iterator[None]:
    """A real nginx with the printed snippet, proxying to `upstream`."""
    http_part, rest = snippet.split("# In the server { } block of the site:")
    server_part, location_part = rest.split("# In the location that proxies")
    location_part = location_part.split("\n", 1)[1]
    (work / "nginx.conf").write_text(f"""
user root;
worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    types {{ text/html html; image/svg+xml svg; }}
    {http_part}
    server {{
        listen 127.0.0.1:{port};
        listen [::1]:{port};
        {server_part}
        location / {{
            proxy_pass http://127.0.0.1:{upstream};
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            {location_part}
        }}
    }}
}}
""")
    server = subprocess.Popen(
        [NGINX, "-p", str(work), "-c", str(work / "nginx.conf")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port)
        yield
    finally:
        server.terminate()
        server.wait(timeout=10)


@contextlib.contextmanager
def apache(snippet: str, port: int, upstream: int, work: Path) -> Iterator[None]:
    """A real Apache httpd with the printed snippet, proxying to `upstream` (mod_proxy adds
    X-Forwarded-For by itself). Its workers run as www-data, so `work` must be readable."""
    needed = [
        "mpm_event",
        "authz_core",
        "alias",
        "rewrite",
        "headers",
        "proxy",
        "proxy_http",
        "mime",
    ]
    modules = "\n".join(f"LoadModule {m}_module {APACHE_MODULES}/mod_{m}.so" for m in needed)
    conf = work / "httpd.conf"
    conf.write_text(f"""
ServerRoot {work}
ServerName localhost
PidFile {work}/httpd.pid
ErrorLog {work}/error.log
DefaultRuntimeDir {work}
Mutex file:{work}
User www-data
Group www-data
{modules}
TypesConfig /etc/mime.types
Listen 127.0.0.1:{port}
Listen [::1]:{port}
<VirtualHost *:{port}>
{snippet}
ProxyPass / http://127.0.0.1:{upstream}/
ProxyPassReverse / http://127.0.0.1:{upstream}/
</VirtualHost>
""")
    started = subprocess.run(
        [APACHE, "-f", str(conf), "-k", "start"], capture_output=True, text=True
    )
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        wait_for_port(port)
        yield
    finally:
        subprocess.run([APACHE, "-f", str(conf), "-k", "stop"], capture_output=True)
        pid = work / "httpd.pid"
        deadline = time.monotonic() + 10
        while pid.exists() and time.monotonic() < deadline:
            time.sleep(0.1)


SERVERS = {"nginx": (NGINX, nginx), "apache": (APACHE, apache)}


@pytest.fixture
def readable_dir() -> Iterator[Path]:
    """A directory the web server's own user can read (pytest's tmp_path is private)."""
    path = Path(tempfile.mkdtemp(prefix="upgrader-www-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("status", [503, 500])
@pytest.mark.parametrize("server", ["nginx", "apache"])
def test_the_web_server_serves_the_static_page(
    server: str, status: int, tmp_path: Path, readable_dir: Path
) -> None:
    """The printed snippet in a real server: flag on → the page under the chosen status for
    all but the allow-list (IPv4, IPv6, CIDR), its assets load; flag off → the application;
    the application stopped → the page, saying what the guard last knew."""
    binary, start_server = SERVERS[server]
    if not os.path.exists(binary) and not os.environ.get("CI"):
        pytest.skip(f"{server} is not installed (.ci/run installs it)")
    url = f"sqlite:///{tmp_path / 'app.db'}"
    install(url, CURRENT)
    static, work = readable_dir / "static", readable_dir / "server"
    work.mkdir()
    templates = tmp_path / "templates"  # a custom page with an asset of its own
    templates.mkdir()
    (templates / "blocked.html").write_text(
        '<!doctype html><title>{{ headline }}</title><img alt="logo" '
        'src="/upgrader-maintenance/logo.svg"><h1>{{ headline }}</h1><p>{{ summary }}</p>'
    )
    allow = ["127.0.0.2", "::1", "127.0.0.4/31"]
    base = cli_args(url)
    snippet = run_cli(
        *base, "webserver", server, "--static", str(static), "--status", str(status),
        *[f"--allow={a}" for a in allow],
    )  # fmt: skip
    assert snippet.exit_code == 0, snippet.output

    app_port, port = free_port(), free_port()
    app_env = {k: v for k, v in os.environ.items() if not k.startswith("UPGRADER_")}
    app_env.update(
        UPGRADER_APP=SAMPLE,
        SHELF_DATABASE_URL=url,
        UPGRADER_CACHE_TTL="0.5",
        UPGRADER_STATIC_DIR=str(static),
        UPGRADER_TEMPLATE_DIR=str(templates),
        UPGRADER_TRUSTED_PROXIES="127.0.0.1,::1",
        UPGRADER_INSTALLER_DIR=str(tmp_path / "none"),
    )
    app = subprocess.Popen(
        [sys.executable, "-m", "upgrader", "serve", "--port", str(app_port)],
        env=app_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(app_port)
        with start_server(snippet.stdout, port, app_port, work):
            assert get(port, "/books/1")[0] == 200  # no flag: the application

            on = run_cli(
                *base,
                "maintenance", "on", "--message", "New disks tonight",
                *[f"--allow={a}" for a in allow], "--static", str(static),
                env={"UPGRADER_TEMPLATE_DIR": str(templates)},
            )  # fmt: skip
            assert on.exit_code == 0, on.output
            # until the guard has read it too, so that what follows tests its allow-list
            deadline = time.monotonic() + 30
            while get(app_port, "/books/1")[0] != 503:
                assert time.monotonic() < deadline, "the guard never saw maintenance"
                time.sleep(0.1)
            (static / "logo.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"/>')
            # Flag on: the page, under the chosen status, for everyone not allow-listed.
            for source in ("127.0.0.1", "127.0.0.6"):
                code, headers, body = get(port, "/books/1", source=source)
                assert code == status, (source, code, body)
                assert "New disks tonight" in body
                assert 'src="/upgrader-maintenance/logo.svg"' in body
                assert headers["Retry-After"] == "120"
                assert headers["Cache-Control"] == "no-store"
                assert headers["X-Upgrader-State"] == "maintenance"
            code, headers, _ = get(port, "/upgrader-maintenance/logo.svg")
            assert (code, headers["Content-Type"]) == (200, "image/svg+xml")
            # The allow-list gets through the web server, and the guard behind it believes
            # the address the web server forwards: the application's own page.
            for source, host in (("127.0.0.2", "127.0.0.1"), ("127.0.0.5", "127.0.0.1"),
                                 ("::1", "::1")):  # fmt: skip
                code, headers, body = get(port, "/", source=source, host=host)
                assert code == 200 and "Shelf" in body, (source, code, body[:300])
                assert "X-Upgrader-State" not in headers

            # Maintenance changed elsewhere: the guard rewrites the page on its next refresh.
            again = run_cli(
                *base, "maintenance", "on", "--message", "Back at six",
                *[f"--allow={a}" for a in allow],
            )  # fmt: skip
            assert again.exit_code == 0, again.output
            deadline = time.monotonic() + 10
            while "Back at six" not in (static / "maintenance.html").read_text():
                assert time.monotonic() < deadline, "the guard never rewrote the static page"
                get(port, "/", source="127.0.0.2")
                time.sleep(0.2)
            assert get(port, "/")[0] == status

            # The flag removed by hand: requests reach the guard, whose own 503 passes.
            (static / "maintenance.flag").unlink()
            code, headers, body = get(port, "/books/1")
            assert (code, headers.get("X-Frame-Options")) == (503, "DENY"), (code, headers)
            assert "Back at six" in body
            assert get(port, "/", source="127.0.0.2")[0] == 200

            # The application stopped: the web server answers with the last page it has.
            app.terminate()
            app.wait(timeout=10)
            code, headers, body = get(port, "/books/1")
            assert code in (502, 503) and "X-Frame-Options" not in headers, (code, headers)
            assert "Back at six" in body
            assert headers["Retry-After"] == "120" and headers["Cache-Control"] == "no-store"
    finally:
        app.terminate()
        app.wait(timeout=10)


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
    with serving(3, env) as servers:
        ports = [port for port, _ in servers]
        for port in ports:
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
