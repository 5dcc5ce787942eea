"""The wizard walked end to end in Chromium (Playwright), with screenshots in artifacts/."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import (
    ROOT,
    SAMPLE,
    code_with,
    extra_revision,
    free_port,
    install,
    wait_for_port,
)
from tests.test_browser import ARTIFACTS, CHROMIUM, FLAGS
from upgrader.sample.releases import CURRENT
from upgrader.wizard.access import KEY_FILE

pytestmark = pytest.mark.skipif(
    not shutil.which(CHROMIUM) and not os.environ.get("CI"),
    reason="Debian's chromium is not installed (.ci/run installs it)",
)


class Site:
    def __init__(self, base: str, installer: Path, migrations: Path) -> None:
        self.base, self.installer, self.migrations = base, installer, migrations

    @property
    def key(self) -> str:
        return (self.installer / KEY_FILE).read_text().strip()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    servers: list[subprocess.Popen[bytes]] = []

    def start(database: str, migrations: Path, version: str = CURRENT) -> Site:
        installer = tmp_path / "install"
        shutil.copytree(ROOT / "install", installer, ignore=shutil.ignore_patterns(".*"))
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("UPGRADER_")}
        env.update(
            UPGRADER_DATABASE_URL=database,
            SHELF_DATABASE_URL=database,
            UPGRADER_APP=SAMPLE,
            UPGRADER_MIGRATIONS=str(migrations),
            UPGRADER_CODE_VERSION=version,
            UPGRADER_INSTALLER_DIR=str(installer),
            UPGRADER_BACKUP_DIR=str(tmp_path / "backups"),
            UPGRADER_CACHE_TTL="0.5",
        )
        servers.append(
            subprocess.Popen(
                [sys.executable, "-m", "upgrader", "serve", "--port", str(port)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        wait_for_port(port)
        return Site(f"http://127.0.0.1:{port}", installer, migrations)

    yield start
    for server in servers:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture
def page() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield browser.new_page(viewport={"width": 1000, "height": 760})
        browser.close()


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
    shot(page, "a3-checks")
    page.click("button:has-text('Start the upgrade')")
    page.wait_for_selector("text=/step [12] of 2/", timeout=30_000)
    shot(page, "a4-progress")
    page.wait_for_selector("text=Upgrade Completed Successfully!", timeout=60_000)
    text = page.locator("main").inner_text()
    assert "version 2.0.1" in text and "rm -r" in text
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
    shot(page, "c4-failed")
    (code / "versions" / "0004_extra.py").write_text(
        extra_revision('    op.add_column("books", sa.Column("shelf", sa.String(20)))')
    )
    page.click("a.button:has-text('Try again')")
    page.wait_for_url("**/install/checks")
    assert "The last upgrade failed." in page.locator("main").inner_text()
    page.click("button:has-text('Start the upgrade')")
    page.wait_for_selector("text=Upgrade Completed Successfully!", timeout=60_000)
    assert "version 2.1.0" in page.locator("main").inner_text()
