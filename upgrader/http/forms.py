"""What upgrader's own small Flask applications (the installer, the admin console) share:
session cookies that are Secure over https, one CSRF token per session checked on every
POST, and upgrader's security headers on every answer."""

from __future__ import annotations

import hmac
import secrets

from flask import Flask, abort, request, session
from flask.sessions import SecureCookieSessionInterface
from werkzeug.wrappers import Response

from upgrader.core import clients
from upgrader.core.gate import SECURITY_HEADERS
from upgrader.i18n import N_


class Sessions(SecureCookieSessionInterface):
    """Secure cookies whenever the request came over https (behind a trusted proxy too)."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(request.is_secure) or super().get_cookie_secure(app)


def small_app(
    import_name: str, *, secret: str, cookie: str, path: str, samesite: str, hours: int
) -> Flask:
    """One of upgrader's own Flask applications (its templates beside `import_name`): its
    session cookie HttpOnly, limited to its path, Secure over https; every answer no-store
    and never framed."""
    app = Flask(import_name)
    app.secret_key = secret
    app.session_interface = Sessions()
    app.config.update(
        SESSION_COOKIE_NAME=cookie,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE=samesite,
        SESSION_COOKIE_PATH=path,
        PERMANENT_SESSION_LIFETIME=hours * 3600,
    )
    app.after_request(no_store)
    return app


def check_csrf() -> None:
    """Refuse a POST that does not carry the session's token (a forged form from another
    site, or one from a session that has since ended), touching nothing of the session:
    a forged request must not replace the cookie of the administrator it was sent from.
    A GET gives the session its token."""
    if request.method == "POST":
        expected = session.get("csrf")
        sent = request.form.get("csrf_token", "")
        if not expected or not hmac.compare_digest(sent.encode(), str(expected).encode()):
            abort(400, N_("This form has expired. Go back, reload the page and try again."))
    elif "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(24)
    session.permanent = True


def no_store(response: Response) -> Response:
    for name, value in SECURITY_HEADERS:
        response.headers[name] = value
    response.headers["Cache-Control"] = "no-store"
    return response


def client_of(trusted: tuple[clients.Network, ...]) -> str:
    """The address of the client of the request being handled (trusted proxies honoured)."""
    environ = request.environ
    remote, forwarded = environ.get("REMOTE_ADDR", ""), environ.get("HTTP_X_FORWARDED_FOR", "")
    return clients.client_address(str(remote), str(forwarded or ""), trusted) or "unknown"
