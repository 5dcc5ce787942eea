"""What every command shares: settings resolved once, on first use."""

from __future__ import annotations

from functools import cached_property
from typing import Any

import click

from upgrader.settings import Settings, resolve


class CliContext:
    def __init__(self, flags: dict[str, Any]) -> None:
        self.flags = flags

    @cached_property
    def settings(self) -> Settings:
        return resolve(self.flags)


pass_cli = click.make_pass_decorator(CliContext)
