"""The key files of a server: proof of access for the installer and the console, and the
key that signs bypass cookies.

Each key is written on first use into a file of mode 0600, so only someone who can read
files on the server (or run `upgrader install-key` / `admin-key`) has it. Keys are
compared in constant time and never put in a page, a URL or a log; wrong guesses are
throttled per client (core/throttle.py). A new key file retires every session opened
with the old one (the sessions carry a fingerprint of it).

- the installer's upgrade key and session key, in its directory (`install/`);
- the console's key, in the backup directory;
- the site key, in the backup directory, unless configured (UPGRADER_SECRET_KEY).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from pathlib import Path

log = logging.getLogger("upgrader")

UPGRADE_KEY = ".upgrade-key"
SESSION_KEY = ".session-key"
CONSOLE_KEY = ".admin-key"
SITE_KEY = ".upgrader-key"


def secret_file(directory: Path, name: str, make: bool = True) -> str | None:
    """The secret in directory/name, made on first use (`make`) with mode 0600."""
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


def key_file_matches(given: str, directory: Path, name: str) -> bool:
    """Constant-time comparison with the key in directory/name (False when there is none)."""
    expected = secret_file(directory, name, make=False)
    if not expected:
        return False
    return hmac.compare_digest(given.strip().encode(), expected.encode())


def fingerprint(directory: Path, name: str, purpose: bytes) -> str:
    """Which key a session was opened with: a new key retires every session."""
    key = secret_file(directory, name, make=False) or ""
    return hmac.new(purpose, key.encode(), hashlib.sha256).hexdigest()[:16]


# ---------------------------------------------------------------- the installer


def upgrade_key(installer_dir: Path) -> str:
    """The installer's key, created on first use. OSError when install/ is not writable."""
    key = secret_file(installer_dir, UPGRADE_KEY)
    assert key is not None
    return key


def session_key(installer_dir: Path) -> str:
    key = secret_file(installer_dir, SESSION_KEY)
    assert key is not None
    return key


def key_matches(given: str, installer_dir: Path) -> bool:
    return key_file_matches(given, installer_dir, UPGRADE_KEY)


def key_fingerprint(installer_dir: Path) -> str:
    return fingerprint(installer_dir, UPGRADE_KEY, b"upgrader-session")


# ------------------------------------------------------------------ the console


def console_key(directory: Path) -> str:
    """The console key, made on first use in the (0700) backup directory."""
    Path(directory).mkdir(mode=0o700, parents=True, exist_ok=True)
    key = secret_file(Path(directory), CONSOLE_KEY)
    assert key is not None
    return key


def console_fingerprint(directory: Path) -> str:
    return fingerprint(directory, CONSOLE_KEY, b"upgrader-console")


# ------------------------------------------------------------------ the site key


def site_key(secret: str | None, directory: Path) -> bytes:
    """The key that signs bypass cookies: from the configured secret (UPGRADER_SECRET_KEY,
    or Flask's SECRET_KEY; the same on every node), else from a 0600 file made on first
    use in a 0700 directory (one node). Never derived from anything in the database."""
    if secret:
        return hashlib.sha256(b"upgrader-site-key:" + secret.encode()).digest()
    path = directory / SITE_KEY
    try:
        return bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError):
        pass
    key = os.urandom(32)
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(key.hex() + "\n")
    except FileExistsError:
        return bytes.fromhex(path.read_text().strip())  # another process made it first
    except OSError:
        log.warning(
            "cannot write %s: bypass cookies are valid in this process only; set "
            "UPGRADER_SECRET_KEY",
            path,
        )
    return key
