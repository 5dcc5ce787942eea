"""The heartbeat of a run on a server database: its lease renewed, its progress written."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable

from sqlalchemy import Engine

from upgrader.core.journal import update_run
from upgrader.core.tables import Tables
from upgrader.core.times import utcnow


class Heartbeat:
    """Renews the run's lease while long steps run, so others see it alive, and writes
    the run's progress (`tick`, set by the migration's hooks) at most every TICK seconds.

    Not on SQLite: a write from another connection while a migration holds the
    database's write lock fails that migration ("database is locked"). There the
    OS lock file tells liveness instead (core/lockfile.py), and no lease is written
    during a run at all."""

    TICK = 0.5

    def __init__(self, engine: Engine, tables: Tables, run_id: int, lease_seconds: float) -> None:
        self._engine, self._tables, self._run_id = engine, tables, run_id
        self._lease = lease_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="upgrader-heartbeat", daemon=True)
        self.tick: Callable[[], None] | None = None
        self.failures = 0

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        renew_every = max(self.TICK, self._lease / 3)
        renewed = time.monotonic()
        while not self._stop.wait(self.TICK):
            try:
                if self.tick is not None:
                    self.tick()
                if time.monotonic() - renewed >= renew_every:
                    now = utcnow()
                    update_run(
                        self._engine,
                        self._tables,
                        self._run_id,
                        heartbeat_at=now,
                        lease_expires_at=now + dt.timedelta(seconds=self._lease),
                    )
                    renewed = time.monotonic()
            except Exception:
                # The database may be briefly away; if it stays away the lease
                # expires and others see the run as interrupted, which is true.
                self.failures += 1
