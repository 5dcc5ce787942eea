"""The web server's own maintenance page, for when the application cannot answer.

`upgrader maintenance on --static DIR` writes DIR/maintenance.html (the same
page, self-contained) and DIR/maintenance.flag; `off` removes the flag. The
snippets below make nginx or Apache answer with that page, Retry-After and
no-store while the flag exists (letting allow-listed addresses through), and
also whenever the application behind them does not answer at all. Every guard
that knows DIR rewrites the page when the state changes, so the page the web
server falls back on shows the last known message and ETA.

Files in DIR are served under ASSETS, flag or no flag: a custom page
(UPGRADER_TEMPLATE_DIR/blocked.html) can use its own stylesheet or logo there.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path

from upgrader.core.diagnosis import Diagnosis, State
from upgrader.http.pages import Pages
from upgrader.settings import Settings

log = logging.getLogger("upgrader")

PAGE = "maintenance.html"
FLAG = "maintenance.flag"
ASSETS = "/upgrader-maintenance/"
"""The URL prefix of DIR on the web server: the page and whatever sits beside it."""


def flag_path(directory: Path) -> Path:
    return Path(directory) / FLAG


def write(directory: Path, d: Diagnosis, settings: Settings) -> Path:
    """The page and the flag: maintenance is on at the web server."""
    page = write_page(directory, d, settings)
    flag_path(directory).write_text(
        "maintenance is on: remove this file (or run "
        "`upgrader maintenance off --static DIR`) to end it\n"
    )
    return page


def write_page(directory: Path, d: Diagnosis, settings: Settings) -> Path:
    """The page alone (atomically: the web server may be serving it right now)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    html = Pages(settings, poll_seconds=15).blocked(shown(d), refresh=60)
    page = directory / PAGE
    replace_file(page, html.encode())
    return page


def replace_file(path: Path, data: bytes) -> None:
    """Write `path` whole or not at all: the web server may be serving it right now, and
    several processes may write it at once (each through a partial file of its own)."""
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_bytes(data)
    os.replace(partial, path)


def shown(d: Diagnosis) -> Diagnosis:
    """What the static page says. It is served when the application cannot answer, maybe
    long after this diagnosis: the last known maintenance message and ETA, or the last
    known mismatch, never a progress bar that will not move, never "ok"."""
    m = d.maintenance
    if m is not None and m.mode == "block" and (m.active(d.checked_at) or m.message):
        summary = m.message or State.MAINTENANCE.summary
        return replace(d, state=State.MAINTENANCE, summary=summary, run=None)
    if not d.state.meaning.static:
        return replace(d, state=State.MAINTENANCE, summary=State.MAINTENANCE.summary, run=None)
    return replace(d, run=None)


class PageKeeper:
    """Rewrites the static page when what it would say changes (the state, the message,
    the ETA): called by the guard's cache after each refresh, so costing nothing per
    request. A page that cannot be written is logged once, never raised into a request."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.directory = settings.static_dir
        self._said: tuple[object, ...] | None = None
        self._failed = False

    def update(self, d: Diagnosis) -> None:
        if self.directory is None or d.state is State.DATABASE_UNAVAILABLE:
            return  # an outage says nothing new about why the site is down
        m = d.maintenance
        said = (d.state, d.code, m.mode, m.message, m.until, m.end) if m else (d.state, d.code)
        if said == self._said:
            return
        try:
            write_page(self.directory, d, self.settings)
        except OSError as exc:
            if not self._failed:
                log.warning("cannot write the static page in %s: %s", self.directory, exc)
            self._failed = True
            return
        self._said, self._failed = said, False
        log.info("static page in %s now says: %s", self.directory, shown(d).summary)


def remove_flag(directory: Path) -> bool:
    try:
        flag_path(directory).unlink()
    except FileNotFoundError:
        return False
    return True


def nginx(directory: Path, allow: list[str], retry_after: int, status: int = 503) -> str:
    geo = (
        "\n".join(f"    {a} 1;" for a in allow)
        or "    # 203.0.113.7 1;   (addresses that get through)"
    )
    return f"""# --- upgrader: maintenance page for nginx (`upgrader webserver nginx`)
# In the http {{ }} block:
geo $upgrader_allowed {{
    default 0;
{geo}
}}

# In the server {{ }} block of the site:
set $upgrader_maintenance 0;
if (-f {directory}/{FLAG}) {{
    set $upgrader_maintenance 1;
}}
if ($upgrader_allowed) {{
    set $upgrader_maintenance 0;
}}
if ($uri ~ ^{ASSETS}) {{
    set $upgrader_maintenance 0;
}}
if ($upgrader_maintenance) {{
    return {status};
}}
error_page {status} @upgrader_maintenance;
location @upgrader_maintenance {{
    root {directory};
    rewrite ^ /{PAGE} break;
    add_header Retry-After {retry_after} always;
    add_header Cache-Control "no-store" always;
    add_header X-Upgrader-State maintenance always;
}}
location ^~ {ASSETS} {{
    alias {directory}/;
    add_header Cache-Control "no-store";
}}

# In the location that proxies to the application: the application down or failing at
# the gateway gets the same page, under the gateway's status (its own 503 pages pass):
proxy_intercept_errors on;
error_page 502 504 @upgrader_maintenance;
# --- end upgrader
"""


def apache(directory: Path, allow: list[str], retry_after: int, status: int = 503) -> str:
    allowed = "".join(f" && ! -R '{a}'" for a in allow)
    page = f"{ASSETS}{PAGE}"
    own = "" if status in (502, 503, 504) else f"ErrorDocument {status} {page}\n"
    return f"""# --- upgrader: maintenance page for Apache 2.4 (`upgrader webserver apache`)
# In the <VirtualHost> of the site, before its ProxyPass lines; needs mod_rewrite,
# mod_headers, mod_alias and mod_proxy.
ProxyPass {ASSETS} !
Alias {ASSETS} {directory}/
<Directory {directory}>
    Require all granted
    Header always set Cache-Control "no-store"
</Directory>
RewriteEngine On
RewriteCond expr "-f '{directory}/{FLAG}'{allowed}"
RewriteCond "%{{REQUEST_URI}}" "!^{ASSETS}"
RewriteRule ^ - [R={status},L]
{own}# The application down or failing at the gateway gets the same page, under the gateway's
# status (mod_proxy answers 503 when it cannot connect; the application's own 503 pages pass).
ProxyErrorOverride On 502 504
ErrorDocument 502 {page}
ErrorDocument 503 {page}
ErrorDocument 504 {page}
Header always set Retry-After "{retry_after}" "expr=-n %{{ENV:REDIRECT_STATUS}}"
Header always set Cache-Control "no-store" "expr=-n %{{ENV:REDIRECT_STATUS}}"
Header always set X-Upgrader-State "maintenance" "expr=-n %{{ENV:REDIRECT_STATUS}}"
# --- end upgrader
"""
