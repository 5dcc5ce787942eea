"""The web server's own maintenance page, for when the application cannot even start.

`upgrader maintenance on --static DIR` writes DIR/maintenance.html (the same
page, self-contained) and DIR/maintenance.flag; `off` removes the flag. The
snippets below make nginx or Apache answer 503 with that page, Retry-After and
no-store while the flag exists, letting allow-listed addresses through.
"""

from __future__ import annotations

import os
from pathlib import Path

from upgrader.core.diagnosis import SUMMARIES, Diagnosis, State
from upgrader.settings import Settings

PAGE = "maintenance.html"
FLAG = "maintenance.flag"


def flag_path(directory: Path) -> Path:
    return Path(directory) / FLAG


def write(directory: Path, d: Diagnosis, settings: Settings) -> Path:
    from dataclasses import replace

    from upgrader.web.middleware import Pages

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    m = d.maintenance
    shown = replace(
        d,
        state=State.MAINTENANCE,
        summary=(m.message if m and m.message else SUMMARIES[State.MAINTENANCE]),
    )
    html = Pages(settings.template_dir).blocked(
        shown, settings=settings, poll_seconds=15, refresh=60
    )
    page = directory / PAGE
    partial = page.with_suffix(".partial")
    partial.write_text(html)
    os.replace(partial, page)
    flag_path(directory).write_text(
        "maintenance is on: remove this file (or run "
        "`upgrader maintenance off --static DIR`) to end it\n"
    )
    return page


def remove_flag(directory: Path) -> bool:
    try:
        flag_path(directory).unlink()
    except FileNotFoundError:
        return False
    return True


def nginx(directory: Path, allow: list[str], retry_after: int) -> str:
    geo = (
        "\n".join(f"    {a} 1;" for a in allow)
        or "    # 203.0.113.7 1;   (addresses that get through)"
    )
    return f"""# --- upgrader: maintenance fallback for nginx (`upgrader webserver nginx`)
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
if ($upgrader_maintenance) {{
    return 503;
}}
error_page 503 @upgrader_maintenance;
location @upgrader_maintenance {{
    root {directory};
    rewrite ^ /{PAGE} break;
    add_header Retry-After {retry_after} always;
    add_header Cache-Control "no-store" always;
    add_header X-Upgrader-State maintenance always;
}}
# --- end upgrader
"""


def apache(directory: Path, allow: list[str], retry_after: int) -> str:
    conditions = "\n".join(f'RewriteCond "%{{REMOTE_ADDR}}" "!-ipmatch {a}"' for a in allow)
    return f"""# --- upgrader: maintenance fallback for Apache 2.4 (`upgrader webserver apache`)
# In the <VirtualHost> of the site; needs mod_rewrite and mod_headers.
RewriteEngine On
RewriteCond "{directory}/{FLAG}" -f
{conditions}
RewriteCond "%{{REQUEST_URI}}" "!=/{PAGE}"
RewriteRule ^ - [R=503,L]
ErrorDocument 503 /{PAGE}
Alias /{PAGE} {directory}/{PAGE}
<Location /{PAGE}>
    Require all granted
</Location>
Header always set Retry-After "{retry_after}" "expr=%{{REQUEST_STATUS}} == 503"
Header always set Cache-Control "no-store" "expr=%{{REQUEST_STATUS}} == 503"
# --- end upgrader
"""
