"""What every page of the console shares: the installation, who is asking, and whether
the application's own check decides. One per console application, in `app.extensions`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from flask import current_app, request, session

from upgrader.core import clients
from upgrader.core.cache import DiagnosisCache
from upgrader.core.keys import console_fingerprint
from upgrader.core.throttle import Throttle
from upgrader.http.forms import client_of
from upgrader.settings import Settings

USER = "upgrader.console.user"
"""Where the guard leaves what `authorize` said, for the console to read."""

EXTENSION = "upgrader.console"


@dataclass
class Console:
    settings: Settings
    cache: DiagnosisCache
    integrated: bool  # the application's own check decides who may use it
    key_dir: Path = field(init=False)
    throttle: Throttle = field(init=False)
    trusted: tuple[clients.Network, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.key_dir = Path(self.settings.backup_dir)
        self.throttle = Throttle(path=self.key_dir / ".admin-throttle")
        self.trusted = clients.networks(self.settings.trusted_proxies)

    def client(self) -> str:
        return client_of(self.trusted)

    def user(self) -> str | None:
        """The administrator, or None. With an integration, its verdict, every request."""
        if self.integrated:
            verdict = request.environ.get(USER)
            if not verdict:
                return None
            return verdict if isinstance(verdict, str) else "administrator"
        if session.get("authed") and session.get("key") == console_fingerprint(self.key_dir):
            return "console key holder"
        return None

    def who(self) -> str:
        return f"{self.user()} (web, {self.client()})"


def console() -> Console:
    """The console of the request being handled."""
    found: Console = current_app.extensions[EXTENSION]
    return found
