"""Wrong guesses, counted per client: a few free, then a wait that doubles (at most 1 h).

Used for the installer's upgrade key and the bypass secret. With a file, the counts
survive a restart of the process (an attacker cannot reset them by crashing it) and
are shared by the processes of one server; stale entries are pruned.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

MAX_CLIENTS = 10_000


class Throttle:
    def __init__(self, free: int = 5, base: float = 30.0, path: Path | None = None) -> None:
        self.free, self.base, self.path = free, base, path
        self._failures: dict[str, tuple[int, float]] = {}  # client -> (count, until: epoch)
        self._lock = threading.Lock()

    def wait(self, client: str) -> float:
        """Seconds this client must wait before trying again (0: it may try)."""
        with self._lock:
            self._load()
            _, until = self._failures.get(client, (0, 0.0))
        return max(0.0, until - time.time())

    def failed(self, client: str) -> int:
        """Count a wrong guess; returns how many this client has made in a row."""
        with self._lock:
            self._load()
            count, _ = self._failures.get(client, (0, 0.0))
            count += 1
            delay = 0.0 if count < self.free else min(3600.0, self.base * 2 ** (count - self.free))
            self._failures[client] = (count, time.time() + delay)
            self._save()
        return count

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._load()
            if self._failures.pop(client, None) is not None:
                self._save()

    def _load(self) -> None:
        if self.path is None:
            return
        try:
            data = json.loads(self.path.read_text())
            self._failures = {str(k): (int(v[0]), float(v[1])) for k, v in data.items()}
        except (OSError, ValueError, TypeError, IndexError, AttributeError):
            self._failures = {}

    def _save(self) -> None:
        now = time.time()
        # Forget clients whose wait ended an hour ago; keep the file small whatever happens.
        kept = {k: v for k, v in self._failures.items() if v[1] > now - 3600}
        if len(kept) > MAX_CLIENTS:
            kept = dict(sorted(kept.items(), key=lambda kv: kv[1][1])[-MAX_CLIENTS:])
        self._failures = kept
        if self.path is None:
            return
        temporary = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                json.dump({k: list(v) for k, v in kept.items()}, handle)
            os.replace(temporary, self.path)
        except OSError:
            pass  # an unwritable directory: the count lives in this process only
