"""What every explanation shares: the words it may use (the command prefix that reaches
this application from anywhere on the server, the web installer), and what it writes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from upgrader.core.decide import Context, Finding
from upgrader.core.records import Run


@dataclass(frozen=True)
class Words:
    """What the text may name: the command prefix, and the web installer."""

    cli: str = "upgrader"
    installer_present: bool = False
    installer_dir: str | None = None

    def finish(self, command: str) -> str:
        """How to finish: the web installer while it is on the server, else the command."""
        if self.installer_present:
            return f"open /install in a browser, or run `{self.cli} {command}`"
        where = (
            f"its directory {self.installer_dir} is not there; copy the release's install/ "
            "directory there to use it"
            if self.installer_dir
            else "no installer directory is configured"
        )
        return f"run `{self.cli} {command}` on the server (the web installer is off: {where})"

    @property
    def upgrade(self) -> str:
        return self.finish("upgrade")


@dataclass(frozen=True)
class Text:
    fix: str
    details: tuple[str, ...] = ()
    summary: str | None = None  # when not the state's own


Explainer = Callable[[Finding, Context, Words], Text]


def cap(text: str) -> str:
    return text[0].upper() + text[1:]


def revisions_of(c: Context) -> str:
    return ", ".join(c.db.revisions) or "none"


def progress(run: Run | None) -> str:
    if run is None or not run.steps:
        return ""
    current = f" ({run.revision}: {run.message})" if run.revision else ""
    return f"step {run.step} of {run.steps}{current}"
