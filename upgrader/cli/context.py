"""What every command shares: settings resolved once, on first use."""

from __future__ import annotations

from functools import cached_property
from typing import Any

import click

from upgrader.settings import Settings, resolve


class CliContext:
    def __init__(self, flags: dict[str, Any], app: Any = None) -> None:
        self.flags = flags
        self.app = app  # set by `flask upgrader`: the application already loaded

    @cached_property
    def settings(self) -> Settings:
        return resolve(self.flags, app=self.app)


pass_cli = click.make_pass_decorator(CliContext)
