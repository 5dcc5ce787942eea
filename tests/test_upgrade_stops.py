"""Upgrade stops: a release that no longer upgrades from very old ones (GitLab's required
stops, Gitea's minimum version). Its chain was squashed, or it declares the oldest release
it upgrades from; a database older than that is named as such, `upgrade` changes
nothing, and nothing calls it a patch."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.chains import environment, write_revision
from tests.helpers import MIGRATIONS, content, install, journal_of, run_cli

SQUASHED_BASE = """
op.create_table("authors", sa.Column("id", sa.Integer, primary_key=True),
                sa.Column("name", sa.String(200)), sa.Column("sort_name", sa.String(200)))
"""


def squashed(tmp_path: Path) -> Path:
    """Release 3.0.0: the revisions of 1.0.0 to 2.0.1 folded into one new base."""
    root = environment(tmp_path / "code-3.0.0")
    write_revision(root / "versions", "0100_base", None, SQUASHED_BASE, message="3.0.0 base")
    return root


def args(url: str, migrations: Path, version: str) -> list[str]:
    return ["--database-url", url, "--migrations", str(migrations), "--code-version", version]


def state_of(url: str, migrations: Path, version: str, **env: str) -> tuple[dict, int]:
    done = run_cli(*args(url, migrations, version), "status", "--json", env=env)
    return json.loads(done.output), done.exit_code


def test_a_squashed_chain_names_the_stop_and_changes_nothing(db_url: str, tmp_path: Path) -> None:
    install(db_url, "1.0.0")
    code = squashed(tmp_path)
    env = {"UPGRADER_RELEASES": "1.0.0=0001_initial,3.0.0=0100_base"}
    before = content(db_url)
    status, exit_code = state_of(db_url, code, "3.0.0", **env, UPGRADER_UPGRADE_FROM="2.0.0")
    assert (status["state"], status["code"], exit_code) == ("database_too_old", "Err3", 3)
    fix = status["fix"]
    assert "This release upgrades databases from 2.0.0 on; this database is at 1.0.0" in fix
    assert "Upgrade it with release 2.0.x first" in fix and "then deploy 3.0.0 again" in fix
    assert "patch" not in json.dumps(status)
    refused = run_cli(*args(db_url, code, "3.0.0"), "upgrade", "--yes", env=env)
    assert refused.exit_code == 3, refused.output
    assert "Nothing was changed" in refused.output
    assert content(db_url) == before
    assert [r["kind"] for r in journal_of(db_url)] == []  # no run was opened
    # Without UPGRADER_UPGRADE_FROM, the releases say which revisions left the chain.
    status, exit_code = state_of(db_url, code, "3.0.0", **env)
    assert (status["state"], exit_code) == ("database_too_old", 3)
    assert "no longer carries the migrations of 1.0.0" in status["fix"], status["fix"]
    # With nothing declared, both readings are offered, and neither is asserted.
    status, _ = state_of(db_url, code, "3.0.0", UPGRADER_RELEASES="")
    assert status["state"] == "schema_unknown"
    assert "no longer carries the migrations of 1.0.0" in status["fix"]
    assert "UPGRADER_UPGRADE_FROM" in status["fix"] and "patch" not in status["fix"]


def test_a_declared_floor_stops_an_old_database_on_a_full_chain(
    db_url: str, tmp_path: Path
) -> None:
    """The chain still has every revision, but the release supports upgrades from 2.0.0
    on only (it was never tested from older ones)."""
    install(db_url, "1.0.0")
    code = tmp_path / "code-2.0.1"
    shutil.copytree(MIGRATIONS, code, ignore=shutil.ignore_patterns("__pycache__"))
    floor = {"UPGRADER_UPGRADE_FROM": "1.1.0"}
    status, exit_code = state_of(db_url, code, "2.0.1", **floor)
    assert (status["state"], exit_code) == ("database_too_old", 3)
    assert "Upgrade it with release 1.1.x first" in status["fix"]
    refused = run_cli(*args(db_url, code, "2.0.1"), "upgrade", "--yes", env=floor)
    assert refused.exit_code == 3
    # From a release at or above the floor, the upgrade goes as usual.
    status, _ = state_of(db_url, code, "2.0.1", UPGRADER_UPGRADE_FROM="1.0.0")
    assert status["state"] == "upgrade_pending"


def test_an_unusable_floor_is_a_configuration_error(db_url: str, tmp_path: Path) -> None:
    done = run_cli(
        *args(db_url, MIGRATIONS, "2.0.1"), "status", env={"UPGRADER_UPGRADE_FROM": "two"}
    )
    assert done.exit_code == 64 and "UPGRADER_UPGRADE_FROM" in done.output
