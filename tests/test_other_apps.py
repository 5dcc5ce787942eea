"""upgrader in applications that are not ours, built the ordinary way in a temporary directory.

(a) Notes: Flask + Flask-SQLAlchemy + Flask-Migrate (`flask db init`, `flask db migrate`),
    served by waitress as its developer would, with `Upgrader().init_app(app)`.
(b) Ledger: a plain WSGI application with its own Alembic environment (`alembic init`),
    wrapped in `UpgraderMiddleware`.

For each, on SQLite, PostgreSQL and MariaDB: release 1.0.0 is installed; 1.1.0 is deployed
(Err2 page) and upgraded through the wizard in Chromium; 1.2.0 is deployed and upgraded by
pasting the command that `status` prints, from another directory; then a model change plus
autogenerate writes nothing about upgrader's tables. These are exactly the steps that
docs/embedding.md walks an integrator through.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ROOT, free_port, wait_for_port
from tests.test_browser import ARTIFACTS, CHROMIUM, FLAGS
from upgrader.core.keys import UPGRADE_KEY as KEY_FILE

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    return str(BIN / name)


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a shell on the server: nothing of upgrader's, PATH without our venv."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UPGRADER_", "FLASK_"))}
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if Path(p) != BIN
    )
    env.update(extra)
    return env


def run(
    *args: str, cwd: Path, env: dict[str, str], input: str | None = None, ok: bool = True
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        list(args), cwd=cwd, env=env, input=input, capture_output=True, text=True, timeout=180
    )
    if ok:
        assert done.returncode == 0, f"{args}: {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def backticked(text: str) -> list[str]:
    return re.findall(r"`([^`]+)`", text)


# ----------------------------------------------------------------- the applications


NOTES_INIT = '''\
"""Notes: a Flask application with Flask-SQLAlchemy and Flask-Migrate."""

import os

from flask import Flask
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy

from upgrader.web.flask import Upgrader

__version__ = "{version}"

db = SQLAlchemy()
migrate = Migrate()
upgrader = Upgrader()


def create_app():
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = os.environ["NOTES_DATABASE_URL"]
    db.init_app(app)
    upgrader.init_app(app)  # before Flask-Migrate on purpose: the order must not matter
    migrate.init_app(app, db)

    from notes import models, views

    app.register_blueprint(views.bp)
    return app
'''

NOTES_VIEWS = """\
from flask import Blueprint
from sqlalchemy import func, select

from notes import __version__, db
from notes.models import Note

bp = Blueprint("notes", __name__)


@bp.get("/")
def index():
    count = db.session.scalar(select(func.count(Note.id)))
    return f"<!doctype html><body><h1>Notes {__version__}</h1><p>{count} notes</p></body>"
"""

NOTES_MODELS = {
    "1.0.0": """\
from notes import db


class Note(db.Model):
    id = db.Column(db.Integer, primary_key=True)
    title = db.Column(db.String(200), nullable=False)
""",
    "1.1.0": """\
from notes import db


class Note(db.Model):
    id = db.Column(db.Integer, primary_key=True)
    title = db.Column(db.String(200), nullable=False)


class Tag(db.Model):
    id = db.Column(db.Integer, primary_key=True)
    name = db.Column(db.String(50), nullable=False)
""",
    "1.2.0": """\
from notes import db


class Note(db.Model):
    id = db.Column(db.Integer, primary_key=True)
    title = db.Column(db.String(200), nullable=False)
    pinned = db.Column(db.Boolean, nullable=True)


class Tag(db.Model):
    id = db.Column(db.Integer, primary_key=True)
    name = db.Column(db.String(50), nullable=False)
""",
    "next": """\
from notes import db


class Note(db.Model):
    id = db.Column(db.Integer, primary_key=True)
    title = db.Column(db.String(200), nullable=False)
    pinned = db.Column(db.Boolean, nullable=True)


class Tag(db.Model):
    id = db.Column(db.Integer, primary_key=True)
    name = db.Column(db.String(50), nullable=False)


class Folder(db.Model):
    id = db.Column(db.Integer, primary_key=True)
    label = db.Column(db.String(80), nullable=False)
""",
}

LEDGER_INIT = '__version__ = "{version}"\n'

LEDGER_SCHEMA = {
    "1.0.0": """\
from sqlalchemy import Column, Integer, MetaData, String, Table

metadata = MetaData()
entries = Table(
    "entries", metadata, Column("id", Integer, primary_key=True), Column("memo", String(200))
)
""",
    "1.1.0": """\
