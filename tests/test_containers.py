"""deploy/: the Dockerfile, the Compose file and the Kubernetes manifests of docs/containers.md.

No container runtime runs here, so each file is checked for what would break it in use: the
manifests against Kubernetes' own schemas (strict: an unknown field fails), the Compose file
against the Compose specification's schema, every `upgrader` command in them against the CLI,
and the migration job's command run, in the image's environment as the Dockerfile sets it,
against the three databases: the first deployment installs, a later one upgrades with a backup,
a rerun changes nothing, and the init container's `upgrader wait` then lets the pods start.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from kubernetes_validate import utils as kubernetes
from sqlalchemy import create_engine, inspect

from tests.helpers import ROOT, install
from upgrader.sample.releases import CURRENT

DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "compose.yaml"
MANIFESTS = sorted((DEPLOY / "kubernetes").glob("*.yaml"))
KUBERNETES = "1.37.0"
COMPOSE_SCHEMA = ROOT / "tests" / "fixtures" / "compose_spec.json"


def manifests() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in MANIFESTS:
        for doc in yaml.safe_load_all(path.read_text()):
            yield f"{path.name}:{doc['kind']}", doc


def containers(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    spec = doc["spec"]["template"]["spec"] if "template" in doc.get("spec", {}) else {}
    yield from spec.get("initContainers", [])
    yield from spec.get("containers", [])


def commands() -> Iterator[list[str]]:
    """Every command the deploy files run, as argument lists."""
    for _, doc in manifests():
        for container in containers(doc):
            yield container["command"]
    for service in yaml.safe_load(COMPOSE.read_text())["services"].values():
        if isinstance(service.get("command"), list):
            yield service["command"]
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("CMD "):
            yield json.loads(line.removeprefix("CMD "))


def image_environment() -> dict[str, str]:
    """The ENV the Dockerfile sets (one ENV instruction, continued over lines)."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    (instruction,) = re.findall(r"^ENV (.+)$", text, flags=re.MULTILINE)
    return dict(pair.split("=", 1) for pair in shlex.split(instruction))


def test_the_kubernetes_manifests_are_valid() -> None:
    kinds = []
    for name, doc in manifests():
        kubernetes.validate(doc, KUBERNETES, strict=True)  # raises, naming the field
        kinds.append(name)
    assert {k.split(":")[1] for k in kinds} >= {"Deployment", "Job", "Service", "Secret"}


def test_the_compose_file_is_valid() -> None:
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    errors = [
        e.message
        for e in jsonschema.Draft7Validator(schema).iter_errors(yaml.safe_load(COMPOSE.read_text()))
    ]
    assert errors == []


def test_the_manifests_wire_the_job_the_wait_and_the_probes() -> None:
    """What docs/containers.md promises of them: the job is a hook that does not retry a
    failed upgrade; each pod waits for the database; no probe turns a maintenance into a
    restart or an empty Service."""
    docs = dict(manifests())
    job = docs["migrate-job.yaml:Job"]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert job["spec"]["backoffLimit"] == 0
    pod = docs["deployment.yaml:Deployment"]["spec"]["template"]["spec"]
    assert pod["initContainers"][0]["command"][:2] == ["upgrader", "wait"]
    (web,) = pod["containers"]
    assert web["readinessProbe"]["httpGet"]["path"] == "/upgrader/status"
    assert "tcpSocket" in web["livenessProbe"]
    images = {c["image"] for c in containers(docs["deployment.yaml:Deployment"])}
    assert images == {c["image"] for c in containers(job)}  # one image, three roles


@pytest.mark.parametrize("command", list(commands()), ids=" ".join)
def test_every_upgrader_command_in_the_deploy_files_is_understood(command: list[str]) -> None:
    assert command[0] == "upgrader"
    done = subprocess.run(
        [sys.executable, "-m", "upgrader", *command[1:], "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


def run_in_image(tmp_path: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`upgrader ARGS` as the image runs it: its ENV, its WORKDIR, the database URL the
    Secret gives; /srv stands for a directory of the test's own."""
    srv = tmp_path / "srv"
    (srv / "backups").mkdir(parents=True, exist_ok=True)
    image = {k: v.replace("/srv", str(srv)) for k, v in image_environment().items()}
    keep = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
    return subprocess.run(
        [sys.executable, "-m", "upgrader", *args],
        env={**keep, **image, "SHELF_DATABASE_URL": url},
        cwd=srv,
        capture_output=True,
        text=True,
        timeout=300,
    )


def job_command() -> list[str]:
    docs = dict(manifests())
    (container,) = containers(docs["migrate-job.yaml:Job"])
    return list(container["command"][1:])


def test_the_migration_job_installs_then_changes_nothing(db_url: str, tmp_path: Path) -> None:
    first = run_in_image(tmp_path, db_url, *job_command())
    if db_url.startswith("sqlite"):  # no file yet: refused, with the command that installs
        assert first.returncode == 1, first.stdout + first.stderr
        (fix,) = re.findall(r"run `([^`]+)`", first.stderr)
        first = run_in_image(tmp_path, db_url, *shlex.split(fix)[1:])
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"Installed {CURRENT}." in first.stdout
    engine = create_engine(db_url)
    try:
        assert "books" in inspect(engine).get_table_names()
    finally:
        engine.dispose()
    again = run_in_image(tmp_path, db_url, *job_command())
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Installed" not in again.stdout
    waited = run_in_image(tmp_path, db_url, "wait", "--timeout", "10", "--interval", "1")
    assert waited.returncode == 0, waited.stdout + waited.stderr
    assert waited.stdout.startswith("ready: ok")


def test_the_migration_job_upgrades_with_a_backup(db_url: str, tmp_path: Path) -> None:
    install(db_url, "1.0.0")
    waiting = run_in_image(tmp_path, db_url, "wait", "--timeout", "1", "--interval", "0.5")
    assert waiting.returncode != 0  # the pods of 2.0.0 would not start yet
    assert "upgrade" in waiting.stdout
    done = run_in_image(tmp_path, db_url, *job_command())
    assert done.returncode == 0, done.stdout + done.stderr
    assert list((tmp_path / "srv" / "backups").iterdir())  # into the volume
    waited = run_in_image(tmp_path, db_url, "wait", "--timeout", "10", "--interval", "1")
    assert waited.returncode == 0, waited.stdout + waited.stderr


def test_the_migration_job_refuses_a_missing_sqlite_file(tmp_path: Path) -> None:
    """An unmounted volume looks like a first deployment: installing there would start the
    site afresh beside its data."""
    missing = tmp_path / "volume" / "shelf.db"
    done = run_in_image(tmp_path, f"sqlite:///{missing}", *job_command())
    assert done.returncode != 0
    assert f"the database file {missing} does not exist" in done.stderr
    assert "mount the volume" in done.stderr
    assert not missing.exists()
