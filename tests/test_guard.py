"""The request guard around a plain (non-Flask) WSGI application, on each database."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import Client

from tests.asgi import get as asgi_get
from tests.helpers import MIGRATIONS, FlaskRunner, code_at, execute, install, run_cli
from tests.test_states import CASES, _release_held_locks  # noqa: F401 (its fixture)
from upgrader.core import clients, keys
from upgrader.core.times import utcnow
from upgrader.sample import create_app
from upgrader.sample.releases import CURRENT, RELEASES
from upgrader.settings import resolve
from upgrader.web import background
from upgrader.web.asgi import UpgraderMiddleware as AsgiGuard
from upgrader.web.middleware import UpgraderMiddleware


def plain_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """A WSGI application with no framework at all."""
    banner = environ.get("upgrader.banner", {}).get("text", "")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"the application{' | ' + banner if banner else ''}".encode()]


ADMIN_PAGE = "you are seeing this because you are an administrator"


async def plain_asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The same application, in ASGI."""
    banner = scope.get("upgrader.banner", {}).get("text", "")
    body = f"the application{' | ' + banner if banner else ''}".encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def guard(url: str, tmp_path: Path, release: str = CURRENT, **flags: Any) -> UpgraderMiddleware:
    return UpgraderMiddleware(plain_app, guard_settings(url, tmp_path, release, **flags))


def guard_settings(url: str, tmp_path: Path, release: str = CURRENT, **flags: Any) -> Any:
    values: dict[str, Any] = {
        "database_url": url,
        "migrations": str(MIGRATIONS if release == CURRENT else code_at(release, tmp_path)),
        "code_version": release,
        "installer_dir": str(tmp_path / "no-installer"),
        "cache_ttl": 60,
        "releases": RELEASES,
    }
    values.update(flags)
    return resolve(values, environ={})


def cli(url: str, *args: str) -> Any:
    config = ("--migrations", str(MIGRATIONS), "--code-version", CURRENT)
    result = run_cli("--database-url", url, *config, *args)
    assert result.exit_code in (0, 5), result.output
    return result


@pytest.mark.parametrize("name", CASES)
def test_every_state_is_answered(name: str, db_url: str, tmp_path: Path) -> None:
    case = CASES[name]
    case.setup(db_url, tmp_path)
    middleware = guard(db_url, tmp_path, case.release, allow_ips="10.9.8.0/24")
    client = Client(middleware)
    page = client.get("/books/1", headers={"Accept": "text/html"})
    status = client.get("/upgrader/status").json
    assert status is not None and status["state"] == case.state
    assert "diagnosis" not in status and "fix" not in status  # anonymous
    if case.state == "ok":
        assert page.status_code == 200 and page.text.startswith("the application")
        return
    assert page.status_code == 503
    assert page.headers["Cache-Control"] == "no-store"
    assert page.headers["X-Upgrader-State"] == case.state
    assert int(page.headers["Retry-After"]) > 0
    heading = f"Down for Maintenance ({case.code})" if case.code else "Down for Maintenance"
    if case.state != "not_installed":
        assert f"<h1>{heading}</h1>" in page.text
    for secret_part in ("Fix:", "upgrader ", "alembic", "Traceback"):
        assert secret_part not in page.text  # no internals for anonymous visitors
    problem = client.get("/books/1", headers={"Accept": "application/json"})
    assert problem.status_code == 503
    assert problem.headers["Content-Type"] == "application/problem+json"
    assert (problem.json["state"], problem.json["code"], problem.json["status"]) == (
        case.state,
        case.code,
        503,
    )
    head = client.head("/books/1")
    assert head.status_code == 503 and head.data == b""
    # An allow-listed administrator: in maintenance, the site; while the database does not
    # fit the code, a page with the state and its fix first, then the site if they go on.
    at = {"REMOTE_ADDR": "10.9.8.7"}
    admin = client.get("/books/1", environ_base=at)
    if case.state == "maintenance":
        assert admin.status_code == 200 and "the application" in admin.text
    else:
        assert ADMIN_PAGE in admin.text and case.state in admin.text
        assert admin.headers["X-Frame-Options"] == "DENY"
        finishing = ("upgrade_pending", "upgrade_interrupted", "upgrade_failed")
        if case.state in finishing and name != "unadopted_at_head":
            # No install/ here: administrators are told how to get it back.
            assert "copy the release&#39;s install/ directory there" in admin.text
            assert str(tmp_path) in admin.text  # where it goes
        go_on = client.get("/books/1?upgrader-continue", environ_base=at)
        assert go_on.status_code == 303
        admin = client.get("/books/1", environ_base=at)
        assert admin.status_code == 200 and "the application" in admin.text
        assert case.state in admin.text  # the banner, with the state and its fix
    same_under_asgi(client, db_url, tmp_path, case.release)
    full = client.get("/upgrader/status", environ_base={"REMOTE_ADDR": "10.9.8.7"}).json
    assert (
        full["diagnosis"]["fix"]
        == json.loads(
            run_cli(
                "--database-url",
                db_url,
                "--migrations",
                str(MIGRATIONS if case.release == CURRENT else code_at(case.release, tmp_path)),
                "--code-version",
                case.release,
                "status",
                "--json",
                env={"UPGRADER_INSTALLER_DIR": str(tmp_path / "no-installer")},
            ).output
        )["fix"]
    )


