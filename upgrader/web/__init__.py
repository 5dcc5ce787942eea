"""The web layer: the request guard around any WSGI application, and its Flask extension.

`UpgraderMiddleware` is imported on first use, so the command line (which uses the web
layer's small helpers) does not load the page templates' machinery.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from upgrader.web.middleware import UpgraderMiddleware

__all__ = ["UpgraderMiddleware"]


def __getattr__(name: str) -> Any:
    if name == "UpgraderMiddleware":
        from upgrader.web.middleware import UpgraderMiddleware

        return UpgraderMiddleware
    raise AttributeError(f"module 'upgrader.web' has no attribute {name!r}")
