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
from upgrader.core.diagnosis import CodeFacts, Diagnosis, diagnose, load_code_facts
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
        self._refreshing = threading.Lock()

    def get(self) -> Diagnosis:
        value = self._value
        if value is not None and time.monotonic() < self._expires:
            return value
        if self._refreshing.acquire(blocking=value is None):
            try:
                if self._value is None or time.monotonic() >= self._expires:
                    self._value = diagnose(self.settings, code=self.code, engine=self.engine)
                    self._expires = time.monotonic() + self.ttl
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
            self._engine = guard_engine(self.settings.database_url, self.settings.connect_timeout)
        return self._engine

    def invalidate(self) -> None:
        self._expires = 0.0

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