def same_under_asgi(client: Client, db_url: str, tmp_path: Path, release: str) -> None:
    """The ASGI guard answers as the WSGI one does: the same gate, another protocol."""
    client = Client(client.application)  # no cookie from earlier steps
    asgi = AsgiGuard(plain_asgi, guard_settings(db_url, tmp_path, release, allow_ips="10.9.8.0/24"))
    # Primed, as its server's lifespan startup would: a cold first request waits a second at
    # most for the diagnosis, then gets the provisional Err1 (seen under CI's load).
    asgi.cache.get()
    asks: list[tuple[str, dict[str, str], str]] = [
        ("/books/1", {"Accept": "text/html"}, "203.0.113.9"),
        ("/books/1", {"Accept": "application/json"}, "203.0.113.9"),
        ("/books/1", {"Accept": "text/html", "Accept-Language": "de"}, "203.0.113.9"),
        ("/books/1", {"Accept": "text/html"}, "10.9.8.7"),
        ("/upgrader/status", {}, "203.0.113.9"),
    ]
    for path, headers, address in asks:
        wsgi = client.get(path, headers=headers, environ_base={"REMOTE_ADDR": address})
        answer = asgi_get(asgi, path, headers, client=address)
        assert answer.status == wsgi.status_code, (path, headers, address)
        if path != "/upgrader/status":  # its checked_at moves
            assert answer.body == wsgi.data, (path, headers, address)
        for name in ("retry-after", "cache-control", "x-upgrader-state", "content-type"):
            assert answer.headers.get(name) == wsgi.headers.get(name), name
    asgi.cache.close()


def test_status_code_and_readiness_are_configurable(db_url: str, tmp_path: Path) -> None:
    install(db_url, "1.0.0")
    client = Client(guard(db_url, tmp_path, blocked_status=500))
    assert client.get("/").status_code == 500
    assert client.get("/upgrader/status").status_code == 200
    assert client.get("/upgrader/status?ready").status_code == 503


def test_exempt_paths_pass(db_url: str, tmp_path: Path) -> None:
    install(db_url, "1.0.0")
    client = Client(guard(db_url, tmp_path, allow_paths="/healthz,/static/*"))
    assert client.get("/healthz").status_code == 200
    assert client.get("/static/site.css").status_code == 200
    # The installer's paths belong to the wizard; without install/ the guard says it is gone.
    assert client.get("/install").status_code == 404
    assert client.get("/install/step/2").status_code == 404
    assert client.get("/installer-not-really").status_code == 503
    assert client.get("/staticfiles").status_code == 503


