"""The progress printer: every line, in order, live within a moment, and few writes for
many lines (each write into a pipe wakes the reader)."""

from __future__ import annotations

import io
import threading
import time

import pytest

from tests.helpers import progress_lines
from upgrader.cli.progress import Printer


class Counting(io.StringIO):
    """A stdout that counts its writes."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


@pytest.fixture
def stdout() -> Counting:
    return Counting()


def step(printer: Printer, k: int, total: int) -> None:
    printer("step", {"position": k, "total": total, "revision": f"r{k}", "message": f"m{k}"})
    printer("step_done", {"position": k, "total": total, "revision": f"r{k}", "duration": 0.0})


def test_a_fast_chain_is_printed_whole_in_order_in_few_writes(stdout: Counting) -> None:
    printer = Printer(stdout)
    with printer:
        printer("run", {"run_id": 7, "steps": 300, "from": "1.0.0", "to": "2.0.0"})
        for k in range(1, 301):
            step(printer, k, 300)
    text = stdout.getvalue()
    assert text.splitlines()[0].endswith("run #7: 1.0.0 → 2.0.0, 300 revision(s)")
    assert progress_lines(text) == [x for k in range(1, 301) for x in (f"[{k}/300]", "done in")]
    assert text.count("done in 0.00s") == 300
    assert stdout.writes < 20, stdout.writes  # 601 lines


def test_a_long_steps_line_shows_while_it_runs(stdout: Counting) -> None:
    printer = Printer(stdout)
    with printer:
        step(printer, 1, 2)
        printer("step", {"position": 2, "total": 2, "revision": "r2", "message": "slow"})
        deadline = time.monotonic() + 10
        while "[2/2] r2  slow" not in stdout.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert "[2/2] r2  slow" in stdout.getvalue()  # written before the step ends
        assert "done in" in stdout.getvalue()


def test_leaving_writes_the_rest_at_once(stdout: Counting) -> None:
    printer = Printer(stdout)
    printer.FLUSH_EVERY = 600  # the writer would hold lines for ten minutes
    printer("backup", {})
    printer("backup_done", {"path": "/b/x.sql", "size": 12345})
    closing = threading.Thread(target=printer.close)
    closing.start()
    closing.join(timeout=10)
    assert not closing.is_alive(), "close() waited for the writer's interval"
    assert "backing up the database…" in stdout.getvalue()
    assert "backup verified: /b/x.sql (12,345 bytes)" in stdout.getvalue()
    printer("step_done", {"position": 3, "first": 1, "total": 3, "revision": "r3"})
    assert (
        stdout.getvalue()
        .rstrip()
        .endswith(
            "done: steps 1 to 3 were committed together (the env.py runs them in one transaction)"
        )
    )  # a line after the end is written at once


def test_a_failure_inside_the_run_still_prints_what_came_before(stdout: Counting) -> None:
    printer = Printer(stdout)
    printer.FLUSH_EVERY = 600
    with pytest.raises(RuntimeError), printer:
        step(printer, 1, 2)
        raise RuntimeError("step 2 failed")
    assert progress_lines(stdout.getvalue()) == ["[1/2]", "done in"]


class Closed(io.StringIO):
    """A pipe whose reader went away (`upgrader upgrade | head -3`)."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def test_a_reader_gone_does_not_stop_the_run() -> None:
    printer = Printer(Closed())
    with printer:
        for k in range(1, 4):
            step(printer, k, 3)
        time.sleep(2 * printer.FLUSH_EVERY)  # the writer's thread meets the broken pipe
        step(printer, 4, 4)
    assert printer.gone
    printer("step", {"position": 5, "total": 5, "revision": "r5", "message": "m5"})
