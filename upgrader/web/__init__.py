"""The adapters an application embeds: the request guard around any WSGI application
(`UpgraderMiddleware`), the Flask extension (web/flask.py), and `accepting_new_work()` for
job runners (web/background.py). Each is thin over the gate (core/gate.py).

`UpgraderMiddleware` is imported on first use: `from upgrader.web import background` in a
worker process loads none of the installer's and console's Flask machinery.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from upgrader.web.middleware import UpgraderMiddleware

__all__ = ["UpgraderMiddleware"]


def __getattr__(name: str) -> Any:
    if name == "UpgraderMiddleware":
        from upgrader.web.middleware import UpgraderMiddleware  # heavy: Flask, for /install

        return UpgraderMiddleware
    raise AttributeError(f"module 'upgrader.web' has no attribute {name!r}")
