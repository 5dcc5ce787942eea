"""The guard's pages, from templates: the visitor's page (from the integrator's template
directory first, then ours), the administrator's, and the banner as an HTML snippet.
The gate decides which; this only renders (it is the gate's `Renderer`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, PackageLoader, select_autoescape
from markupsafe import escape

from upgrader import i18n
from upgrader.core.diagnosis import Diagnosis
from upgrader.core.gate import CONTINUE
from upgrader.core.notices import iso_z, utc_text
from upgrader.settings import Settings


class Pages:
    def __init__(self, settings: Settings, poll_seconds: float = 5.0) -> None:
        loaders: list[Any] = [PackageLoader("upgrader.http", "templates")]
        if settings.template_dir:
            loaders.insert(0, FileSystemLoader(str(settings.template_dir)))
        self.env = Environment(loader=ChoiceLoader(loaders), autoescape=select_autoescape())
        self.settings = settings
        self.poll_seconds = poll_seconds

    def warm(self) -> None:
        """Compile the templates now (tens of milliseconds, once): an ASGI guard does it in
        a worker thread, so its event loop never does."""
        for name in ("blocked.html", "admin.html"):
            self.env.get_template(name)

    def admin(self, d: Diagnosis, *, installer: str | None, error: str | None) -> str:
        """What an administrator sees while the database does not fit the code."""
        return self.env.get_template("admin.html").render(
            d=d, installer=installer, error=error, go_on=f"?{CONTINUE}"
        )

    def blocked(self, d: Diagnosis, *, refresh: int, language: str = i18n.DEFAULT) -> str:
        m = d.maintenance
        run = d.run
        back = (m.until or m.end) if m is not None and m.active(d.checked_at) else None
        _ = i18n.gettext_for(language, self.settings.locale_dir)
        return self.env.get_template("blocked.html").render(
            _=_,
            lang=language,
            headline=d.headline_in(_),
            summary=d.summary_in(_),
            state=d.state.value,
            page=d.state.meaning.page,
            code=d.code,
            step=run.step if run else 0,
            steps=run.steps if run else 0,
            until=iso_z(back) if back else None,
            until_text=utc_text(back) if back else "",
            status_url=self.settings.status_path,
            poll_seconds=self.poll_seconds,
            refresh=refresh,
        )


def banner_html(environ: Mapping[str, Any]) -> str:
    """The banner as a self-contained HTML snippet, for templates of any framework (from a
    WSGI environ or an ASGI scope)."""
    banner = environ.get("upgrader.banner")
    if not banner:
        return ""
    colour = "#fff3cd" if banner["level"] == "maintenance" else "#fde2e1"
    return (
        f'<div role="status" class="upgrader-banner" style="background:{colour};color:#222;'
        'padding:.6rem 1rem;font:15px/1.4 system-ui,sans-serif;border-bottom:1px solid #d9c98f">'
        f"{escape(banner['text'])}</div>"
    )


def insert_banner(data: bytes, banner: str) -> bytes:
    """After `<body …>` of a whole page; a fragment (HTMX, a health check) has none."""
    at = data.find(b"<body")
    if at == -1:
        return data
    end = data.find(b">", at)
    if end == -1:
        return data
    return data[: end + 1] + banner.encode() + data[end + 1 :]
