"""What every page of the installer shares: the installation it serves, read fresh, in the
visitor's language, with the site's branding. One per installer application, kept in
`app.extensions`; `installer()` gives the one of the request being handled."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flask import current_app, request

from upgrader import i18n
from upgrader.core import clients
from upgrader.core.cache import DiagnosisCache
from upgrader.core.diagnosis import Diagnosis, diagnose
from upgrader.core.throttle import Throttle
from upgrader.http.forms import client_of
from upgrader.settings import Settings

EXTENSION = "upgrader.wizard"

Home = Callable[[dict[str, Any]], str]
"""GET / of the application past the guard, as the request being handled reached it: the
status line ("200 OK"), or what went wrong. Each guard (WSGI, ASGI) calls its own."""

DEFAULT_EULA = (
    "This software is provided as is, without warranty of any kind. Back up your data "
    "before upgrading. By continuing you accept the licence of this application."
)


@dataclass
class Installer:
    settings: Settings
    cache: DiagnosisCache
    home: Home | None  # GET / of the guarded application: the done page checks it answers
    directory: Path = field(init=False)
    throttle: Throttle = field(init=False)
    trusted: tuple[clients.Network, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.directory = Path(self.settings.installer_dir or "install")
        self.throttle = Throttle(path=self.directory / ".throttle")  # survives restarts
        self.trusted = clients.networks(self.settings.trusted_proxies)

    def current(self) -> Diagnosis:
        """Fresh, not cached: wizard pages are few and must show the truth now."""
        self.cache.invalidate()
        return diagnose(self.settings, code=self.cache.code, engine=self.cache.engine)

    def client(self) -> str:
        return client_of(self.trusted)

    def language(self) -> str:
        return i18n.negotiate(request.headers.get("Accept-Language"), self.settings.locale_dir)

    def translate(self, message: str) -> str:
        """In the visitor's language (Accept-Language), for pages and their messages."""
        return i18n.gettext_for(self.language(), self.settings.locale_dir)(message)

    def branding(self) -> dict[str, str]:
        try:
            data = json.loads((self.directory / "branding.json").read_text())
        except (OSError, ValueError):
            data = {}
        return {
            "name": str(data.get("name") or default_name(self.settings)),
            "accent": str(data.get("accent") or "#2f6f5e"),
        }

    def eula(self) -> str:
        try:
            return (self.directory / "EULA.txt").read_text()
        except OSError:
            return DEFAULT_EULA


def installer() -> Installer:
    """The installer of the request being handled."""
    found: Installer = current_app.extensions[EXTENSION]
    return found


def _(message: str) -> str:
    return installer().translate(message)


def default_name(settings: Settings) -> str:
    """The application's name when branding.json gives none: its distribution, or the
    top package of its import string (`notes:create_app` → Notes)."""
    name = settings.distribution or (settings.app_ref or "").split(":")[0].split(".")[0]
    name = Path(name).stem if "/" in name else name
    return name.replace("_", " ").replace("-", " ").title() if name else "Installer"