from sqlalchemy import Column, Integer, MetaData, String, Table

metadata = MetaData()
entries = Table(
    "entries", metadata, Column("id", Integer, primary_key=True), Column("memo", String(200))
)
accounts = Table(
    "accounts", metadata, Column("id", Integer, primary_key=True), Column("name", String(80))
)
""",
    "1.2.0": """\
from sqlalchemy import Column, Integer, MetaData, String, Table

metadata = MetaData()
entries = Table(
    "entries",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("memo", String(200)),
    Column("amount", Integer),
)
accounts = Table(
    "accounts", metadata, Column("id", Integer, primary_key=True), Column("name", String(80))
)
""",
    "next": """\
from sqlalchemy import Column, Integer, MetaData, String, Table

metadata = MetaData()
entries = Table(
    "entries",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("memo", String(200)),
    Column("amount", Integer),
)
accounts = Table(
    "accounts", metadata, Column("id", Integer, primary_key=True), Column("name", String(80))
)
budgets = Table(
    "budgets", metadata, Column("id", Integer, primary_key=True), Column("cap", Integer)
)
""",
}

LEDGER_WSGI = '''\
"""The ledger's WSGI entry point: the application, wrapped in upgrader's guard."""

import os
from pathlib import Path

from sqlalchemy import create_engine, func, select

from ledger import __version__
from ledger.schema import entries
from upgrader.settings import resolve
from upgrader.web import UpgraderMiddleware

DATABASE_URL = os.environ["LEDGER_DATABASE_URL"]
engine = create_engine(DATABASE_URL)


def ledger(environ, start_response):
    with engine.connect() as conn:
        count = conn.scalar(select(func.count()).select_from(entries))
    body = f"<!doctype html><body><h1>Ledger {__version__}</h1><p>{count} entries</p></body>"
    start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
    return [body.encode()]


application = UpgraderMiddleware(
    ledger,
    resolve(
        {
            "database_url": DATABASE_URL,
            "migrations": Path(__file__).resolve().parent.parent / "migrations",
            "code_version": __version__,
        }
    ),
)
'''

# The two lines an `alembic init` env.py needs (docs/embedding.md): the metadata, and the filter.
LEDGER_ENV_EDITS = (
    ("target_metadata = None", "from ledger.schema import metadata as target_metadata"),
    (
        "            connection=connection, target_metadata=target_metadata",
        "            connection=connection, target_metadata=target_metadata,\n"
        "            include_name=include_name,",
    ),
    (
        "from alembic import context",
        "from alembic import context\n\nfrom upgrader.alembic import include_name",
    ),
    (
        'url = config.get_main_option("sqlalchemy.url")',
        'url = config.get_main_option("sqlalchemy.url") or os.environ["LEDGER_DATABASE_URL"]',
    ),
    (
        "    connectable = engine_from_config(",
        '    if not config.get_main_option("sqlalchemy.url"):\n'
        '        config.set_main_option("sqlalchemy.url", os.environ["LEDGER_DATABASE_URL"])\n'
        "    connectable = engine_from_config(",
    ),
    ("from logging.config import fileConfig", "import os\nfrom logging.config import fileConfig"),
)


@dataclass
class Project:
    """One application under development, and the releases cut from it."""

    kind: str  # notes | ledger
    root: Path
    dev_env: dict[str, str]
    releases: dict[str, Path] = field(default_factory=dict)

    @property
    def upgrader(self) -> list[str]:
        """How its operator runs upgrader (what the docs show)."""
        if self.kind == "notes":
            return [tool("flask"), "--app", "notes", "upgrader"]
        return [tool("upgrader"), "--app", "ledger.wsgi:application"]

    def write(self, version: str) -> None:
        if self.kind == "notes":
            (self.root / "notes" / "__init__.py").write_text(NOTES_INIT.format(version=version))
            (self.root / "notes" / "models.py").write_text(NOTES_MODELS[version])
        else:
            (self.root / "ledger" / "__init__.py").write_text(LEDGER_INIT.format(version=version))
            (self.root / "ledger" / "schema.py").write_text(LEDGER_SCHEMA[version])

    def autogenerate(self, message: str, env: dict[str, str] | None = None) -> Path:
        """The developer's `flask db migrate` / `alembic revision --autogenerate`."""
        versions = self.root / "migrations" / "versions"
        before = set(versions.glob("*.py"))
        if self.kind == "notes":
            args = [tool("flask"), "--app", "notes", "db", "migrate", "-m", message]
        else:
            args = [tool("alembic"), "revision", "--autogenerate", "-m", message]
        run(*args, cwd=self.root, env=env or self.dev_env)
        (new,) = set(versions.glob("*.py")) - before
        return new

    def dev_upgrade(self) -> None:
        if self.kind == "notes":
            run(tool("flask"), "--app", "notes", "db", "upgrade", cwd=self.root, env=self.dev_env)
        else:
            run(tool("alembic"), "upgrade", "head", cwd=self.root, env=self.dev_env)

    def release(self, version: str, tmp: Path) -> Path:
        """The release archive as deployed: the code, its migrations and install/."""
        target = tmp / f"{self.kind}-{version}"
        shutil.copytree(self.root, target, ignore=shutil.ignore_patterns("__pycache__", "*.db"))
        installer = target / ("instance/install" if self.kind == "notes" else "install")
        shutil.copytree(ROOT / "install", installer, ignore=shutil.ignore_patterns(".*"))
        brand = {"name": self.kind.title(), "accent": "#35507a"}
        (installer / "branding.json").write_text(json.dumps(brand))
        self.releases[version] = target
        return target


