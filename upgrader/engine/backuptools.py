"""The database's own backup tools (pg_dump, mariadb-dump, their restores) as processes.

A tool dies with upgrader (PR_SET_PDEATHSIG, through util-linux's `setpriv`), rather than
dump on after a kill -9 holding its table locks. It is killed as soon as the work its
caller does beside it fails. What it says is read whatever its encoding (a server's
Latin-1 message).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import URL

from upgrader.core.database import redact
from upgrader.engine.exits import EngineError

DUMP_TIMEOUT = 6 * 3600


class BackupError(EngineError):
    """A backup or restore could not be made or verified; the message says why."""


@dataclass
class Tool:
    process: subprocess.Popen[bytes]
    output: str = ""  # its standard output, once it has ended


@contextlib.contextmanager
def running(
    argv: list[str], env: dict[str, str], url: URL, what: str, **popen: Any
) -> Iterator[Tool]:
    """The tool runs while the block does. Leaving the block waits for it, and raises
    BackupError if it failed; if the block fails, the tool is killed first. `url` is
    redacted from what the tool says.

    Its output is read once the block is done (the tool may wait on a full pipe until
    then, so the block should be short), with `communicate`: it returns the moment the
    tool ends, where `wait(timeout)` polls, up to 50 ms late."""
    guard = shutil.which("setpriv")
    if guard:
        argv = [guard, "--pdeathsig", "SIGKILL", "--", *argv]
    pipe = subprocess.PIPE
    try:
        process = subprocess.Popen(argv, env=env, stdout=pipe, stderr=pipe, **popen)
    except OSError as exc:
        raise BackupError(f"{what} could not run: {redact(str(exc), url)}") from exc
    tool = Tool(process)
    with process:  # waits for the tool, whatever happens
        try:
            yield tool
            out, err = process.communicate(timeout=DUMP_TIMEOUT)
        except subprocess.TimeoutExpired as exc:
            process.kill()
            raise BackupError(f"{what} did not finish in {DUMP_TIMEOUT // 3600} hours") from exc
        except BaseException:
            process.kill()
            raise
    if process.returncode != 0:
        said = " ".join(err.decode(errors="replace").split())[:2000] or "no message"
        raise BackupError(f"{what} failed (exit {process.returncode}): {redact(said, url)}")
    tool.output = out.decode(errors="replace")


def run(argv: list[str], env: dict[str, str], url: URL, what: str, **popen: Any) -> str:
    """The tool's output, once it has ended well (else BackupError)."""
    with running(argv, env, url, what, **popen) as tool:
        pass
    return tool.output
