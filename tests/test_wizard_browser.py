"""The wizard walked end to end in Chromium (Playwright), with screenshots in artifacts/."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Site
from tests.helpers import (
    code_with,
    extra_revision,
    install,
)
from tests.test_browser import ARTIFACTS, CHROMIUM, FLAGS
from tests.test_webserver import get
from upgrader.sample.releases import CURRENT

pytestmark = pytest.mark.skipif(
    not shutil.which(CHROMIUM) and not os.environ.get("CI"),
    reason="Debian's chromium is not installed (.ci/run installs it)",
)


@contextlib.contextmanager
def chromium_page(**options: Any) -> Iterator[Any]:
    """A page of Debian's Chromium, in a context with `options` (viewport, locale…)."""
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            yield browser.new_context(**options).new_page()
        finally:
            browser.close()


@pytest.fixture
def page() -> Iterator[Any]:
    with chromium_page(viewport={"width": 1000, "height": 760}) as opened:
        yield opened


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"wizard-{name}.png"), full_page=True)


def through_key_and_licence(page: Any, site: Site, prefix: str) -> None:
    page.goto(site.base + "/install")
    assert page.locator("h1").inner_text() == "Prove you can reach the server"
    shot(page, f"{prefix}1-key")
    page.fill("input[name=key]", "not-the-key")
    page.click("button[type=submit]")
    assert "That is not the upgrade key." in page.locator("main").inner_text()
    page.fill("input[name=key]", site.key)
    page.click("button[type=submit]")
    assert page.locator("h1").inner_text() == "Licence agreement"
    page.click("button[type=submit]")  # not accepted yet
    assert "Please accept the licence" in page.locator("main").inner_text()
    page.check("input[name=accept]")
    shot(page, f"{prefix}2-licence")
    page.click("button[type=submit]")


def test_err2_wizard_success_application(serve: Any, page: Any, tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'app.db'}"
    install(database, "1.0.0")
    site = serve(database, code_with(tmp_path, "slow", sleep=1.5))
    page.goto(site.base + "/books/1")
    assert page.locator("h1").inner_text() == "Down for Maintenance (Err2)"
    shot(page, "a0-err2")
    through_key_and_licence(page, site, "a")
    assert page.locator("h1").inner_text() == "Ready to upgrade"
    text = page.locator("main").inner_text()
    assert "1.0.0 → 2.0.1" in text and "0002_loans_isbn" in text
    assert "All checks passed." in text
    assert "What this release changes" not in text  # no notes shipped: the revisions say it
    shot(page, "a3-checks")
    # Every choice works by its label.
    page.get_by_text("I have a backup of my own", exact=True).click()
    assert page.is_checked("input[name=backup][value=own]")
    page.get_by_text("I confirm that I have a backup of my own, made just now").click()
    assert page.is_checked("input[name=have_backup]")
    page.get_by_text("Back up the database first, and verify the backup").click()
    assert page.is_checked("input[name=backup][value=auto]")
    page.click("button:has-text('Start the upgrade')")
    page.wait_for_selector("text=/step [12] of 2/i", timeout=30_000)
    assert page.locator("[aria-current=step]").inner_text() == "4. Backup & run"
    assert page.locator("[role=status][aria-live=polite]").count() == 1
    shot(page, "a4-progress")
    page.wait_for_selector("text=Upgrade Completed Successfully!", timeout=60_000)
    text = page.locator("main").inner_text()
    assert "version 2.0.1" in text and "rm -r" in text
    # The verification the WHMCS guide asks for by hand, done.
    assert "✓ upgrader's diagnosis: ok" in text
    assert "✓ the database is at version 2.0.1, the code is 2.0.1" in text
    assert "✓ the site's home page answers: 200 OK" in text
    shot(page, "a5-done")
    page.click("a.button:has-text('Go to Shelf')")
    page.wait_for_selector("text=Pride and Prejudice")
    assert page.locator("h1").inner_text() == "Books"
    assert list((tmp_path / "backups").glob("*.sqlite")), "the wizard backed up first"


