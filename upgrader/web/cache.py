"""The diagnosis, cached per process so a request costs no query in steady state.

A request reads `(diagnosis, expires_at)` without a lock. When it has expired,
one thread refreshes it (the others keep the stale value meanwhile, so a slow
or vanished database holds up at most one request per process, for at most
the connect timeout). The process that changes the state calls `invalidate()`
and sees the change at once; every other process sees it within the TTL.
"""

from __future__ import annotations

import threading
import time

from sqlalchemy import Engine

from upgrader.core.database import guard_engine
from upgrader.core.diagnosis import CodeFacts, Diagnosis, State, diagnose, load_code_facts
from upgrader.settings import Settings


class DiagnosisCache:
    def __init__(
        self, settings: Settings, code: CodeFacts | None = None, engine: Engine | None = None
    ) -> None:
        self.settings = settings
        self.ttl = settings.cache_ttl
        self._code = code
        self._engine = engine
        self._value: Diagnosis | None = None
        self._expires = 0.0
        # (expires, open): written in one assignment, so a reader never sees half of it.
        # `open` says the site is simply up: state ok, no maintenance, no installer left.
        self.fast: tuple[float, bool] = (0.0, False)
        self._refreshing = threading.Lock()

    def get(self) -> Diagnosis:
        value = self._value
        if value is not None and time.monotonic() < self._expires:
            return value
        if self._refreshing.acquire(blocking=value is None):
            try:
                if self._value is None or time.monotonic() >= self._expires:
                    value = diagnose(self.settings, code=self.code, engine=self.engine)
                    expires = time.monotonic() + self.ttl
                    self._value, self._expires = value, expires
                    self.fast = (expires, _open(value))
            finally:
                self._refreshing.release()
        assert self._value is not None
        return self._value

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


def _open(d: Diagnosis) -> bool:
    m = d.maintenance
    return d.state is State.OK and (m is None or m.mode == "off") and not d.installer_present
