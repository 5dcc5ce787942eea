"""Translations: the visitor's blocked page and the installer follow the browser's
Accept-Language; the command line's headline and summary follow the locale (LANGUAGE,
LC_ALL, LC_MESSAGES, LANG).

gettext catalogs live in upgrader/locale/<language>/LC_MESSAGES/upgrader.po (and .mo),
made with Babel from upgrader/locale/upgrader.pot (docs/translating.md). An integrator's
own catalogs (UPGRADER_LOCALE_DIR, the same layout) come first, so a language can be added
or a wording changed without touching upgrader. Text an administrator wrote (a maintenance
message) and technical detail (fixes, commands, errors) stay as they are.
"""

from __future__ import annotations

import functools
import gettext
import os
from collections.abc import Callable
from pathlib import Path

DOMAIN = "upgrader"
LOCALES = Path(__file__).parent / "locale"
DEFAULT = "en"

Translate = Callable[[str], str]
Locales = str | Path | None
"""The integrator's catalog directory (settings.locale_dir), as a path or a string."""


def N_(message: str) -> str:
    """Marks a message for extraction where it is defined; it is translated where shown."""
    return message


@functools.lru_cache(maxsize=64)
def translations(language: str, extra: Locales = None) -> gettext.NullTranslations:
    """The catalog for `language`: the integrator's first, then upgrader's, then English."""
    ours = gettext.translation(DOMAIN, LOCALES, [language], fallback=True)
    if not extra:
        return ours
    theirs = gettext.translation(DOMAIN, extra, [language], fallback=True)
    theirs.add_fallback(ours)
    return theirs


@functools.lru_cache(maxsize=8)
def available(extra: Locales = None) -> tuple[str, ...]:
    """English first (what "*" or nothing gets), then every language with a catalog (ours
    or the integrator's)."""
    found: set[str] = set()
    for root in (LOCALES, Path(extra) if extra else None):
        if root is not None and root.is_dir():
            found.update(
                p.name.replace("_", "-") for p in root.iterdir() if (p / "LC_MESSAGES").is_dir()
            )
    return (DEFAULT, *sorted(found - {DEFAULT}))


@functools.lru_cache(maxsize=512)
def negotiate(accept_language: str | None, extra: Locales = None) -> str:
    """The best language for an Accept-Language header ("de-CH, de;q=0.8, en;q=0.5"): the
    most wanted one we have, a region falling back to its language. Whatever the header
    holds, an answer (English when nothing fits)."""
    have = available(extra)
    by_lower = {code.lower(): code for code in have}
    wanted = []
    for position, item in enumerate((accept_language or "").split(",")):
        tag, _, params = item.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                quality = _quality(value)
        if tag.strip() and quality > 0:
            wanted.append((-quality, position, tag.strip().lower().replace("_", "-")))
    for _quality_rank, _position, tag in sorted(wanted):
        if tag == "*":
            return DEFAULT
        for candidate in (tag, tag.split("-")[0]):
            if candidate in by_lower:
                return by_lower[candidate]
    return DEFAULT


def _quality(value: str) -> float:
    try:
        quality = float(value.strip())
    except ValueError:
        return 0.0
    return quality if 0.0 <= quality <= 1.0 else 0.0


def from_environment(extra: Locales = None) -> str:
    """The language of the locale the command runs in, as gettext reads it."""
    for variable in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG"):
        value = os.environ.get(variable, "")
        code = value.split(":")[0].split(".")[0].split("@")[0]
        if code and code not in ("C", "POSIX"):
            return negotiate(code.replace("_", "-"), extra)
        if code:
            return DEFAULT
    return DEFAULT


def gettext_for(language: str, extra: Locales = None) -> Translate:
    return translations(language.replace("-", "_"), extra).gettext