def test_fresh_install(serve: Any, page: Any, tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'new' / 'app.db'}"
    site = serve(database, code_with(tmp_path, "code"))
    page.goto(site.base + "/")
    # The database file does not exist: it may be a first installation, or a file that went
    # missing. Visitors are not sent to the installer, and the wizard creates nothing
    # before an administrator confirms the path.
    assert "cannot find its database" in page.locator("main").inner_text()
    through_key_and_licence(page, site, "b")
    assert page.locator("h1").inner_text() == "Ready to install"
    assert "The database file does not exist" in page.locator("main").inner_text()
    shot(page, "b3-checks")
    page.click("text=Install 2.0.1")  # not confirmed: nothing happens
    assert page.locator("h1").inner_text() == "Ready to install"
    page.check("input[name=create_at]")
    page.click("text=Install 2.0.1")
    page.wait_for_selector("text=Installation Completed Successfully!", timeout=60_000)
    shot(page, "b5-done")
    page.click("a.button:has-text('Go to Shelf')")
    assert page.locator("h1").inner_text() == "Books"


def test_failed_upgrade_then_fix_then_retry(serve: Any, page: Any, tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'app.db'}"
    install(database, CURRENT)
    failing = extra_revision(
        '    raise RuntimeError("column shelf: value too long for the new type")'
    )
    code = code_with(tmp_path, "code-2.1.0", extra=failing)
    site = serve(database, code, "2.1.0")
    through_key_and_licence(page, site, "c")
    page.click("button:has-text('Start the upgrade')")
    page.wait_for_selector("text=Upgrade Failed", timeout=60_000)
    content = page.locator("main").inner_text()
    assert "value too long for the new type" in content
    assert "step 1 of 1" in content and "0004_extra" in content
    assert "restore" in content and ".sqlite" in content  # the backup and how to go back
    report = page.locator("textarea#report").input_value()
    assert report.startswith("== Report:") and "value too long for the new type" in report
    assert site.key not in report
    log = page.request.get(site.base + "/install/log")
    assert log.status == 200 and "RuntimeError" in log.text()
    shot(page, "c4-failed")
    (code / "versions" / "0004_extra.py").write_text(
        extra_revision('    op.add_column("books", sa.Column("shelf", sa.String(20)))')
    )
    page.click("a.button:has-text('Try again')")
    page.wait_for_url("**/install/checks")
    assert "The last upgrade failed." in page.locator("main").inner_text()
    assert page.locator(".box.ok").count() == 0  # no green box under the red one
    page.click("button:has-text('Start the upgrade')")
    page.wait_for_selector("text=Upgrade Completed Successfully!", timeout=60_000)
    assert "version 2.1.0" in page.locator("main").inner_text()


@pytest.fixture
def phone() -> Iterator[Any]:
    with chromium_page(viewport={"width": 390, "height": 844}, is_mobile=True) as opened:
        yield opened


def no_sideways_scroll(page: Any) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"{page.url} is {width} px wide at 390 px"


