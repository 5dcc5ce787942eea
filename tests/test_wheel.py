"""The built wheel, installed into a fresh virtual environment (not editable), does the main job."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import ROOT, free_port, wait_for_port

pytestmark = pytest.mark.slow


def run(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def source_copy(place: Path) -> Path:
    """The project's files (as git knows them, new ones included) in a folder of their own:
    a build writes build/ and *.egg-info into its source, and tests run side by side."""
    listed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            target = place / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return place


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    source = source_copy(tmp_path_factory.mktemp("source"))
    built = run(
        sys.executable,
        "-m",
        "build",
        "--wheel",
        "--outdir",
        str(out),
        ".",
        cwd=source,
        env=dict(os.environ),
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (found,) = out.glob("upgrader-*.whl")
    return found


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    place = tmp_path_factory.mktemp("fresh")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UPGRADER_", "VIRTUAL_ENV"))}
    made = run(sys.executable, "-m", "venv", str(place / "venv"), cwd=place, env=env)
    assert made.returncode == 0, made.stderr
    pip = run(
        str(place / "venv/bin/python"), "-m", "pip", "install", "-q", str(wheel), cwd=place, env=env
    )
    assert pip.returncode == 0, pip.stdout + pip.stderr
    yield place / "venv"


def test_the_wheel_holds_what_it_should(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert not [n for n in names if n.startswith(("sampleapp/", "migrations/", "install/"))]
    assert "upgrader/py.typed" in names
    assert any(n.endswith("licenses/LICENSE") for n in names)
    for shipped in (
        "upgrader/sample/migrations/env.py",
        "upgrader/sample/migrations/alembic.ini",
        "upgrader/sample/migrations/versions/0003_sort_names.py",
        "upgrader/sample/install/EULA.txt",
        "upgrader/http/templates/blocked.html",
        "upgrader/wizard/templates/wizard/checks.html",
        "upgrader/console/templates/console/index.html",
        "upgrader/locale/upgrader.pot",
        "upgrader/locale/de/LC_MESSAGES/upgrader.mo",
    ):
        assert shipped in names, shipped
    # Every module of the source tree is in the wheel (the package list is explicit).
    source = {
        str(p.relative_to(ROOT))
        for p in (ROOT / "upgrader").rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert source <= set(names), source - set(names)
    # ... and every template and translation (a new language's directory included)
    data = {
        str(p.relative_to(ROOT))
        for pattern in ("*.html", "*.po", "*.mo", "*.pot")
        for p in (ROOT / "upgrader").rglob(pattern)
    }
    assert data <= set(names), data - set(names)
    metadata = (
        zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    )
    assert "Project-URL" in metadata and "Classifier: Typing :: Typed" in metadata


def test_status_without_configuration_says_what_to_set(venv: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UPGRADER_")}
    done = run(str(venv / "bin/upgrader"), "status", cwd=tmp_path, env=env)
    assert done.returncode == 64, done.stdout + done.stderr
    assert "UPGRADER_DATABASE_URL" in done.stderr and "--app" in done.stderr
    version = run(
        str(venv / "bin/python"),
        "-c",
        "import upgrader; print(upgrader.__version__)",
        cwd=tmp_path,
        env=env,
    )
    assert version.stdout.strip() == re.search(
        r'__version__ = "([^"]+)"', (ROOT / "upgrader/__init__.py").read_text()
    ).group(1)  # type: ignore[union-attr]


def test_the_demo_runs_from_the_wheel(venv: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UPGRADER_")}
    port = free_port()
    demo = subprocess.Popen(
        [str(venv / "bin/upgrader"), "demo", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for_port(port, timeout=60)
        with pytest.raises(urllib.error.HTTPError) as blocked:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=20)
        assert blocked.value.code == 503
        assert "Down for Maintenance (Err2)" in blocked.value.read().decode()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/install", timeout=20) as page:
            assert page.url.endswith("/install/key")
            assert "Prove you can reach the server" in page.read().decode()
    finally:
        demo.terminate()
        output = demo.communicate(timeout=15)[0]
    assert "the upgrade key: " in output, output
    assert str(ROOT) not in output  # nothing comes from the checkout
    # The demo's printed command reaches the demo's database, pasted anywhere.
    command = re.search(r"Or, in another terminal: (.+) status, then", output)
    assert command, output
    status = run("sh", "-c", f"{command.group(1)} status --json", cwd=Path("/"), env=env)
    assert json.loads(status.stdout)["state"] == "upgrade_pending", status.stdout + status.stderr
