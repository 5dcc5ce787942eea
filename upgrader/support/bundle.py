"""`upgrader doctor --bundle FILE`: everything support asks for, in one file to attach.

A zip of the report (text and JSON), the journal with every step's duration, and the log
of runs started from the web. Nothing secret goes in: URLs are masked where they are
made, and before anything is written every file is scrubbed of each secret this
installation has (the database password, the secret key, the installer's and the
console's keys, the signing key file, the bypass secret's hash), then checked again.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import click
from sqlalchemy import make_url
from sqlalchemy.exc import SQLAlchemyError

from upgrader.core import keys, times
from upgrader.core.database import describe_error, guard_engine, redact
from upgrader.core.diagnosis import Diagnosis
from upgrader.settings import Settings
from upgrader.support import report

README = """\
upgrader support bundle
=======================
report.txt    `upgrader doctor`: state, fix, every setting and where it came from, the
              environment, the database server, backups (disk, tools, pre-flight), the
              maintenance settings, the journal with step durations, the run log's tail
report.json   the same as JSON
journal.json  the last {runs} journal entries, each with its steps and their durations
upgrade.log   the log of runs started from the web installer (its last {lines} lines)

Made {made}. Passwords, keys and secrets were removed before it was written.
"""

LOG_LINES = 5000


def secrets_of(settings: Settings, d: Diagnosis) -> list[str]:
    """Every secret value this installation has, as it could appear in text."""
    found: list[str] = []
    try:
        password = make_url(settings.database_url).password
    except Exception:
        password = None
    if password:
        found += [str(password), quote(str(password), safe=""), quote_plus(str(password))]
    if settings.secret_key:
        found.append(settings.secret_key)

    files = [Path(settings.backup_dir) / name for name in (keys.CONSOLE_KEY, keys.SITE_KEY)]
    if settings.installer_dir is not None:
        files += [Path(settings.installer_dir) / n for n in (keys.UPGRADE_KEY, keys.SESSION_KEY)]
    for path in files:
        try:
            found.append(path.read_text().strip())
        except OSError:
            continue
    m = d.maintenance
    if m is not None and m.secret_hash:
        found += [m.secret_hash, *m.secret_hash.split("$")[1:]]
    return sorted({s for s in found if len(s) >= 4}, key=len, reverse=True)


def scrub(text: str, secrets: list[str], url: str) -> str:
    text = redact(text, url)
    for secret in secrets:
        text = text.replace(secret, "[redacted]")
    return text


def write_bundle(
    path: Path, settings: Settings, d: Diagnosis, doctor: dict[str, Any], text: str, runs: int
) -> Path:
    engine = guard_engine(settings)
    try:
        with engine.connect() as conn:
            journal: Any = report.journal(conn, settings, d, runs)
    except (SQLAlchemyError, ValueError, TypeError) as exc:
        journal = [{"error": describe_error(exc, engine.url)}]
    finally:
        engine.dispose()
    log = report.log_tail(Path(settings.backup_dir), settings.database_url, LOG_LINES)
    files = {
        "README.txt": README.format(
            runs=runs, lines=LOG_LINES, made=doctor["report"]["local_time"]
        ),
        "report.txt": click.unstyle(text) + "\n",
        "report.json": json.dumps(doctor, indent=2) + "\n",
        "journal.json": json.dumps(journal, indent=2) + "\n",
        "upgrade.log": "\n".join(log["lines"]) + ("\n" if log["lines"] else ""),
    }
    secrets = secrets_of(settings, d)
    clean = {
        name: scrub(content, secrets, settings.database_url) for name, content in files.items()
    }
    for name, content in clean.items():  # belt and braces: refuse rather than leak
        if any(secret in content for secret in secrets):
            raise click.ClickException(f"a secret survived scrubbing in {name}: nothing written")
    path = Path(path)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle, zipfile.ZipFile(handle, "w", zipfile.ZIP_DEFLATED) as z:
        for name, content in clean.items():
            z.writestr(f"upgrader-support/{name}", content)
    os.replace(partial, path)
    return path


def default_name() -> str:
    stamp = times.utcnow().strftime("%Y%m%dT%H%M%SZ")
    return f"upgrader-support-{stamp}.zip"
