"""`upgrader maintenance on|off|status` and `upgrader webserver nginx|apache`."""

from __future__ import annotations

import datetime as dt
import getpass
from pathlib import Path

import click

from upgrader.cli.context import CliContext, pass_cli, require_database
from upgrader.core import clients
from upgrader.core import maintenance as mode
from upgrader.core.diagnosis import Diagnosis, State, diagnose
from upgrader.core.records import Maintenance
from upgrader.core.times import local, utcnow
from upgrader.http import maintenance as switch
from upgrader.http import static
from upgrader.settings import Settings


def when(value: str | None) -> dt.datetime | None:
    """An ISO time (UTC unless it says otherwise) or a delay such as +30m, +2h, +1d."""
    try:
        return mode.parse_when(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


def _allow(values: tuple[str, ...]) -> list[str]:
    entries = [e.strip() for v in values for e in v.split(",") if e.strip()]
    for entry in entries:
        try:
            clients.networks([entry])
        except ValueError as exc:
            raise click.BadParameter(f"{entry!r} is not an address or CIDR range") from exc
    return entries


@click.group()
def maintenance() -> None:
    """Manual maintenance mode, stored in the database so every node obeys it."""


@maintenance.command("on")
@click.option("--message", help="What visitors read.")
@click.option(
    "--until", "until", metavar="WHEN", help="Expected end (ISO or +30m): becomes Retry-After."
)
@click.option(
    "--start", metavar="WHEN", help="Start of a scheduled window (announced by a banner before)."
)
@click.option("--end", metavar="WHEN", help="End of the window: maintenance ends on its own.")
@click.option(
    "--level",
    type=click.Choice(["block", "banner"]),
    default="block",
    show_default=True,
    help="block: visitors get the page; banner: the site stays up with a notice.",
)
@click.option(
    "--allow", multiple=True, metavar="ADDR", help="Addresses or CIDR ranges that get through."
)
@click.option("--secret", metavar="SECRET", help="Bypass secret (stored hashed).")
@click.option(
    "--generate-secret", is_flag=True, help="Generate a bypass secret and print its URL once."
)
@click.option(
    "--static",
    "static_dir",
    type=click.Path(path_type=Path),
    help="Also write a static page and a flag file for the web server (webserver cmd).",
)
@pass_cli
def on(
    obj: CliContext,
    message: str | None,
    until: str | None,
    start: str | None,
    end: str | None,
    level: str,
    allow: tuple[str, ...],
    secret: str | None,
    generate_secret: bool,
    static_dir: Path | None,
) -> int:
    """Switch maintenance on (now, or for a scheduled window)."""
    settings = obj.settings
    if secret and generate_secret:
        raise click.UsageError("give --secret or --generate-secret, not both")
    secret = mode.new_secret() if generate_secret else secret
    request = mode.MaintenanceRequest(
        level=level,
        message=message,
        until=when(until),
        start=when(start),
        end=when(end),
        allow=_allow(allow),
        secret_hash=mode.hash_secret(secret) if secret else None,
    )
    try:
        written = switch.switch_on(settings, request, who(), static_dir=static_dir)
    except mode.MaintenanceError as exc:
        raise click.ClickException(str(exc)) from exc
    if written:
        click.echo(f"Static page written: {written} (the flag file beside it is on)")
    ttl = f"every node follows within {settings.cache_ttl:g}s"
    if request.start is not None and request.start > utcnow():
        end = f" until {local(request.end)}" if request.end else ""
        click.echo(
            f"Maintenance is scheduled ({level}) from {local(request.start)}{end}; until it "
            f"begins, a banner announces it. Once it begins, {ttl}."
        )
    else:
        click.echo(f"Maintenance is on ({level}); {ttl}.")
    if generate_secret and secret:
        click.echo(f"Bypass URL (shown once; keep it private): {settings.bypass_path}{secret}")
    return 0


@maintenance.command("off")
@click.option(
    "--static",
    "static_dir",
    type=click.Path(path_type=Path),
    help="The static directory whose flag file to remove.",
)
@pass_cli
def off(obj: CliContext, static_dir: Path | None) -> int:
    """Switch maintenance off (the bypass secret is kept)."""
    removed = switch.switch_off(obj.settings, who(), static_dir=static_dir)
    if removed:
        click.echo(f"Removed {removed}")
    click.echo("Maintenance is off.")
    return 0


@maintenance.command("secret")
@pass_cli
def secret_command(obj: CliContext) -> int:
    """Rotate the bypass secret and print its URL once (maintenance stays as it is)."""
    try:
        secret = switch.rotate_secret(obj.settings, who())
    except mode.MaintenanceError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"Bypass URL (shown once; keep it private): {obj.settings.bypass_path}{secret}")
    click.echo("Cookies given for the previous secret no longer let anybody through.")
    return 0


