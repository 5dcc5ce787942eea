"""The rollout in Chromium: an administrator browsing the site while post-deploy revisions
wait for an old node sees the banner that names it; visitors' pages are the application's.

The sample at 2.0.2, whose one new revision is post-deploy, on a database at 2.0.1: the state is
`post_deploy_pending`, and the site serves.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

from sqlalchemy import create_engine

from tests.helpers import MIGRATIONS, SAMPLE, free_port, install, run_cli, wait_for_port
from tests.test_browser import ARTIFACTS, CHROMIUM, FLAGS, pytestmark  # noqa: F401
from tests.test_nodes import add_node
from upgrader.core import storage

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


def test_an_administrator_sees_which_node_holds_post_deploy_back(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    url = f"sqlite:///{tmp_path / 'app.db'}"
    install(url, "2.0.1")
    add_node(url, "web-2", 311, "2.0.1")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("UPGRADER_")}
    env.update(
        UPGRADER_DATABASE_URL=url,
        SHELF_DATABASE_URL=url,
        UPGRADER_APP=SAMPLE,
        UPGRADER_MIGRATIONS=str(post_deploy_code(tmp_path)),
        UPGRADER_CODE_VERSION="2.0.2",
        UPGRADER_CACHE_TTL="0.5",
        UPGRADER_BACKUP_DIR=str(tmp_path / "backups"),
        UPGRADER_INSTALLER_DIR=str(tmp_path / "no-installer"),
        UPGRADER_ALLOW_IPS="127.0.0.1",  # the browser is the administrator
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "upgrader", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        wait_for_port(port)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
            page = browser.new_page(viewport={"width": 1000, "height": 700})
            response = page.goto(base + "/")
            assert response is not None and response.status == 200
            assert page.locator("h1").inner_text() == "Books"  # the application, not a 503
            banner = page.locator(".upgrader-banner").inner_text()
            assert banner.startswith("Post-deploy migrations pending (post_deploy_pending)")
            assert "web-2 pid 311" in banner and "upgrade --post-deploy" in banner
            page.screenshot(path=str(ARTIFACTS / "rollout-admin-banner.png"))

            refused = run_cli("upgrade", "--post-deploy", "--yes", "--no-backup", env=env)
            assert refused.exit_code == 75 and "web-2 pid 311" in refused.output
            engine = create_engine(url)  # the old node is restarted on the new release
            with engine.begin() as conn:
                nodes = storage.define_tables().nodes
                conn.execute(nodes.delete().where(nodes.c.host == "web-2"))
            engine.dispose()
            done = run_cli("upgrade", "--post-deploy", "--yes", "--no-backup", env=env)
            assert done.exit_code == 0, done.output
            for _ in range(40):  # the server sees it within its TTL (0.5 s)
                page.reload()
                if page.locator(".upgrader-banner").count() == 0:
                    break
                page.wait_for_timeout(250)
            assert page.locator("h1").inner_text() == "Books"
            assert page.locator(".upgrader-banner").count() == 0
            browser.close()
        with urllib.request.urlopen(base + "/upgrader/status") as answer:
            assert b'"state": "ok"' in answer.read()
    finally:
        server.terminate()
        server.wait(timeout=10)
