"""upgrader's own applications as a guard mounts them, whatever its protocol: the installer
while install/ exists, and the admin console. Both are small WSGI applications; the ASGI
guard runs them through a bridge (web/asgi.py)."""

from __future__ import annotations

import os

from upgrader.console.app import create_console
from upgrader.core.cache import DiagnosisCache
from upgrader.core.gate import Gate, Page, plain
from upgrader.http.pages import Pages
from upgrader.http.static import PageKeeper
from upgrader.http.wsgi import WSGIApp
from upgrader.settings import Settings
from upgrader.wizard.app import create_wizard
from upgrader.wizard.context import Home


def assemble(
    settings: Settings, cache: DiagnosisCache | None, poll_seconds: float, bypass_lifetime: float
) -> tuple[DiagnosisCache, Gate, Pages]:
    """What every guard is made of, whatever its protocol: the cached diagnosis (which
    keeps the web server's static page current), the pages and the gate."""
    cache = cache or DiagnosisCache(settings)
    cache.listeners.append(PageKeeper(settings).update)
    pages = Pages(settings, poll_seconds)
    return cache, Gate(settings, cache, pages, bypass_lifetime), pages


class Mounts:
    def __init__(
        self,
        settings: Settings,
        cache: DiagnosisCache,
        *,
        key: bytes,
        home: Home | None,
        integrated: bool,
    ) -> None:
        self.settings, self.cache = settings, cache
        self.key = key  # the console's sessions are signed with the site's key
        self.home = home  # the installer's last check: does the site answer?
        self.integrated = integrated  # the application says who may use the console
        self._made: dict[str, WSGIApp] = {}

    def installer(self) -> WSGIApp | Page:
        """The wizard, while install/ exists: checked on every such request, so deleting
        the directory switches the installer off at once, without a restart."""
        directory = self.settings.installer_dir
        if directory is None or not os.path.isdir(directory):
            return plain(
                404, "The installer is not on this server (its install/ directory was removed)."
            )
        if "installer" not in self._made:
            try:
                self._made["installer"] = create_wizard(self.settings, self.cache, self.home)
            except OSError as exc:
                return plain(
                    500,
                    "The installer cannot start: it must be able to write its keys into "
                    f"{directory} ({exc.strerror or exc}). Make that directory writable by the "
                    "web server's user, or run `upgrader upgrade` on the server instead.",
                )
        return self._made["installer"]

    def console(self) -> WSGIApp:
        """The admin console, in every state."""
        if "console" not in self._made:
            self._made["console"] = create_console(
                self.settings, self.cache, signing_key=self.key, integrated=self.integrated
            )
        return self._made["console"]