def develop(kind: str, tmp: Path) -> Project:
    """Three releases made the ordinary way, against a development database that upgrader
    has adopted (so its tables are there when autogenerate compares)."""
    root = tmp / f"{kind}-dev"
    (root / kind).mkdir(parents=True)
    dev_url = f"sqlite:///{tmp / f'{kind}-dev.db'}"
    variable = "NOTES_DATABASE_URL" if kind == "notes" else "LEDGER_DATABASE_URL"
    project = Project(kind, root, clean_env(**{variable: dev_url}))
    project.write("1.0.0")
    if kind == "notes":
        (root / "notes" / "views.py").write_text(NOTES_VIEWS)
        run(tool("flask"), "--app", "notes", "db", "init", cwd=root, env=project.dev_env)
    else:
        (root / "ledger" / "wsgi.py").write_text(LEDGER_WSGI)
        run(tool("alembic"), "init", "migrations", cwd=root, env=project.dev_env)
        env_py = root / "migrations" / "env.py"
        source = env_py.read_text()
        for old, new in LEDGER_ENV_EDITS:
            assert old in source, old
            source = source.replace(old, new)
        env_py.write_text(source)
        ini = root / "alembic.ini"
        ini.write_text(re.sub(r"(?m)^sqlalchemy\.url = .*$", "sqlalchemy.url =", ini.read_text()))
    project.autogenerate("initial")
    project.dev_upgrade()
    run(*project.upgrader, "adopt", "--yes", cwd=root, env=project.dev_env)
    project.release("1.0.0", tmp)
    for version in ("1.1.0", "1.2.0"):
        project.write(version)
        revision = project.autogenerate(f"release {version}")
        text = revision.read_text()
        assert "upgrader_" not in text, text  # the filter kept upgrader's tables out
        assert "op." in text  # the model change itself is there
        project.dev_upgrade()
        run(*project.upgrader, "adopt", "--yes", cwd=root, env=project.dev_env)
        project.release(version, tmp)
    return project


@pytest.fixture(scope="module")
def projects(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Project]:
    tmp = tmp_path_factory.mktemp("apps")
    return {kind: develop(kind, tmp) for kind in ("notes", "ledger")}


# ------------------------------------------------------------------ the deployment


class Server:
    def __init__(self, project: Project, version: str, env: dict[str, str]) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        target = "notes:create_app" if project.kind == "notes" else "ledger.wsgi:application"
        call = ["--call"] if project.kind == "notes" else []
        self.process = subprocess.Popen(
            [tool("waitress-serve"), f"--listen=127.0.0.1:{self.port}", *call, target],
            cwd=project.releases[version],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        wait_for_port(self.port, timeout=30)

    def get(self, path: str = "/") -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.base + path, timeout=20) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def stop(self) -> str:
        self.process.terminate()
        return self.process.communicate(timeout=15)[0]


