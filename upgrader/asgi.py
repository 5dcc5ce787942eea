"""The request guard for ASGI applications (FastAPI, Starlette, Litestar): docs/embedding.md.

    from upgrader.asgi import UpgraderMiddleware
    app.add_middleware(UpgraderMiddleware, settings=resolve({...}))

Needs the `asgi` extra (pip install "upgrader[asgi]").
"""

from upgrader.web.asgi import ASGIApp, Authorize, UpgraderMiddleware, banner_html

__all__ = ["ASGIApp", "Authorize", "UpgraderMiddleware", "banner_html"]
