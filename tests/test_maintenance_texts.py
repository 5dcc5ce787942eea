"""Maintenance says what it knows: the window's expected end on the page, when it began in
the banner, in the visitor's language; "scheduled" when it is only scheduled; what holds
background work back; and the web server's snippet agrees with the application."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import Client

from tests.helpers import MIGRATIONS, execute, install, run_cli
from tests.test_guard import guard, plain_app
from upgrader.core.times import utcnow
from upgrader.sample.releases import CURRENT
from upgrader.web import background


def cli(url: str, *args: str) -> Any:
    done = run_cli("--database-url", url, "--migrations", str(MIGRATIONS), *args)
    assert done.exit_code == 0, done.output
    return done


def at(minutes: int) -> str:
    return (utcnow() + dt.timedelta(minutes=minutes)).isoformat(sep=" ")


def test_a_window_in_force_says_when_it_began_and_ends(db_url: str, tmp_path: Path) -> None:
    install(db_url, CURRENT)
    scheduled = cli(db_url, "maintenance", "on", "--start", "+1h", "--end", "+2h")
    assert "Maintenance is scheduled (block) from" in scheduled.output, scheduled.output
    assert "Maintenance is on" not in scheduled.output
    # The window begins: the page says when the site is expected back, as Retry-After does.
    execute(db_url, f"UPDATE upgrader_state SET maintenance_start = '{at(-5)}', "
                    f"maintenance_end = '{at(25)}'")  # fmt: skip
    page = Client(guard(db_url, tmp_path)).get("/")
    assert page.status_code == 503
    end = re.search(r'<time datetime="([^"]+)"', page.text)
    assert end and "Expected back:" in page.text, page.text
    retry = int(page.headers["Retry-After"])
    assert 1400 <= retry <= 1500
    # At banner level, the notice says since when, and until when, in German on request.
    execute(db_url, "UPDATE upgrader_state SET maintenance_mode = 'banner'")
    client = Client(guard(db_url, tmp_path, allow_paths=()))
    english = client.get("/").text
    assert re.search(r"Maintenance since \S+ \S+ UTC, until about \S+ \S+ UTC\.", english), english
    german = client.get("/", headers={"Accept-Language": "de-CH, de;q=0.9"}).text
    assert re.search(r"Wartung seit \S+ \S+ UTC, voraussichtlich bis \S+ \S+ UTC\.", german)


def test_held_back_work_names_the_maintenance_and_its_message(db_url: str, tmp_path: Path) -> None:
    install(db_url, CURRENT)
    middleware = guard(db_url, tmp_path)

    @background.refuse_when_down
    def job() -> None:
        pass

    banner = ("--level", "banner", "--message", "Read-only", "--until", "+1h")
    cli(db_url, "maintenance", "on", *banner)
    middleware.cache.invalidate()
    with pytest.raises(background.NotAcceptingWork) as refused:
        job()
    said = str(refused.value)
    assert "maintenance is on (banner level, until about" in said and "Read-only" in said, said
    assert "ok (" not in said


def test_the_web_servers_page_agrees_with_the_application(db_url: str, tmp_path: Path) -> None:
    install(db_url, CURRENT)
    cli(db_url, "maintenance", "on", "--until", "+30m", "--allow", "198.51.100.7")
    snippet = cli(db_url, "webserver", "nginx", "--static", str(tmp_path / "static"))
    found = re.search(r"add_header Retry-After (\d+)", snippet.stdout)
    retry = int(found.group(1)) if found else 0
    assert 1700 <= retry <= 1800, retry
    assert "198.51.100.7 1;" in snippet.stdout  # the application's allow-list, by default
    assert snippet.stderr == ""
    other = cli(db_url, "webserver", "apache", "--static", str(tmp_path), "--allow", "203.0.113.9")
    assert "note: 203.0.113.9 gets past the web server" in other.stderr
    assert "maintenance on --allow 203.0.113.9" in other.stderr
    fixed = cli(db_url, "webserver", "nginx", "--static", str(tmp_path), "--retry-after", "77")
    assert "add_header Retry-After 77 always;" in fixed.stdout
    assert plain_app  # the guard's application, used by guard()
