"""One deadline above every driver's own idea of a timeout: `within(seconds, work)`.

PyMySQL reads the handshake with its read timeout, libpq tries every address, and no
driver bounds a read from a server that accepted the connection and went silent. So the
work runs in a daemon thread, and the caller waits for it only so long. The threads are
kept and reused (starting one cost a refresh 0.35 ms of CPU, a fifth of it); a thread
whose work overran is left to finish it, and is not used again.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class NoAnswer(Exception):
    """The database server did not answer within the deadline."""


class _Job:
    """One piece of work, its answer, and who gets a late one (`abandon`)."""

    def __init__(self, work: Callable[[], Any], abandon: Callable[[Any], None] | None) -> None:
        self.work, self.abandon = work, abandon
        self.done = threading.Event()
        self.lock = threading.Lock()
        self.result: tuple[bool, Any] | None = None
        self.late = False

    def run(self) -> None:
        try:
            result: tuple[bool, Any] = (True, self.work())
        except BaseException as exc:  # handed to the caller
            result = (False, exc)
        with self.lock:
            self.result, late = result, self.late
        self.done.set()
        if late and result[0] and self.abandon is not None:
            self.abandon(result[1])

    def give_up(self) -> bool:
        """The caller stops waiting; False if the answer came in the meantime."""
        with self.lock:
            self.late = self.result is None
            return self.late


class _Worker:
    """A daemon thread that runs the jobs it is handed, one at a time."""

    def __init__(self) -> None:
        self.jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        threading.Thread(target=self._serve, name="upgrader-deadline", daemon=True).start()

    def _serve(self) -> None:
        while True:
            self.jobs.get().run()


_idle: list[_Worker] = []
_idle_lock = threading.Lock()


def _forget_workers() -> None:
    """In a forked child the workers' threads do not exist (a pre-forking server that
    refreshed before it forked): it starts its own."""
    global _idle_lock
    _idle.clear()
    _idle_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_workers)


def within(seconds: float, work: Callable[[], T], abandon: Callable[[T], None] | None = None) -> T:
    """`work()`, or NoAnswer after `seconds`; what it brings back too late is handed to
    `abandon` (a connection, to be closed)."""
    with _idle_lock:
        worker = _idle.pop() if _idle else None
    worker = worker or _Worker()
    job = _Job(work, abandon)
    worker.jobs.put(job)
    if not job.done.wait(seconds) and job.give_up():
        raise NoAnswer(f"no answer within {seconds:g} s")  # the worker stays with the job
    with _idle_lock:
        _idle.append(worker)
    assert job.result is not None
    ok, value = job.result
    if not ok:
        raise value
    return value  # type: ignore[no-any-return]
