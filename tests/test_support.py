"""What support staff get: the doctor report with every field they ask for, times with
their zone, the journal read with the diagnosis's liveness rules, and one bundle to
attach to a ticket that holds no secret."""

from __future__ import annotations

import datetime as dt
import json
import socket
import stat
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import make_url

from tests.conftest import SERVER_URLS, fresh_server_database
from tests.helpers import RELEASES_ENV, add_run, cli_args, install, run_cli
from upgrader.core import times


def doctor_json(url: str, env: dict[str, str]) -> dict[str, Any]:
    done = run_cli(*cli_args(url), "doctor", "--json", env=env)
    return dict(json.loads(done.output))


def test_doctor_reports_everything_support_asks_for(db_url: str, tmp_path: Path) -> None:
    install(db_url, "1.0.0")
    backups = tmp_path / "backups"
    env = {
        "UPGRADER_BACKUP_DIR": str(backups),
        "UPGRADER_ALLOW_IPS": "10.0.0.0/8",
        "UPGRADER_TRUSTED_PROXIES": "127.0.0.1",
        "UPGRADER_SECRET_KEY": "a-secret-key-never-shown",
    }
    # A real run started "from the web": its client's address is journalled.
    upgraded = run_cli(
        *cli_args(db_url), "upgrade", "--yes", "--trigger", "web", "--client", "203.0.113.9",
        env=env,
    )  # fmt: skip
    assert upgraded.exit_code == 0, upgraded.output
    on = run_cli(
        *cli_args(db_url), "maintenance", "on", "--message", "Disks", "--until", "+1h",
        "--allow", "198.51.100.7", "--generate-secret", env=env,
    )  # fmt: skip
    assert on.exit_code == 0
    (backups / "upgrade.log").write_text("".join(f"line {i}\n" for i in range(100)))

    report = doctor_json(db_url, env)
    made = report["report"]
    assert made["at"].endswith("Z") and made["host"] == socket.gethostname()
    assert made["user"] and "UTC" in made["time_zone"]
    config = report["configuration"]
    for name in ("releases", "allow_ips", "trusted_proxies", "installer_dir", "backup_dir",
                 "static_dir", "template_dir", "admin_path", "cache_ttl", "lock_timeout",
                 "blocked_status", "retry_after", "public_versions", "secret_key"):  # fmt: skip
        assert name in config, name
    allow = config["allow_ips"]
    assert allow == {"value": "10.0.0.0/8", "source": "environment UPGRADER_ALLOW_IPS"}
    assert config["secret_key"]["value"] == "set (not shown)"
    assert "a-secret-key-never-shown" not in json.dumps(report)
    backup = report["backups"]
    assert backup["directory"]["free_bytes"] > 0 and backup["directory"]["exists"]
    assert isinstance(backup["preflight"]["ok"], bool)
    dialect = make_url(db_url).get_backend_name()
    if dialect == "postgresql":
        assert backup["tools"]["pg_dump"]["version"].startswith("pg_dump (PostgreSQL)")
    elif dialect == "mysql":
        assert backup["tools"]["mariadb-dump"]["path"]
    else:
        assert backup["tools"] == {}  # SQLite needs no tool
    m = report["maintenance"]
    assert (m["mode"], m["active"], m["message"], m["allow"]) == (
        "block",
        True,
        "Disks",
        ["198.51.100.7"],
    )
    assert m["bypass_secret"] == "set (not shown)" and m["set_by"].endswith("(cli)")
    run = next(r for r in report["runs"] if r["kind"] == "upgrade")
    assert (run["client"], run["trigger"], run["status"]) == ("203.0.113.9", "web", "succeeded")
    assert [s["revision"] for s in run["step_times"]] == ["0002_loans_isbn", "0003_sort_names"]
    assert all(isinstance(s["seconds"], float) for s in run["step_times"])
    assert report["run_log"]["lines"][-1] == "line 99" and len(report["run_log"]["lines"]) == 60

    text = run_cli(*cli_args(db_url), "doctor", env=env).output
    for needle in ("== Report:", "== Backups", "pre-flight", "== Maintenance", "198.51.100.7",
                   "from 203.0.113.9", "1. 0002_loans_isbn succeeded", "== Run log",
                   "line 99", "not set:"):  # fmt: skip
        assert needle in text, needle


