"""The web layer: the request guard around any WSGI application, and its Flask extension."""

from upgrader.web.middleware import UpgraderMiddleware

__all__ = ["UpgraderMiddleware"]