@maintenance.command("status")
@pass_cli
def status(obj: CliContext) -> int:
    """Show the maintenance settings and whether they are in force."""
    d = diagnose(obj.settings, record=False)
    require_database(d)
    click.echo(describe(d))
    return 0 if d.state is not State.MAINTENANCE else 5


def describe(d: Diagnosis) -> str:
    m = d.maintenance
    if m is None:
        return f"No maintenance settings ({d.state.value})."
    now = d.checked_at
    state = "active" if m.active(now) else "scheduled" if m.upcoming(now) else "not in force"
    lines = [f"maintenance: {m.mode} ({state})" if m.mode != "off" else "maintenance: off"]
    for label, value in (
        ("message", m.message),
        ("until", local(m.until) if m.until else None),
        ("start", local(m.start) if m.start else None),
        ("end", local(m.end) if m.end else None),
        ("set by", m.set_by),
        ("set at", local(m.set_at) if m.set_at else None),
    ):
        if value:
            lines.append(f"  {label:<8} {value}")
    for entry in m.allow:
        try:
            clients.networks([entry])
            lines.append(f"  allow    {entry}")
        except ValueError:
            lines.append(f"  allow    {entry}   (not an address: ignored)")
    lines.append(f"  bypass   {'a secret is set' if m.has_secret else 'no secret'}")
    return "\n".join(lines)


def who() -> str:
    """Who changes maintenance from a shell, for the log and `maintenance status`."""
    try:
        return f"{getpass.getuser()} (cli)"
    except Exception:
        return "cli"


@click.command()
@click.argument("server", type=click.Choice(["nginx", "apache"]))
@click.option("--static", "static_dir", type=click.Path(path_type=Path), help="Where the page is.")
@click.option(
    "--allow",
    multiple=True,
    metavar="ADDR",
    help="Addresses or CIDR ranges that get through (default: those the application lets "
    "through: UPGRADER_ALLOW_IPS and `maintenance on --allow`).",
)
@click.option(
    "--status",
    "status_code",
    type=click.IntRange(400, 599),
    help="The status of the page while the flag exists (default: UPGRADER_BLOCKED_STATUS, 503).",
)
@click.option(
    "--retry-after",
    type=click.IntRange(1),
    metavar="SECONDS",
    help="The page's Retry-After (default: the time left until the end of the maintenance "
    "set now, else UPGRADER_RETRY_AFTER).",
)
@pass_cli
def webserver(
    obj: CliContext,
    server: str,
    static_dir: Path | None,
    allow: tuple[str, ...],
    status_code: int | None,
    retry_after: int | None,
) -> int:
    """Print a configuration snippet that serves the static page while the flag exists,
    and whenever the application behind the web server does not answer.

    For when the application cannot even start: the web server answers on its own.
    """
    settings: Settings = obj.settings
    static_dir = static_dir or settings.static_dir
    if static_dir is None:
        raise click.UsageError("give --static DIR (or set UPGRADER_STATIC_DIR)")
    m = switch.current(settings)
    through = [*settings.allow_ips, *(m.allow if m is not None else ())]
    entries = _allow(allow) or list(dict.fromkeys(through))
    for entry in entries:
        if entry not in through:
            click.echo(
                f"note: {entry} gets past the web server, but the application lets only its "
                f"own allow-list through: add it there too (`{settings.cli} maintenance on "
                f"--allow {entry}`, or UPGRADER_ALLOW_IPS)",
                err=True,
            )
    seconds = retry_after or _time_left(m, utcnow()) or int(settings.retry_after)
    render = static.nginx if server == "nginx" else static.apache
    status_code = status_code or settings.blocked_status
    click.echo(render(Path(static_dir).resolve(), entries, seconds, status_code))
    return 0


def _time_left(m: Maintenance | None, now: dt.datetime) -> int | None:
    """Seconds until the end of the maintenance set now (a web server's header is fixed:
    this is the best it can say)."""
    end = (m.until or m.end) if m is not None and m.mode != "off" else None
    return max(1, int((end - now).total_seconds())) if end is not None and end > now else None
