"""Proof of server access: the upgrade key and the session key.

The upgrade key is written on first use into `install/.upgrade-key` with mode
0600: only someone who can read files on the server can read it (or run
`upgrader install-key`). It is compared in constant time, never put in a page,
a URL or a log, and wrong guesses are throttled per client address (web/throttle.py,
counted in `install/.throttle`, so a restart does not reset them).
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

KEY_FILE = ".upgrade-key"
SESSION_FILE = ".session-key"


def secret_file(directory: Path, name: str, make: bool = True) -> str | None:
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
    key = secret_file(installer_dir, KEY_FILE)
    assert key is not None
    return key


def session_key(installer_dir: Path) -> str:
    key = secret_file(installer_dir, SESSION_FILE)
    assert key is not None
    return key


def key_matches(given: str, installer_dir: Path) -> bool:
    return key_file_matches(given, installer_dir, KEY_FILE)


def key_file_matches(given: str, directory: Path, name: str) -> bool:
    """Constant-time comparison with the key in directory/name (False when there is none)."""
    expected = secret_file(directory, name, make=False)
    if not expected:
        return False
    return hmac.compare_digest(given.strip().encode(), expected.encode())


def key_fingerprint(installer_dir: Path) -> str:
    """Which key a session was opened with: a new key retires every session."""
    key = secret_file(installer_dir, KEY_FILE, make=False) or ""
    return hmac.new(b"upgrader-session", key.encode(), "sha256").hexdigest()[:16]