def wizard_upgrade(server: Server, installer: Path, name: str) -> str:
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": 1000, "height": 760})
        page.goto(server.base + "/")
        assert page.locator("h1").inner_text() == "Down for Maintenance (Err2)"
        page.goto(server.base + "/install")
        # The key page's command, pasted as printed: from another directory, in a shell
        # without the virtualenv on its PATH, nor the application's settings, nor a terminal.
        command = page.locator("pre").inner_text()
        printed = subprocess.run(
            ["sh", "-c", command],
            cwd="/",
            env={"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root")},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
        )
        key = (installer / KEY_FILE).read_text().strip()
        assert printed.stdout.strip() == key, (command, printed.stderr)
        page.fill("input[name=key]", key)
        page.click("button[type=submit]")
        page.check("input[name=accept]")
        page.click("button[type=submit]")
        assert page.locator("h1").inner_text() == "Ready to upgrade"
        assert "1.0.0 → 1.1.0" in page.locator("main").inner_text()
        page.click("button:has-text('Start the upgrade')")
        page.wait_for_selector("text=/Upgrade (Completed Successfully!|Failed)/", timeout=90_000)
        page.screenshot(path=str(ARTIFACTS / f"other-{name}-done.png"), full_page=True)
        text = page.locator("main").inner_text()
        assert "Upgrade Completed Successfully!" in text, text
        page.click("a.button")
        page.wait_for_load_state()
        landed = page.locator("h1").inner_text()
        page.screenshot(path=str(ARTIFACTS / f"other-{name}-landed.png"), full_page=True)
        browser.close()
    return landed


def status(project: Project, version: str, env: dict[str, str]) -> dict[str, Any]:
    done = run(
        *project.upgrader, "status", "--json", cwd=project.releases[version], env=env, ok=False
    )
    assert done.returncode in (0, 2), done.stderr
    return dict(json.loads(done.stdout))


@pytest.fixture
def elsewhere(tmp_path: Path) -> Iterator[Path]:
    place = tmp_path / "somewhere-else"
    place.mkdir()
    yield place


@pytest.mark.parametrize("kind", ["notes", "ledger"])
def test_install_wizard_and_printed_fix_in_an_application_not_ours(
    kind: str, projects: dict[str, Project], db_url: str, elsewhere: Path
) -> None:
    project = projects[kind]
    variable = "NOTES_DATABASE_URL" if kind == "notes" else "LEDGER_DATABASE_URL"
    env = clean_env(**{variable: db_url})
    name = f"{kind}-{db_url.split(':')[0].split('+')[0]}"

    # 1.0.0 is installed.
    run(*project.upgrader, "install", "--yes", cwd=project.releases["1.0.0"], env=env)
    assert status(project, "1.0.0", env)["state"] == "ok"

    # 1.1.0 is deployed: visitors get Err2; the wizard upgrades; the site is back.
    server = Server(project, "1.1.0", env)
    try:
        code, page = server.get("/")
        assert code == 503 and "Down for Maintenance (Err2)" in page
        installer = project.releases["1.1.0"] / (
            "instance/install" if kind == "notes" else "install"
        )
        landed = wizard_upgrade(server, installer, name)
        assert landed == ("Notes 1.1.0" if kind == "notes" else "Ledger 1.1.0")
        code, page = server.get("/")
        assert code == 200 and "1.1.0" in page
    finally:
        log = server.stop()
    assert "Traceback" not in log, log
    after = status(project, "1.1.0", env)
    assert (after["state"], after["schema_version"]) == ("ok", "1.1.0")
    assert after["run"]["trigger"] == "web" and after["run"]["backup_path"]

    # 1.2.0 is deployed: the fix `status` prints, pasted in another directory, upgrades.
    pending = status(project, "1.2.0", env)
    assert pending["state"] == "upgrade_pending", pending
    commands = [c for c in backticked(pending["fix"]) if c.endswith(" upgrade")]
    assert commands, pending["fix"]
    # Where no terminal can answer its question, it says how to go without one.
    unasked = run("sh", "-c", commands[0], cwd=elsewhere, env=env, input="", ok=False)
    assert unasked.returncode == 64, unasked.stdout + unasked.stderr
    assert "no terminal to confirm: add --yes" in unasked.stderr, unasked.stderr
    pasted = run("sh", "-c", commands[0], cwd=elsewhere, env=env, input="y\n")
    assert "Upgraded to 1.2.0." in pasted.stdout, pasted.stdout
    done = status(project, "1.2.0", env)
    assert (done["state"], done["schema_version"]) == ("ok", "1.2.0")

    # A model change, autogenerated against this very database, leaves upgrader's tables be.
    work = elsewhere / "next"
    shutil.copytree(project.releases["1.2.0"], work)
    nxt = Project(kind, work, env)
    nxt.write("next")
    revision = nxt.autogenerate("next change", env).read_text()
    assert "upgrader_" not in revision, revision
    assert ("folder" if kind == "notes" else "budgets") in revision
