"""Proof of server access: the upgrade key, the session key, and throttling wrong guesses.

The upgrade key is written on first use into `install/.upgrade-key` with mode
0600: only someone who can read files on the server can read it (or run
`upgrader install-key`). It is compared in constant time, never put in a page,
a URL or a log, and wrong guesses are throttled per client address.
"""

from __future__ import annotations

import hmac
import os
import secrets
import threading
import time
from pathlib import Path

KEY_FILE = ".upgrade-key"
SESSION_FILE = ".session-key"


def _secret_file(directory: Path, name: str, make: bool = True) -> str | None:
    path = Path(directory) / name
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        if not make:
            return None
    value = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    return value


def upgrade_key(installer_dir: Path) -> str:
    """The key, created on first use. Raises OSError when install/ is not writable."""
    key = _secret_file(installer_dir, KEY_FILE)
    assert key is not None
    return key


def session_key(installer_dir: Path) -> str:
    key = _secret_file(installer_dir, SESSION_FILE)
    assert key is not None
    return key


def key_matches(given: str, installer_dir: Path) -> bool:
    expected = _secret_file(installer_dir, KEY_FILE, make=False)
    if not expected:
        return False
    return hmac.compare_digest(given.strip().encode(), expected.encode())


class Throttle:
    """Five wrong keys, then a wait that doubles with each further wrong key (max 1 h)."""

    def __init__(self, free: int = 5, base: float = 30.0) -> None:
        self.free, self.base = free, base
        self._failures: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()

    def wait(self, client: str) -> float:
        """Seconds this client must wait before trying again (0: it may try)."""
        with self._lock:
            _, until = self._failures.get(client, (0, 0.0))
        return max(0.0, until - time.monotonic())

    def failed(self, client: str) -> None:
        with self._lock:
            count, _ = self._failures.get(client, (0, 0.0))
            count += 1
            delay = 0.0 if count < self.free else min(3600.0, self.base * 2 ** (count - self.free))
            self._failures[client] = (count, time.monotonic() + delay)

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._failures.pop(client, None)
