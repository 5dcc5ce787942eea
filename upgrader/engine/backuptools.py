"""The database's own backup tools (pg_dump, mariadb-dump, their restores) as processes.

A tool dies with upgrader (PR_SET_PDEATHSIG, through util-linux's `setpriv`), rather than
dump on after a kill -9 holding its table locks. It is killed as soon as the work its
caller does meanwhile fails. Its output goes to unnamed files, not pipes, so that it
cannot block on a full pipe while the caller is busy; what it says is read whatever its
encoding (a server's Latin-1 message).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from typing import IO, Any

from sqlalchemy import URL

from upgrader.core.database import redact
from upgrader.engine.exits import EngineError

DUMP_TIMEOUT = 6 * 3600


class BackupError(EngineError):
    """A backup or restore could not be made or verified; the message says why."""


@contextlib.contextmanager
def running(
    argv: list[str],
    env: dict[str, str],
    url: URL,
    what: str,
    stdout: IO[bytes] | int = subprocess.DEVNULL,
    **popen: Any,
) -> Iterator[subprocess.Popen[bytes]]:
    """The tool runs while the block does. Leaving the block waits for it, and raises
    BackupError if it failed; if the block fails, the tool is killed first. `url` is
    redacted from what the tool says."""
    guard = shutil.which("setpriv")
    if guard:
        argv = [guard, "--pdeathsig", "SIGKILL", "--", *argv]
    with tempfile.TemporaryFile() as errors:
        try:
            tool = subprocess.Popen(argv, env=env, stdout=stdout, stderr=errors, **popen)
        except OSError as exc:
            raise BackupError(f"{what} could not run: {redact(str(exc), url)}") from exc
        with tool:  # waits for the tool, whatever happens
            try:
                yield tool
                tool.wait(timeout=DUMP_TIMEOUT)
            except subprocess.TimeoutExpired as exc:
                tool.kill()
                raise BackupError(f"{what} did not finish in {DUMP_TIMEOUT // 3600} hours") from exc
            except BaseException:
                tool.kill()
                raise
        if tool.returncode != 0:
            errors.seek(0)
            said = " ".join(errors.read().decode(errors="replace").split())[:2000] or "no message"
            raise BackupError(f"{what} failed (exit {tool.returncode}): {redact(said, url)}")


def run(argv: list[str], env: dict[str, str], url: URL, what: str, **popen: Any) -> str:
    """The tool's output, once it has ended well (else BackupError)."""
    with tempfile.TemporaryFile() as output:
        with running(argv, env, url, what, stdout=output, **popen):
            pass
        output.seek(0)
        return output.read().decode(errors="replace")
