"""`upgrader wait`: for init containers and deploy scripts, until the code may serve.

It polls the diagnosis, changes nothing, and ends as soon as the database fits the code
(`ok`, a rollout state in which the code serves, or maintenance over one of those): exit
0. At the timeout it ends with the state's exit status, its fix and how long it waited. A
database that does not answer yet is waited for like any other state (a container often
starts before its database does).
"""

from __future__ import annotations

import logging
import time

import click

from upgrader.cli.context import CliContext, pass_cli
from upgrader.core.database import guard_engine
from upgrader.core.diagnosis import Diagnosis, diagnose
from upgrader.core.facts import load_code_facts
from upgrader.i18n import Locales
from upgrader.support.text import render_status

log = logging.getLogger("upgrader")


def _positive(ctx: click.Context, param: click.Parameter, value: float) -> float:
    if value <= 0:
        raise click.BadParameter("must be more than 0 seconds")
    return value


@click.command()
@click.option(
    "--timeout",
    type=float,
    default=300.0,
    show_default=True,
    callback=_positive,
    help="Seconds to wait before giving up.",
)
@click.option(
    "--interval",
    type=float,
    default=2.0,
    show_default=True,
    callback=_positive,
    help="Seconds between two looks at the database.",
)
@pass_cli
def wait(obj: CliContext, timeout: float, interval: float) -> int:
    """Wait until the database fits this code (exit 0), or the timeout (the state's
    exit status, with its fix). Changes nothing."""
    settings = obj.settings
    code = load_code_facts(settings)
    engine = guard_engine(settings)
    started = time.monotonic()
    seen = None
    try:
        while True:
            d = diagnose(settings, code=code, engine=engine, record=False)
            waited = time.monotonic() - started
            if d.code_fits:
                click.echo(f"ready: {d.state.value} after {waited:.0f} s")
                return 0
            if d.state is not seen:
                seen = d.state
                click.echo(f"waiting: {_said(d)} ({waited:.0f} s)", err=True)
            left = timeout - waited
            if left <= 0:
                return _gave_up(d, waited, settings.locale_dir)
            time.sleep(min(interval, left))
    finally:
        engine.dispose()


def _said(d: Diagnosis) -> str:
    run = d.run
    if run is not None and run.status == "running" and run.steps:
        return f"{d.state.value}, step {run.step} of {run.steps}"
    return d.state.value


def _gave_up(d: Diagnosis, waited: float, locale_dir: Locales) -> int:
    """The state as `status` shows it, with its fix; how long it waited."""
    click.echo(render_status(d, locale_dir))
    click.echo(f"gave up after {waited:.0f} s: the database still does not fit this code", err=True)
    log.warning("wait gave up after %.0f s in %s", waited, d.state.value)
    return d.exit_code
