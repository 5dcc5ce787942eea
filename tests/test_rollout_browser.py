"""The rollout in Chromium: an administrator browsing the site while post-deploy revisions
wait for an old node sees the banner that names it, and the command it prints works when
pasted; visitors' pages are the application's.

The sample at 2.0.2, whose one new revision is post-deploy, on a database at 2.0.1: the state is
`post_deploy_pending`, and the site serves.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine

from tests.helpers import MIGRATIONS, install
from tests.test_browser import ARTIFACTS, CHROMIUM, FLAGS, pytestmark  # noqa: F401
from tests.test_nodes import add_node
from upgrader.core.tables import define_tables

CONTRACT = '''"""Drop the ISBN index: release 2.0.2 no longer looks books up by it."""

from alembic import op

revision = "0004_drop_isbn_index"
down_revision = "0003_sort_names"
branch_labels = None
depends_on = None
upgrader_phase = "post-deploy"


def upgrade() -> None:
    op.drop_index("ix_books_isbn", table_name="books")


def downgrade() -> None:
    op.create_index("ix_books_isbn", "books", ["isbn"])
'''


def post_deploy_code(tmp_path: Path) -> Path:
    """The sample's migrations and a release 2.0.2 with one post-deploy revision."""
    code = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, code, ignore=shutil.ignore_patterns("__pycache__"))
    (code / "versions" / "0004_drop_isbn_index.py").write_text(CONTRACT)
    return code


def pasted(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The command as an operator pastes it: in their shell, from anywhere, with the
    configuration their environment carries."""
    return subprocess.run(
        ["sh", "-c", command],
        capture_output=True,
        text=True,
        cwd="/",
        timeout=120,
        env={k: v for k, v in os.environ.items() if not k.startswith("UPGRADER_")} | env,
    )


def test_an_administrator_sees_which_node_holds_post_deploy_back(
    serve: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    url = f"sqlite:///{tmp_path / 'app.db'}"
    install(url, "2.0.1")
    add_node(url, "web-2", 311, "2.0.1")
    # the browser is the administrator
    site = serve(url, post_deploy_code(tmp_path), "2.0.2", UPGRADER_ALLOW_IPS="127.0.0.1")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": 1000, "height": 700})
        response = page.goto(site.base + "/")
        assert response is not None and response.status == 200
        assert page.locator("h1").inner_text() == "Books"  # the application, not a 503
        banner = page.locator(".upgrader-banner").inner_text()
        assert banner.startswith("Post-deploy migrations pending (post_deploy_pending)")
        assert "web-2 pid 311" in banner
        page.screenshot(path=str(ARTIFACTS / "rollout-admin-banner.png"))

        printed = re.findall(r"`([^`]+)`", banner)
        command = next(c for c in printed if c.endswith("upgrade --post-deploy"))
        refused = pasted(command + " --yes --no-backup", site.env)
        assert refused.returncode == 75 and "web-2 pid 311" in refused.stderr
        listing = pasted(next(c for c in printed if c.endswith(" nodes")), site.env)
        assert listing.returncode == 0 and "web-2" in listing.stdout
        engine = create_engine(url)  # the old node is restarted on the new release
        with engine.begin() as conn:
            nodes = define_tables().nodes
            conn.execute(nodes.delete().where(nodes.c.host == "web-2"))
        engine.dispose()
        done = pasted(command + " --yes --no-backup", site.env)
        assert done.returncode == 0, done.stdout + done.stderr
        banner_now = page.locator(".upgrader-banner")
        for _ in range(40):  # the server sees it within its TTL (0.5 s)
            page.reload()
            if "post_deploy_pending" not in banner_now.inner_text():
                break
            page.wait_for_timeout(250)
        assert page.locator("h1").inner_text() == "Books"
        # what is left to tell the administrator: the installer's files (this site has them)
        assert banner_now.inner_text().startswith("The upgrade is complete: delete the install/")
        browser.close()
    with urllib.request.urlopen(site.base + "/upgrader/status") as answer:
        assert b'"state": "ok"' in answer.read()
