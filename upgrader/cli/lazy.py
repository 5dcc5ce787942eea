"""Commands imported when they run: `upgrader status` loads the status command alone, not
the web server, Flask, Jinja or the sample that `serve` and `demo` need (Click's lazily
loaded subcommands)."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from types import MappingProxyType

import click

COMMANDS = {
    "status": "upgrader.cli.status:status",
    "doctor": "upgrader.cli.status:doctor",
    "nodes": "upgrader.cli.status:nodes_command",
    "wait": "upgrader.cli.wait:wait",
    "upgrade": "upgrader.cli.run:upgrade",
    "install": "upgrader.cli.run:install",
    "backup": "upgrader.cli.run:backup",
    "restore": "upgrader.cli.run:restore",
    "stamp": "upgrader.cli.run:stamp",
    "repair": "upgrader.cli.run:repair",
    "history": "upgrader.cli.journal:history",
    "unlock": "upgrader.cli.journal:unlock",
    "adopt": "upgrader.cli.adopt:adopt",
    "lint": "upgrader.cli.lint:lint",
    "maintenance": "upgrader.cli.maintenance:maintenance",
    "webserver": "upgrader.cli.maintenance:webserver",
    "deploy": "upgrader.cli.deploy:deploy",
    "install-key": "upgrader.cli.serve:install_key",
    "admin-key": "upgrader.cli.serve:admin_key",
}
"""The commands that act on one application, by name: `flask upgrader` carries these."""

STANDALONE = {
    "serve": "upgrader.cli.serve:serve",
    "demo": "upgrader.cli.demo:demo",
}
"""The console script's own besides: they start a server."""


class LazyGroup(click.Group):
    """A group whose commands (`name: "module:attribute"`) are imported when first asked for."""

    lazy: Mapping[str, str] = MappingProxyType({})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy and cmd_name not in self.commands:
            module, attribute = self.lazy[cmd_name].split(":")
            command = getattr(importlib.import_module(module), attribute)
            assert command.name == cmd_name, (command.name, cmd_name)
            self.add_command(command)
        return super().get_command(ctx, cmd_name)
