"""The Err2 page in a real browser: Debian's Chromium, driven by Playwright.

It opens the page, reads its heading, upgrades the database from another
process, and watches the page come back to the application by itself.
Screenshots go to artifacts/.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import ROOT, SAMPLE, free_port, install, run_cli, wait_for_port

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "artifacts"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]

pytestmark = pytest.mark.skipif(
    not shutil.which(CHROMIUM) and not os.environ.get("CI"),
    reason="Debian's chromium is not installed (.ci/run installs it)",
)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    install(url, "1.0.0")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("UPGRADER_")}
    env.update(
        UPGRADER_DATABASE_URL=url,
        SHELF_DATABASE_URL=url,
        UPGRADER_APP=SAMPLE,
        UPGRADER_CACHE_TTL="0.5",
        UPGRADER_BACKUP_DIR=str(tmp_path / "backups"),
        UPGRADER_INSTALLER_DIR=str(tmp_path / "no-installer"),
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "upgrader", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    wait_for_port(port)
    try:
        yield f"http://127.0.0.1:{port}", env
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_err2_page_returns_to_the_application_by_itself(
    served: tuple[str, dict[str, str]],
) -> None:
    from playwright.sync_api import sync_playwright

    base, env = served
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": 1000, "height": 700})
        response = page.goto(base + "/")
        assert response is not None and response.status == 503
        assert page.locator("h1").inner_text() == "Down for Maintenance (Err2)"
        assert "being updated" in page.content()
        page.screenshot(path=str(ARTIFACTS / "guard-err2.png"))
        upgrade = run_cli("upgrade", "--yes", env={**env, "UPGRADER_INSTALLER_DIR": "/nonexistent"})
        assert upgrade.exit_code == 0, upgrade.output
        # No reload from the test: the page polls the status endpoint and reloads itself.
        page.wait_for_selector("text=Pride and Prejudice", timeout=30_000)
        assert page.locator("h1").inner_text() == "Books"
        page.screenshot(path=str(ARTIFACTS / "guard-back.png"))
        browser.close()
