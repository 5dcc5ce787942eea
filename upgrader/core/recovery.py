"""The words for runs: one that is running (or holds the lock and does nothing), and one
that was cut off: what happened, what the database holds now, and the way back."""

from __future__ import annotations

from upgrader.core.decide import Attempt, Context, Finding, Stall
from upgrader.core.states import State
from upgrader.core.times import iso
from upgrader.core.wording import Text, Words, cap, progress, revisions_of


def busy(f: Finding, c: Context, w: Words) -> Text:
    detail, fix = _stall_words(f.stall, w, sqlite=True) or ("", "")
    return Text(
        fix or f"Wait for it to finish; follow it with `{w.cli} status`.",
        (
            "the database is busy with the running upgrade (its process holds the upgrade "
            f"lock, and SQLite lets nobody read during its writes): {c.db.busy}",
            detail,
        ),
    )


def running(f: Finding, c: Context, w: Words) -> Text:
    run = c.run
    assert run is not None
    detail, fix = _stall_words(f.stall, w, sqlite=c.db.dialect == "sqlite") or ("", "")
    lingering = c.db.lingering
    return Text(
        fix
        or f"Wait for it to finish; follow it with `{w.cli} status`. It was started by "
        f"{run.actor or 'unknown'} on {run.host} (pid {run.pid}) at {iso(run.started_at)}.",
        (
            f"run #{run.id} from {run.from_version or '-'} to {run.to_version}: {progress(run)}",
            detail,
            f"a session of the killed run is still working in the server: {lingering}"
            if lingering
            else "",
        ),
        # for visitors: how far, never which revision (that is for administrators)
        f"{State.UPGRADE_RUNNING.summary} (step {run.step} of {run.steps})"
        if run.step and run.steps
        else None,
    )


def _stall_words(stall: Stall | None, w: Words, *, sqlite: bool) -> tuple[str, str] | None:
    """(detail, fix) for a run that holds the lock and does nothing, or says nothing."""
    if stall is None:
        return None
    pid, host = stall.pid, stall.host
    if stall.kind == "stopped":
        holds = "the upgrade lock and SQLite's write lock" if sqlite else "the upgrade lock"
        return (
            f"process {pid} on {host} is stopped (Ctrl-Z, SIGSTOP or a debugger): it holds "
            f"{holds} and does nothing until it is resumed",
            f"Process {pid} on {host} is stopped: resume it with `kill -CONT {pid}` and it "
            f"finishes the upgrade; or end it with `kill -TERM {pid} && kill -CONT {pid}` (it "
            f"records where it stopped), then {w.upgrade}.",
        )
    if stall.kind == "slow":
        return (
            f"no heartbeat for {stall.seconds} s, yet process {pid} on {host} runs and holds "
            "the lock: a long statement, or a wait on the disk or the network",
            f"Wait for it; `{w.cli} doctor` shows the database sessions it waits behind. To "
            f"end it, run `kill -TERM {pid}` on {host}, then {w.upgrade}.",
        )
    return (
        f"no heartbeat for {stall.seconds} s from {host} pid {pid}, yet it holds the upgrade lock",
        f"On {host}, see whether process {pid} is stopped (`ps -o stat= -p {pid}` shows T): "
        f"resume it with `kill -CONT {pid}`, or end it with `kill -TERM {pid} && kill -CONT "
        f"{pid}`, then {w.upgrade}. If {host} itself is gone, `{w.cli} unlock --force --yes` "
        "ends the run's database sessions and closes it.",
    )


def cut_off(f: Finding, c: Context, w: Words) -> Text:
    attempt = f.attempt
    assert attempt is not None
    details = [*_what_happened(f.state, attempt, c), *_what_is_left(attempt, c)]
    fix = "; ".join(_way_back(f.state, attempt, c, w))
    return Text(cap(fix) + ".", tuple(details))


def _what_happened(state: State, a: Attempt, c: Context) -> list[str]:
    run, db = a.run, c.db
    at = progress(run) or "its start"
    span = f"run #{run.id} ({run.from_version or '-'} to {run.to_version})"
    if state is State.UPGRADE_FAILED:
        return [f"{span} failed at {at}", f"error: {run.error or 'not recorded'}"]
    how = (
        run.note or "it was stopped"
        if run.status in ("interrupted", "aborted")
        else "no process holds its upgrade lock any more"
        if db.lock_held is False
        else f"its lease expired at {iso(run.lease_expires_at)}"
    )
    return [f"{span} stopped at {at}; {how} (it ran on {run.host}, pid {run.pid})"]


def _what_is_left(a: Attempt, c: Context) -> list[str]:
    db, run = c.db, a.run
    details = []
    if a.committed is not None:
        where = f"the database is at revision {revisions_of(c)}"
        finished = run.step - 1
        details.append(
            f"{where}, as before the run: none of its {finished} finished step(s) was "
            "committed (the database rolled back the transaction that held them; step 0 of "
            f"{run.steps})"
            if a.committed == 0
            else f"{where}: {a.committed} of its {finished} finished step(s) are committed "
            f"(step {a.committed} of {run.steps}); the database rolled back the rest with "
            "their transaction"
        )
    if a.cut and a.partial_possible:
        why = (
            "MariaDB/MySQL commits each schema change as it runs"
            if db.dialect != "sqlite"
            else "SQLite runs many migrations' schema changes outside a transaction"
        )
        details.append(f"revision {a.cut} was cut off and may be partly applied ({why})")
    if a.leftovers:
        some = "" if len(a.repairable) == len(a.leftovers) else " (some without their original)"
        details.append(
            f"tables left by an interrupted batch migration: {', '.join(a.leftovers)}{some}"
        )
    if db.lingering:
        details.append(f"a session of the dead run is still working in the server: {db.lingering}")
    if a.clean:
        details.append(f"the backup taken before this upgrade's first attempt: {a.clean}")
    return details


def _way_back(state: State, a: Attempt, c: Context, w: Words) -> list[str]:
    cli, upgrade, revs = w.cli, w.upgrade, revisions_of(c)
    steps: list[str] = []
    if c.db.lingering:
        steps.append(f"end the dead run's database session with `{cli} unlock`")
    if state is State.UPGRADE_FAILED:
        steps.append("read the error and fix its cause")
    all_repairable = len(a.repairable) == len(a.leftovers)
    risky = (a.cut and a.partial_possible) or (a.leftovers and not all_repairable)
    if risky and a.clean:
        steps.append(
            f"restore the backup taken before this upgrade with `{cli} restore {a.clean} "
            "--yes` (the rerun's backups may hold the half-done revision), then run the "
            f"upgrade again ({upgrade})"
        )
        if a.leftovers and all_repairable and not (a.cut and c.db.dialect != "sqlite"):
            steps[-1] += f"; or remove the leftover tables with `{cli} repair` and run it again"
    elif risky:
        steps.append(
            f"no backup was taken: compare the tables revision {a.cut or 'of the cut step'} "
            "touches with its migration file and undo what it did"
            + (f" (`{cli} repair` removes the leftover copies)" if a.repairable else "")
            + f", then run the upgrade again ({upgrade}): it resumes from revision {revs}"
        )
    else:
        if a.repairable:
            steps.append(f"remove the leftover tables with `{cli} repair`")
        steps.append(f"run the upgrade again ({upgrade}): it resumes from revision {revs}")
        if a.clean:
            steps.append(f"to go back instead, run `{cli} restore {a.clean} --yes`")
    return steps
