"""The diagnosis, cached per process so a request costs no query in steady state.

A request reads `(diagnosis, expires_at)` without a lock. When it has expired,
one thread refreshes it (the others keep the stale value meanwhile, so a slow
or vanished database holds up at most one request per process, for at most
the connect timeout). The process that changes the state calls `invalidate()`
and sees the change at once; every other process sees it within the TTL.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable

from sqlalchemy import Engine

from upgrader.core.database import guard_engine
from upgrader.core.diagnosis import (
    CodeFacts,
    Diagnosis,
    State,
    diagnose,
    load_code_facts,
    provisional,
)
from upgrader.core.nodes import Registration
from upgrader.core.tables import define_tables
from upgrader.settings import Settings

log = logging.getLogger("upgrader")

SLOW = 1.0
"""Seconds a request waits for a refresh under way before it gets a provisional Err1."""


class DiagnosisCache:
    def __init__(
        self, settings: Settings, code: CodeFacts | None = None, engine: Engine | None = None
    ) -> None:
        self.settings = settings
        self.ttl = settings.cache_ttl
        self._code = code
        self._engine = engine
        self._value: Diagnosis | None = None
        self._provisional: Diagnosis | None = None  # what requests get while none comes
        self._expires = 0.0
        # (expires, open): written in one assignment, so a reader never sees half of it.
        # `open` says the site is simply up: state ok, no maintenance, no installer left.
        self.fast: tuple[float, bool] = (0.0, False)
        self._refreshing = threading.Lock()
        self._refresh_started = 0.0
        self._refreshed_at = float("-inf")
        # told of every fresh diagnosis (the web layer's static page keeper)
        self.listeners: list[Callable[[Diagnosis], None]] = []
        # "worker" until this process answers a request (the guard then says "web")
        self.registration = Registration(
            define_tables(settings.table_prefix), kind="worker", beat=settings.node_beat
        )

    def get(self) -> Diagnosis:
        """The cached diagnosis; past its TTL one thread refreshes it (bounded by the
        connect timeout: diagnose() gives Err1 when the server does not answer in time).

        Meanwhile other requests do not queue behind that refresh: they get the previous
        answer, or, when there is none yet (a process started during an outage) or the
        refresh is taking longer than SLOW, a provisional Err1. A stale "ok" would send
        every worker thread into the application, to hang on its own connection."""
        value = self._value
        if value is not None and time.monotonic() < self._expires:
            return value
        # With an answer to give meanwhile, do not wait for another thread's refresh; with
        # none (a process just started), wait a little for it.
        if self._refreshing.acquire(timeout=SLOW if value is None else 0):
            try:
                if self._value is None or time.monotonic() >= self._expires:
                    self._refresh()
            finally:
                self._refreshing.release()
            assert self._value is not None
            return self._value
        return self.meanwhile()

    # What an adapter that must not wait (ASGI, on its event loop) reads: never any I/O.

    @property
    def answered(self) -> bool:
        """Whether there is any diagnosis yet, fresh or not."""
        return self._value is not None

    def current(self) -> Diagnosis | None:
        """The diagnosis while it is fresh, else None (time to refresh, in a thread)."""
        value = self._value
        return value if value is not None and time.monotonic() < self._expires else None

    def meanwhile(self) -> Diagnosis:
        """What a request gets while a refresh is under way: the previous answer; a
        provisional Err1 when there is none yet, or the refresh takes longer than SLOW."""
        value = self._value
        started = self._refresh_started
        if value is None or (started and time.monotonic() - started > SLOW):
            return self._stand_in()
        return value

    def _stand_in(self) -> Diagnosis:
        """The provisional Err1, made once while no answer comes: during an outage every
        request gets it, and its page is rendered once too."""
        if self._provisional is None:
            why = "the database has not answered yet; checking"
            self._provisional = provisional(self.settings, why)
        return self._provisional

    def since(self, began: float) -> Diagnosis | None:
        """A diagnosis made after `began` (time.monotonic()), if there is one."""
        value = self._value
        return value if value is not None and self._refreshed_at >= began else None

    def recheck(self, since: float) -> Diagnosis:
        """A diagnosis made after `since` (a `time.monotonic()`): the application has just
        failed a request that began then, and whether the database has gone away decides
        what the visitor gets.

        Single flight: one thread refreshes and the others wait for its answer (bounded by
        the connect timeout); a diagnosis made after their own request began is answer
        enough for them too."""
        made = self.since(since)
        if made is not None:
            return made
        if not self._refreshing.acquire(timeout=self.settings.connect_timeout + 1):
            return self._stand_in()
        try:
            if self._value is None or self._refreshed_at < since:
                self._refresh()
        finally:
            self._refreshing.release()
        assert self._value is not None
        return self._value

    def _refresh(self) -> None:
        """Diagnose now (the caller holds the refresh lock), and pass the news on: the log,
        the static page, the node registry, the fast path."""
        started = self._refresh_started = time.monotonic()
        try:
            fresh = diagnose(self.settings, code=self.code, engine=self.engine)
        finally:
            self._refresh_started = 0.0
        expires = time.monotonic() + self.ttl
        _log_change(self._value, fresh)
        for listener in self.listeners:
            listener(fresh)
        # quiet: nothing to register in, or an upgrade holds the database; and on SQLite a
        # live --online or --post-deploy run holds its write lock
        busy = fresh.state.quiet or (
            fresh.run is not None
            and fresh.run.status == "running"
            and self.engine.url.get_backend_name() == "sqlite"
        )
        self.registration.beat(self.engine, fresh.code_version, fresh.code_heads, busy=busy)
        self._value, self._expires, self._provisional = fresh, expires, None
        self._refreshed_at = started  # what it says was read after this moment
        self.fast = (expires, _open(fresh))

    @property
    def code(self) -> CodeFacts:
        if self._code is None:  # read once, when first needed: it imports the revision files
            self._code = load_code_facts(self.settings)
        return self._code

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = guard_engine(self.settings)
        return self._engine

    def invalidate(self) -> None:
        self._expires = 0.0
        self.fast = (0.0, False)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()


def _log_change(before: Diagnosis | None, now: Diagnosis) -> None:
    """One line per change of state this process sees (not per refresh)."""
    if before is not None and before.state is now.state:
        return
    was = f" (was {before.state.value})" if before is not None else ""
    level = logging.INFO if now.state.settled else logging.WARNING
    where = f" on {socket.gethostname()} pid {os.getpid()}, code {now.code_version}"
    log.log(
        level,
        "site state: %s%s%s%s",
        now.state.value,
        f" {now.code}" if now.code else "",
        was,
        where,
    )


def _open(d: Diagnosis) -> bool:
    m = d.maintenance
    return d.state is State.OK and (m is None or m.mode == "off") and not d.installer_present
