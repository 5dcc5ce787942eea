"""The progress a run prints: revision k of n, its message, the time since the start.

A chain of quick revisions makes hundreds of lines a second, and each write into a pipe or
a terminal wakes the process that reads it: on 500 trivial revisions on MariaDB, upgrader
took 7 % less wall time with its output going to a file than into a pipe read by its parent
(12 interleaved pairs, docs/architecture.md). So a thread of the printer's own writes what
gathered at most every FLUSH_EVERY seconds: a long step's line still shows within that, and
leaving `with printer` writes the rest at once. The run only queues each event with its
time; the writer thread makes the lines. A SIGKILL can cut off at most the last
FLUSH_EVERY of lines; the journal in the database has them all.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import IO, Any

import click


class Printer:
    """The `progress` of an Installation, for a command line: `with printer:` around a run."""

    FLUSH_EVERY = 0.1

    def __init__(self, file: IO[str] | None = None) -> None:
        self.file = file  # None: stdout
        self.gone = False  # the reader went away: the run goes on without its lines
        self.started = time.monotonic()
        # (time, event, data), appended by the run and taken by the writer: a deque's
        # append and popleft need no lock of ours
        self.queued: collections.deque[tuple[float, str, dict[str, Any]]] = collections.deque()
        self.waiting = True  # the writer waits to be woken for the next event
        self.closed = False
        self.changed = threading.Condition()
        self.writer: threading.Thread | None = None

    def __call__(self, event: str, data: dict[str, Any]) -> None:
        if self.closed:  # after the run (nothing reports then, but if it did)
            self._write(_text(time.monotonic() - self.started, event, data))
            return
        self.queued.append((time.monotonic(), event, data))
        if self.waiting:  # the first event since the writer last wrote: wake it
            with self.changed:
                self.waiting = False
                if self.writer is None:
                    self.writer = threading.Thread(
                        target=self._write_gathered, name="upgrader-progress", daemon=True
                    )
                    self.writer.start()
                self.changed.notify()

    def __enter__(self) -> Printer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Write what is left, now (a run's end, its failure, Ctrl-C)."""
        with self.changed:
            self.closed = True
            self.changed.notify()
        if self.writer is not None:
            self.writer.join()
        self._write(self._take())

    def _write_gathered(self) -> None:
        while True:
            with self.changed:
                self.changed.wait_for(lambda: not self.waiting or self.closed)
                if self.closed:
                    return  # close() writes the rest
                self.changed.wait_for(lambda: self.closed, self.FLUSH_EVERY)
                self.waiting = True  # an event queued from now on wakes the writer again
            self._write(self._take())

    def _take(self) -> str:
        """The lines of the events queued so far."""
        lines = []
        while self.queued:
            at, event, data = self.queued.popleft()
            lines.append(_text(at - self.started, event, data))
        return "".join(lines)

    def _write(self, text: str) -> None:
        if not text or self.gone:
            return
        try:
            # color=False: click skips its terminal check (an ioctl); no colour here anyway
            click.echo(text, self.file, nl=False, color=False)
        except (OSError, ValueError):  # a closed pipe (`| head`), a closed stream
            self.gone = True  # a display that failed must not fail the upgrade


def _text(elapsed: float, event: str, data: dict[str, Any]) -> str:
    line = _line(event, data)
    return "" if line is None else f"{elapsed:6.1f}s  {line}\n"


def _line(event: str, data: dict[str, Any]) -> str | None:
    if event == "run":
        start = data["from"] or "not recorded"
        return f"run #{data['run_id']}: {start} → {data['to']}, {data['steps']} revision(s)"
    if event == "backup":
        return "backing up the database…"
    if event == "backup_done":
        return f"backup verified: {data['path']} ({data['size']:,} bytes)"
    if event == "step":
        return f"[{data['position']}/{data['total']}] {data['revision']}  {data['message']}"
    if event == "step_done" and data.get("first", data["position"]) == data["position"]:
        return f"      done in {data['duration']:.2f}s"
    if event == "step_done":  # one transaction for several: committed together
        return (
            f"      done: steps {data['first']} to {data['position']} were committed together "
            "(the env.py runs them in one transaction)"
        )
    return None