def test_history_reads_a_dead_run_as_the_diagnosis_does(db_url: str, tmp_path: Path) -> None:
    install(db_url, "1.0.0")
    now = times.utcnow()
    add_run(
        db_url,
        started_at=now - dt.timedelta(minutes=4),
        heartbeat_at=now - dt.timedelta(minutes=2),
        lease_expires_at=now - dt.timedelta(minutes=1),
        pid=999_999,
        host=socket.gethostname(),
    )
    status = json.loads(run_cli(*cli_args(db_url), "status", "--json").output)
    assert status["state"] == "upgrade_interrupted"
    entry = json.loads(run_cli(*cli_args(db_url), "history", "--json").output)[0]
    assert (entry["status"], entry["journal_status"]) == ("interrupted", "running")
    assert entry["took"] == "cut off after 2 min 00 s (last sign of life)"
    text = run_cli(*cli_args(db_url), "history").output
    assert "upgrade interrupted" in text and "journal: running" in text
    assert "cut off after 2 min 00 s" in text


def test_every_time_printed_carries_its_zone(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    install(url, "1.0.0")
    add_run(url, started_at=dt.datetime(2026, 11, 22, 3, 5), status="failed")
    new_york = {"TZ": "America/New_York"}
    on = run_cli(*cli_args(url), "maintenance", "on", "--until", "2026-12-01T15:00", env=new_york)
    assert on.exit_code == 0
    history = run_cli(*cli_args(url), "history", env=new_york).output
    assert "2026-11-21 22:05:00 EST (UTC-05:00)" in history
    status = run_cli(*cli_args(url), "status", env=new_york).output
    assert "started 2026-11-21 22:05:00 EST (UTC-05:00)" in status
    shown = run_cli(*cli_args(url), "maintenance", "status", env=new_york).output
    assert "until    2026-12-01 10:00:00 EST (UTC-05:00)" in shown
    doctor = run_cli(*cli_args(url), "doctor", env=new_york).output
    assert "time zone        America/New_York (EST, UTC-05:00)" in doctor
    assert "2026-11-21 22:05:00 EST (UTC-05:00)" in doctor
    assert "2026-11-22 03:05:00 UTC" in run_cli(*cli_args(url), "history", env={"TZ": "UTC"}).output


@pytest.fixture
def postgresql_with_password() -> Iterator[str]:
    """PostgreSQL here trusts local connections, so a password planted in the URL is
    accepted and travels everywhere the URL does."""
    if not SERVER_URLS["postgresql"]:
        pytest.skip("TEST_POSTGRESQL_URL is not set")
    for url in fresh_server_database("postgresql"):
        yield make_url(url).set(password="Planted-Pa55").render_as_string(hide_password=False)


def test_the_support_bundle_holds_everything_and_no_secret(
    postgresql_with_password: str, tmp_path: Path
) -> None:
    url = postgresql_with_password
    install(url, "1.0.0")
    installer, backups = tmp_path / "install", tmp_path / "backups"
    installer.mkdir()
    (installer / ".upgrade-key").write_text("Planted-upgrade-key\n")
    env = {
        "UPGRADER_INSTALLER_DIR": str(installer),
        "UPGRADER_BACKUP_DIR": str(backups),
        "UPGRADER_SECRET_KEY": "Planted-secret-key",
        "UPGRADER_RELEASES": RELEASES_ENV,
    }
    assert run_cli(*cli_args(url), "upgrade", "--yes", env=env).exit_code == 0
    on = run_cli(*cli_args(url), "maintenance", "on", "--secret", "Planted-bypass", env=env)
    assert on.exit_code == 0
    console_key = run_cli(*cli_args(url), "admin-key", env=env).output.strip()
    (backups / "upgrade.log").write_text(f"connecting to {url}\nfailed with key {console_key}\n")
    target = tmp_path / "ticket" / "bundle.zip"
    target.parent.mkdir()
    done = run_cli(*cli_args(url), "doctor", "--bundle", str(target), env=env)
    assert done.exit_code == 5, done.output  # the state's exit status: maintenance
    assert "Support bundle written" in done.output
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    with zipfile.ZipFile(target) as z:
        names = sorted(z.namelist())
        contents = {n: z.read(n).decode() for n in names}
    assert names == [
        f"upgrader-support/{n}"
        for n in ("README.txt", "journal.json", "report.json", "report.txt", "upgrade.log")
    ]
    report = json.loads(contents["upgrader-support/report.json"])
    assert report["status"]["state"] == "maintenance"
    journal = json.loads(contents["upgrader-support/journal.json"])
    assert any(r["kind"] == "upgrade" and r["step_times"] for r in journal)
    assert (
        "connecting to postgresql+psycopg://postgres:***@"
        in contents["upgrader-support/upgrade.log"]
    )
    everything = "\n".join(contents.values())
    for secret in ("Planted-Pa55", "Planted-upgrade-key", "Planted-secret-key", "Planted-bypass",
                   console_key):  # fmt: skip
        assert secret not in everything, secret
    assert "hmac-sha256$" not in everything  # not even the bypass secret's hash
