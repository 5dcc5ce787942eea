"""`upgrader status` and `upgrader doctor`: render the diagnosis, decide nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from upgrader.cli.context import CliContext, pass_cli, require_database
from upgrader.core import nodes
from upgrader.core.diagnosis import Diagnosis, State, diagnose
from upgrader.core.facts import CodeFacts, load_code_facts
from upgrader.core.times import local
from upgrader.engine.site import Installation
from upgrader.support.bundle import default_name, write_bundle
from upgrader.support.report import doctor as doctor_report
from upgrader.support.text import render_doctor, render_status

if TYPE_CHECKING:
    from upgrader.engine.lint import LintReport  # sqlglot: imported when it is needed


@click.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object (docs/cli.md).")
@pass_cli
def status(obj: CliContext, as_json: bool) -> int:
    """Show the state of the installation; the exit status tells its family."""
    code = load_code_facts(obj.settings)
    diagnosis = diagnose(obj.settings, code=code)
    live = None if diagnosis.state is State.DATABASE_UNAVAILABLE else nodes.read(obj.settings)
    checked = online_check(obj, code, diagnosis)
    if as_json:
        data = diagnosis.to_dict()
        if live is not None:
            data["nodes"] = [n.to_dict(diagnosis.checked_at) for n in live]
            data["nodes_behind"] = nodes.summary(live, diagnosis.code_version)
        if checked is not None:
            data["online_check"] = [r.to_dict() for r in checked.revisions]
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(render_status(diagnosis, obj.settings.locale_dir))
        if live:
            said = nodes.verdict(live, diagnosis.schema_version, obj.settings.cli)
            click.echo(f"\nnodes: {len(live)} seen in the last minute: {said}")
        if checked is not None:
            _say_online(checked, obj.settings.cli)
    return diagnosis.exit_code


def online_check(obj: CliContext, code: CodeFacts, d: Diagnosis) -> LintReport | None:
    """The pending revisions declared online, read as `upgrade --online` will read them
    (docs/multi-node.md); None when there are none, or their SQL cannot be rendered."""
    online = [r for r in d.pending_revisions if r.phase == "online"]
    if not online or code.graph is None:
        return None
    from upgrader.engine.lint import LintError, lint_online  # heavy: sqlglot, when online

    site = Installation(obj.settings, code=code)
    try:
        return lint_online(site, d.database_revisions, online, None)
    except LintError:
        return None


def _say_online(report: LintReport, cli: str) -> None:
    refused = [r for r in report.revisions if r.unsafe_online]
    if not refused:
        click.echo("\nonline revisions: checked, nothing breaks the release still serving")
        return
    click.echo(f"\nonline revisions: `{cli} upgrade --online` will refuse these")
    for rev in refused:
        for f in rev.unsafe_online:
            click.echo(f"  {rev.revision}  [{f.kind}] {f.rule}: {f.statement}")
    click.echo(f"  declare them post-deploy; `{cli} lint` says why and the safe way")


@click.command("nodes")
@click.option("--json", "as_json", is_flag=True, help="As one JSON object.")
@pass_cli
def nodes_command(obj: CliContext, as_json: bool) -> int:
    """The processes that run the guard (web servers, workers) and the code each runs, as
    they last said within the last minute, against the database's release: who still runs
    old code, and what to do about it."""
    settings = obj.settings
    d = diagnose(settings, record=False)
    require_database(d)
    live = nodes.read(settings)
    if live is None:
        raise click.ClickException("the node registry cannot be read")
    now = d.checked_at
    older, newer = nodes.against(live, d.schema_version)
    said = nodes.verdict(live, d.schema_version, settings.cli, settings.node_beat)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "nodes": [n.to_dict(now) for n in live],
                    "newest": nodes.newest(live),
                    "behind": nodes.summary(live),
                    "database_version": d.schema_version,
                    "older_than_database": [n.id for n in older],
                    "newer_than_database": [n.id for n in newer],
                    "verdict": said,
                },
                indent=2,
            )
        )
        return 0
    for n in live:
        mark = (
            f"  ← older than the database ({d.schema_version})"
            if n in older
            else f"  ← newer than the database ({d.schema_version})"
            if n in newer
            else ""
        )
        click.echo(
            f"{n.host:<20} pid {n.pid:<7} {n.kind:<6} {n.code_version or '?':<10} "
            f"heads {','.join(n.heads) or '-'}  since {local(n.started_at)}, "
            f"seen {int((now - n.last_seen).total_seconds())} s ago{mark}"
        )
    click.echo(said[0].upper() + said[1:] + ".")
    return 0


@click.command()
@click.option("--json", "as_json", is_flag=True, help="The report as one JSON object.")
@click.option("--runs", default=10, show_default=True, help="How many journal entries to show.")
@click.option(
    "--bundle",
    "bundle_path",
    type=click.Path(path_type=Path, dir_okay=False),
    is_flag=False,
    flag_value="",
    default=None,
    metavar="FILE",
    help="Write everything support needs (report, journal, run logs; no secrets) to one zip.",
)
@pass_cli
def doctor(obj: CliContext, as_json: bool, runs: int, bundle_path: Path | None) -> int:
    """The report to paste into a support ticket. Read-only; holds no password."""
    diagnosis, report = doctor_report(obj.settings, runs)
    if bundle_path is not None:
        target = Path(bundle_path) if str(bundle_path) else Path(default_name())
        text = render_doctor(diagnosis, report)
        written = write_bundle(target, obj.settings, diagnosis, report, text, max(runs, 200))
        click.echo(f"Support bundle written: {written.resolve()} (no passwords, keys or secrets)")
        return diagnosis.exit_code
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(render_doctor(diagnosis, report))
    return diagnosis.exit_code
