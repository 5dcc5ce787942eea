"""PEP 440 versions, parsed once, with the failure kept as data instead of raised.

Versions are compared as `packaging.version.Version` objects, never through
`SpecifierSet` (whose pre-release rules changed in packaging 26). A local label
(`2.0.1+deb1`) is a downstream rebuild of the same release: it is ignored when
comparing, so it never makes a database look ahead or behind.
"""

from __future__ import annotations

from dataclasses import dataclass

from packaging.version import InvalidVersion, Version


@dataclass(frozen=True)
class ParsedVersion:
    raw: str
    version: Version | None
    error: str | None = None

    @property
    def valid(self) -> bool:
        return self.version is not None

    @property
    def public(self) -> Version | None:
        return None if self.version is None else Version(self.version.public)

    def __str__(self) -> str:
        return self.raw


def parse_version(raw: str | None) -> ParsedVersion:
    text = "" if raw is None else str(raw)
    try:
        return ParsedVersion(text, Version(text))
    except InvalidVersion:
        shown = repr(text) if text else "an empty value"
        return ParsedVersion(text, None, f"{shown} is not a PEP 440 version")


def compare(a: ParsedVersion, b: ParsedVersion) -> int | None:
    """-1, 0 or 1 comparing public versions; None when either does not parse."""
    pa, pb = a.public, b.public
    if pa is None or pb is None:
        return None
    return (pa > pb) - (pa < pb)
