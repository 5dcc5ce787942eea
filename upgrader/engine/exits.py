"""How the engine's commands end: their exit statuses (docs/cli.md), the exceptions that
carry them, and the one place that says which states a run refuses, and how."""

from __future__ import annotations

from upgrader.core import times
from upgrader.core.diagnosis import Diagnosis
from upgrader.core.states import BUSY, MISMATCH, NOT_INSTALLED, UNAVAILABLE, State

EXIT_FAILED = 1
EXIT_REFUSED_AHEAD = MISMATCH  # 3
EXIT_NOT_INSTALLED = NOT_INSTALLED  # 4
EXIT_UNAVAILABLE = UNAVAILABLE  # 69
EXIT_PREFLIGHT = 73
EXIT_BUSY = BUSY  # 75
EXIT_STOPPED = 130  # as a shell reports a command ended by SIGINT


class EngineError(Exception):
    exit_code = EXIT_FAILED


class Refused(EngineError):
    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class AlreadyRunning(EngineError):
    exit_code = EXIT_BUSY


class PreflightFailed(EngineError):
    exit_code = EXIT_PREFLIGHT


class MigrationFailed(EngineError):
    exit_code = EXIT_FAILED


class Stopped(EngineError):
    """The run was stopped from outside (Ctrl-C, SIGTERM): it is journalled as interrupted."""

    exit_code = EXIT_STOPPED


def refuse_unless_upgradable(d: Diagnosis, cli: str, *, busy: bool = True) -> None:
    """Raise what an upgrade says in a state it may not run in (the state's `refusal`).
    `busy=False` lets a running upgrade pass: under the upgrade lock, a live lease belongs
    to a process that died holding it, and the run takes over; before the lock, the lock
    itself says who runs."""
    code = d.state.refusal
    if code is None:
        return
    if code == EXIT_BUSY:
        if busy:
            raise AlreadyRunning(busy_message(d))
        return
    details = "; ".join(d.details)
    if code == EXIT_UNAVAILABLE:
        raise Refused(f"the database cannot be reached: {details}", code)
    if code == EXIT_NOT_INSTALLED:
        raise Refused(f"nothing is installed yet: run `{cli} install`", code)
    if d.state is State.COMPATIBLE_AHEAD:
        raise Refused(
            f"this code ({d.code_version}) is older than the database, which a newer "
            f"release upgraded online: {d.fix} Nothing was changed.",
            code,
        )
    raise Refused(f"{d.headline}: {details}. {d.fix} Nothing was changed.", code)


def busy_message(d: Diagnosis | None) -> str:
    """Who runs the upgrade that holds the lock, where, since when, and how far it is."""
    run = d.run if d else None
    if run is None or run.status != "running":
        return "an upgrade is already running (the upgrade lock is held)"
    where = f"on {run.host} (pid {run.pid})" if run.host else ""
    progress = (
        f", at step {run.step} of {run.steps}"
        if run.step
        else ", backing up the database"
        if run.steps
        else ""
    )
    return (
        f"an upgrade is already running: run #{run.id} ({run.kind}) started by "
        f"{run.actor or 'unknown'} {where} at {times.iso(run.started_at)}{progress}"
    )