def test_on_a_phone_with_a_backup_of_ones_own(serve: Any, phone: Any, tmp_path: Path) -> None:
    """390 px: no page scrolls sideways; the key page's command works when pasted; the
    own-backup choice needs its confirmation and says so; maintenance can be kept on."""
    database = f"sqlite:///{tmp_path / 'app.db'}"
    install(database, "1.0.0")
    site = serve(database, code_with(tmp_path, "slow", sleep=1.0))
    (site.installer / "release-notes.json").write_text(
        json.dumps({"1.1.0": "Loans, and an ISBN for each book.", "2.0.0": "Sort by family name."})
    )
    page = phone
    failed: list[str] = []  # every answer of 4xx or 5xx the browser got (a favicon's too)
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else 0)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else 0)
    page.goto(site.base + "/install")
    no_sideways_scroll(page)
    command = page.locator("pre").inner_text()
    env = {"PATH": "/usr/bin:/bin"}  # no virtualenv, none of the site's settings
    printed = subprocess.run(
        ["sh", "-c", command],
        capture_output=True,
        text=True,
        env=env,
        cwd="/",
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert printed.stdout.strip() == site.key, (command, printed.stderr)
    page.fill("input[name=key]", site.key)
    page.click("button[type=submit]")
    page.wait_for_url("**/install/eula")  # measured on the next page, not mid-navigation
    no_sideways_scroll(page)
    page.check("input[name=accept]")
    page.click("button[type=submit]")
    page.wait_for_url("**/install/checks")
    no_sideways_scroll(page)
    text = page.locator("main").inner_text()
    assert "Loans, and an ISBN for each book." in text and "Sort by family name." in text
    assert "Database size" in text and "Expected time" in text
    assert re.search(r"Database size\s+\d+ KB", text), text  # a small database, not "0.0 MB"
    shot(page, "p3-checks-390")
    page.get_by_text("I have a backup of my own", exact=True).click()
    page.click("button:has-text('Start the upgrade')")  # not confirmed
    assert "tick “I confirm that I have a backup of my own”" in page.locator("main").inner_text()
    assert failed == [f"400 {site.base}/install/start"], failed  # that refusal, nothing else
    failed.clear()
    errors.clear()
    no_sideways_scroll(page)
    page.get_by_text("I have a backup of my own", exact=True).click()
    page.get_by_text("I confirm that I have a backup of my own, made just now").click()
    page.get_by_text("Keep the site in maintenance afterwards").click()
    page.click("button:has-text('Start the upgrade')")
    page.wait_for_selector("text=Upgrade Completed Successfully!", timeout=60_000)
    no_sideways_scroll(page)
    assert "still in maintenance" in page.locator("main").inner_text()
    shot(page, "p5-done-390")
    port = int(site.base.rsplit(":", 1)[1])
    assert get(port, "/", source="127.0.0.2")[0] == 503  # another address: a visitor waits
    assert page.request.get(site.base + "/").status == 200  # the administrator gets through
    assert not failed and not errors, (failed, errors)
    page.click("button:has-text('Open the site to visitors')")
    assert "still in maintenance" not in page.locator("main").inner_text()
    assert get(port, "/", source="127.0.0.2")[0] == 200
    assert not list((tmp_path / "backups").glob("*.sqlite"))  # own backup: none made


def test_the_wizard_in_the_browsers_language(serve: Any, tmp_path: Path) -> None:
    """A browser that asks for German gets the visitor's page and the installer in German."""
    database = f"sqlite:///{tmp_path / 'app.db'}"
    install(database, "1.0.0")
    site = serve(database, code_with(tmp_path, "code"))
    with chromium_page(locale="de-DE") as page:
        page.goto(site.base + "/")
        assert page.locator("h1").inner_text() == "Wegen Wartungsarbeiten geschlossen (Err2)"
        shot(page, "de-blocked")
        page.goto(site.base + "/install")
        assert page.locator("html").get_attribute("lang") == "de"
        assert page.locator("h1").inner_text() == "Zeigen Sie, dass Sie Zugang zum Server haben"
        page.fill("input[name=key]", "falsch")
        page.click("button[type=submit]")
        assert "Das ist nicht der Upgrade-Schlüssel." in page.locator("main").inner_text()
        page.fill("input[name=key]", site.key)
        page.click("button[type=submit]")
        assert page.locator("h1").inner_text() == "Lizenzvertrag"
        page.get_by_text("Ich akzeptiere den Lizenzvertrag").click()
        page.click("button[type=submit]")
        assert page.locator("h1").inner_text() == "Bereit zum Upgrade"
        text = page.locator("main").inner_text()
        assert "Alle Prüfungen bestanden." in text and "Upgrade starten" in text
        assert page.locator("[aria-current=step]").inner_text() == "3. Prüfungen"
        shot(page, "de-checks")
        page.click("button:has-text('Upgrade starten')")
        page.wait_for_selector("text=Upgrade erfolgreich abgeschlossen!", timeout=60_000)
        shot(page, "de-done")