def test_forged_forwarded_for_is_ignored(db_url: str, tmp_path: Path) -> None:
    install(db_url, "1.0.0")
    client = Client(
        guard(db_url, tmp_path, allow_ips="203.0.113.7,2001:db8::/32", trusted_proxies="127.0.0.1")
    )

    def admin(environ: dict[str, str]) -> bool:
        return ADMIN_PAGE in client.get("/", environ_base=environ).text

    assert not admin({"REMOTE_ADDR": "198.51.100.9", "HTTP_X_FORWARDED_FOR": "203.0.113.7"})
    assert admin({"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "203.0.113.7"})
    # A client behind our proxy cannot prepend an allowed address either.
    assert not admin({"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "203.0.113.7, 1.2.3.4"})
    assert admin({"REMOTE_ADDR": "2001:db8::42"})
    assert not admin({"REMOTE_ADDR": "2001:db9::42"})


def test_client_address_rules() -> None:
    trusted = clients.networks(["10.0.0.0/8"])
    addr = clients.client_address
    assert addr("192.0.2.1", "1.2.3.4", trusted) == "192.0.2.1"
    assert addr("10.0.0.2", "1.2.3.4, 10.0.0.9", trusted) == "1.2.3.4"
    assert addr("10.0.0.2", "garbage", trusted) == "10.0.0.2"
    # every hop a trusted proxy: the request started at the leftmost, not at the peer
    assert addr("10.0.0.2", "10.0.0.7, 10.0.0.9", trusted) == "10.0.0.7"
    assert addr("10.0.0.2", "", trusted) == "10.0.0.2"
    # what a client writes left of an untrusted hop still counts for nothing
    assert addr("10.0.0.2", "10.0.0.7, 1.2.3.4, 10.0.0.9", trusted) == "1.2.3.4"
    assert addr("::ffff:192.0.2.5", "", ()) == "192.0.2.5"
    with pytest.raises(ValueError):
        clients.networks(["not-an-address"])


# the 5,000-byte cookie is sent on purpose; Werkzeug's test client warns that browsers drop it
@pytest.mark.filterwarnings("ignore:The 'upgrader_bypass' cookie is too large")
def test_bypass_cookie_valid_expired_forged(db_url: str, tmp_path: Path) -> None:
    install(db_url, CURRENT)
    cli(db_url, "maintenance", "on", "--message", "Moving servers", "--secret", "let-me-in-42")
    middleware = guard(db_url, tmp_path)
    client = Client(middleware)
    assert client.get("/").status_code == 503
    wrong = client.get("/upgrader/bypass/guess")
    assert wrong.status_code == 503 and "Set-Cookie" not in wrong.headers
    granted = client.get("/upgrader/bypass/let-me-in-42")
    assert granted.status_code == 303
    cookie = granted.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "let-me-in-42" not in cookie
    assert client.get("/").status_code == 200  # the client keeps the cookie
    stored = middleware.cache.get().maintenance.secret_hash  # type: ignore[union-attr]
    assert stored is not None
    expired, _ = clients.make_cookie(middleware.key, stored, 60, now=1_000_000)
    other_site = keys.site_key("another site's secret", tmp_path)
    valid_elsewhere, _ = clients.make_cookie(other_site, stored, 600)
    forged = expired.split(".")[0].replace("1000060", "9999999999") + "." + expired.split(".")[1]
    for value in (expired, forged, valid_elsewhere, "9999999999.AAAA", "garbage", "9" * 5000):
        fresh = Client(middleware)
        fresh.set_cookie(clients.COOKIE, value)
        assert fresh.get("/").status_code == 503, value


def test_maintenance_levels_and_windows(db_url: str, tmp_path: Path) -> None:
    install(db_url, CURRENT)
    args = ["--migrations", str(MIGRATIONS)]

    def answer() -> Any:
        return Client(guard(db_url, tmp_path)).get("/")

    cli(db_url, *args, "maintenance", "on", "--message", "Back soon", "--until", "+30m")
    blocked = answer()
    assert blocked.status_code == 503 and "Back soon" in blocked.text
    assert 1700 <= int(blocked.headers["Retry-After"]) <= 1800
    cli(db_url, *args, "maintenance", "off")
    assert answer().status_code == 200
    cli(db_url, *args, "maintenance", "on", "--level", "banner", "--message", "Slow tonight")
    banner = answer()
    assert banner.status_code == 200 and "Slow tonight" in banner.text
    cli(
        db_url, *args, "maintenance", "on", "--start", "+1h", "--end", "+2h", "--message", "Upgrade"
    )
    upcoming = answer()
    assert upcoming.status_code == 200 and "Scheduled maintenance from" in upcoming.text
    later = (utcnow() - dt.timedelta(minutes=1)).isoformat(sep=" ")
    execute(db_url, f"UPDATE upgrader_state SET maintenance_start = '{later}'")
    assert answer().status_code == 503  # the window began
    past = (utcnow() - dt.timedelta(seconds=1)).isoformat(sep=" ")
    execute(db_url, f"UPDATE upgrader_state SET maintenance_end = '{past}'")
    ended = answer()
    assert ended.status_code == 200 and "Scheduled" not in ended.text  # ended on its own


def test_background_work_waits_during_maintenance(db_url: str, tmp_path: Path) -> None:
    install(db_url, CURRENT)
    middleware = guard(db_url, tmp_path)
    ran: list[str] = []

    @background.refuse_when_down
    def job() -> None:
        ran.append("job")

    assert background.accepting_new_work()
    job()
    cli(db_url, "maintenance", "on", "--level", "banner")
    middleware.cache.invalidate()
    assert not background.accepting_new_work()
    with pytest.raises(background.NotAcceptingWork):
        job()
    assert ran == ["job"]


def test_flask_extension_inserts_the_banner(db_url: str, tmp_path: Path) -> None:
    install(db_url, CURRENT)
    cli(db_url, "maintenance", "on", "--level", "banner", "--message", "Read-only on Sunday")
    app = create_app({"SQLALCHEMY_DATABASE_URI": db_url, "UPGRADER_INSTALLER_DIR": str(tmp_path)})
    html = app.test_client().get("/").text
    assert "Read-only on Sunday" in html and html.index("upgrader-banner") > html.index("<body")
    assert "Pride and Prejudice" in html
    app.extensions["upgrader"].cache.close()
    app.extensions["shelf.engine"].dispose()


def test_installer_present_reminds_administrators(db_url: str, tmp_path: Path) -> None:
    install(db_url, CURRENT)
    (tmp_path / "install").mkdir()
    client = Client(
        guard(db_url, tmp_path, installer_dir=str(tmp_path / "install"), allow_ips="10.0.0.1")
    )
    assert client.get("/upgrader/status").json["state"] == "ok"
    assert "delete the install/" not in client.get("/").text
    admin = client.get("/", environ_base={"REMOTE_ADDR": "10.0.0.1"})
    assert "delete the install/" in admin.text
    full = client.get("/upgrader/status", environ_base={"REMOTE_ADDR": "10.0.0.1"}).json
    assert full["diagnosis"]["installer_present"] is True


def test_cache_sees_changes_within_the_ttl(db_url: str, tmp_path: Path) -> None:
    install(db_url, CURRENT)
    middleware = guard(db_url, tmp_path, cache_ttl=0.3)
    client = Client(middleware)
    assert client.get("/").status_code == 200
    cli(db_url, "maintenance", "on")
    import time

    time.sleep(0.4)
    assert client.get("/").status_code == 503


def test_integrator_templates_override_the_page(db_url: str, tmp_path: Path) -> None:
    install(db_url, "1.0.0")
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "blocked.html").write_text("<h1>{{ headline }}</h1><p>Shelf is asleep.</p>")
    page = Client(guard(db_url, tmp_path, template_dir=str(templates))).get("/")
    assert page.status_code == 503
    assert page.text == "<h1>Down for Maintenance (Err2)</h1><p>Shelf is asleep.</p>"


def test_flask_upgrader_command_group(db_url: str, tmp_path: Path) -> None:
    install(db_url, "1.0.0")
    app = create_app({"SQLALCHEMY_DATABASE_URI": db_url, "UPGRADER_INSTALLER_DIR": str(tmp_path)})
    result = FlaskRunner(app).invoke(args=["upgrader", "status", "--json"])
    assert json.loads(result.output)["state"] == "upgrade_pending"
    assert result.exit_code == 2
    app.extensions["upgrader"].cache.close()
    app.extensions["shelf.engine"].dispose()
