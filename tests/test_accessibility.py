"""Every page of the flow checked with axe-core (WCAG 2.1 A and AA) in Chromium, at
1280 and 390 px, where none may scroll sideways either: the
visitor's maintenance page, the installer from key to done and to failed, the admin
console. axe-core comes from the npm package in tests/axe (`.ci/run` installs it); the
script is injected from that file, nothing is fetched from the network."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import CURRENT, code_with, extra_revision, install
from tests.test_browser import ARTIFACTS, CHROMIUM, FLAGS
from tests.test_wizard_browser import through_key_and_licence

AXE = Path(__file__).parent / "axe" / "node_modules" / "axe-core" / "axe.min.js"

pytestmark = pytest.mark.skipif(
    not (AXE.is_file() and os.path.exists(CHROMIUM)) and not os.environ.get("CI"),
    reason="axe-core (npm install in tests/axe) or chromium is missing; .ci/run installs both",
)

RULES = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]


def violations(page: Any) -> list[dict[str, Any]]:
    page.add_script_tag(path=str(AXE))
    found: list[dict[str, Any]] = page.evaluate(
        """async (tags) => {
            const result = await axe.run(document, {runOnly: {type: "tag", values: tags}});
            return result.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                nodes: v.nodes.map(n => n.target.join(" "))}));
        }""",
        RULES,
    )
    return found


def check(page: Any, name: str, seen: dict[str, Any]) -> None:
    """axe's violations on this page, and none that scrolls sideways at this width."""
    page.wait_for_load_state("load")
    seen[name] = violations(page)
    width = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    if width > 0:
        seen[name] = [*seen[name], {"id": "scrolls-sideways", "nodes": [f"{width} px"]}]
    size = page.viewport_size["width"]
    page.screenshot(path=str(ARTIFACTS / f"axe-{size}-{name}.png"), full_page=True)


@pytest.fixture(params=[1280, 390], ids=["desktop", "phone"])
def page(request: pytest.FixtureRequest) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    width = request.param
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield browser.new_page(viewport={"width": width, "height": 900})
        browser.close()


def test_the_whole_flow_has_no_wcag_violation(serve: Any, page: Any, tmp_path: Path) -> None:
    seen: dict[str, Any] = {}
    database = f"sqlite:///{tmp_path / 'app.db'}"
    install(database, "1.0.0")
    site = serve(database, code_with(tmp_path, "slow", sleep=3.0))
    page.goto(site.base + "/")
    check(page, "blocked-err2", seen)
    page.goto(site.base + "/install")
    check(page, "key", seen)
    page.fill("input[name=key]", "wrong")
    page.click("button[type=submit]")
    page.wait_for_selector("text=That is not the upgrade key.")  # the answer, not mid-navigation
    check(page, "key-refused", seen)
    page.fill("input[name=key]", site.key)
    page.click("button[type=submit]")
    page.wait_for_url("**/install/eula")
    check(page, "licence", seen)
    page.check("input[name=accept]")
    page.click("button[type=submit]")
    page.wait_for_url("**/install/checks")
    check(page, "checks", seen)
    page.click("button:has-text('Start the upgrade')")
    page.wait_for_selector("text=/step [12] of 2/i", timeout=30_000)
    check(page, "progress", seen)
    page.wait_for_selector("text=Upgrade Completed Successfully!", timeout=60_000)
    check(page, "done", seen)
    page.goto(site.base + "/upgrader/admin/")
    check(page, "console-key", seen)
    assert {name: v for name, v in seen.items() if v} == {}


def test_the_failure_page_and_the_console_have_no_wcag_violation(
    serve: Any, page: Any, tmp_path: Path
) -> None:
    from tests.helpers import run_cli

    seen: dict[str, Any] = {}
    database = f"sqlite:///{tmp_path / 'app.db'}"
    install(database, CURRENT)
    failing = extra_revision('    raise RuntimeError("value too long for the new type")')
    code = code_with(tmp_path, "code-2.1.0", extra=failing)
    site = serve(database, code, "2.1.0")
    through_key_and_licence(page, site, "axe-f")
    page.click("button:has-text('Start the upgrade')")
    page.wait_for_selector("text=Upgrade Failed", timeout=60_000)
    check(page, "failed", seen)
    page.click("a.button:has-text('Try again')")
    page.wait_for_url("**/install/checks")
    check(page, "checks-after-failure", seen)
    key = run_cli("--database-url", database, "admin-key", env=site.env).output.strip()
    page.goto(site.base + "/upgrader/admin/")
    page.fill("input[name=key]", key)
    page.click("button[type=submit]")
    page.wait_for_selector("text=Recent runs and changes")
    check(page, "console", seen)
    page.fill("#now-message", "Disks")
    page.click("button:has-text('Switch maintenance on')")
    page.wait_for_selector("text=Maintenance is on (block)")
    check(page, "console-on", seen)
    page.context.clear_cookies()
    page.goto(site.base + "/")
    check(page, "blocked-maintenance", seen)
    assert {name: v for name, v in seen.items() if v} == {}
