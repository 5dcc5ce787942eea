"""`within()`: the deadline above every driver's timeouts, on threads that are kept."""

from __future__ import annotations

import os
import threading
import time

import pytest

from upgrader.core import deadline
from upgrader.core.deadline import NoAnswer, within


def test_an_answer_in_time_and_the_thread_is_kept() -> None:
    assert within(1, lambda: threading.current_thread().name) == "upgrader-deadline"
    first = within(1, threading.get_ident)
    assert within(1, threading.get_ident) == first  # the same thread, reused


def test_an_error_reaches_the_caller() -> None:
    def fails() -> None:
        raise ValueError("no such table")

    with pytest.raises(ValueError, match="no such table"):
        within(1, fails)
    assert within(1, lambda: 42) == 42


def test_a_late_answer_is_abandoned_and_its_thread_not_reused() -> None:
    release, abandoned = threading.Event(), []
    stuck: list[int] = []

    def hangs() -> str:
        stuck.append(threading.get_ident())
        release.wait(5)
        return "connection"

    started = time.monotonic()
    with pytest.raises(NoAnswer, match=r"no answer within 0\.2 s"):
        within(0.2, hangs, abandon=abandoned.append)
    assert time.monotonic() - started < 1
    assert within(1, threading.get_ident) != stuck[0]  # another thread answers meanwhile
    release.set()
    deadline = time.monotonic() + 5
    while not abandoned and time.monotonic() < deadline:
        time.sleep(0.01)
    assert abandoned == ["connection"]  # closed by its owner, not left open
    assert stuck[0] not in {within(1, threading.get_ident) for _ in range(3)}


def test_a_forked_child_starts_its_own_threads() -> None:
    """A pre-forking server whose master refreshed before it forked."""
    within(1, lambda: None)  # a worker is idle in the parent
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the parent's worker thread does not exist here
        try:
            os.write(write, b"ok" if within(2, lambda: "ok") == "ok" else b"no")
        except BaseException:
            os.write(write, b"no")
        os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    assert os.read(read, 2) == b"ok" and status == 0
    os.close(read)
    assert deadline._idle  # the parent's own are still there
