"""`upgrader lint`: what each revision does to the release still serving, before it runs.

Exit statuses for a project's CI: 0 clean (every finding acknowledged), 1 findings (or a
revision that could not be checked), 64 usage.
"""

from __future__ import annotations

import json

import click

from upgrader.cli.context import CliContext, pass_cli, require_database
from upgrader.engine.lint import LintError, LintReport, RevisionLint, lint_revisions
from upgrader.engine.site import Installation


@click.command("lint")
@click.argument("revisions", nargs=-1)
@click.option("--all", "whole", is_flag=True, help="The whole chain, not the pending revisions.")
@click.option(
    "--dialect",
    type=click.Choice(["postgresql", "mysql", "mariadb", "sqlite"]),
    help="Render the SQL for this database (default: the application's).",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_cli
def lint(
    obj: CliContext, revisions: tuple[str, ...], whole: bool, dialect: str | None, as_json: bool
) -> int:
    """Classify what the pending revisions (or REVISIONS, or --all) do: expand, contract,
    locking or data; each finding with why it matters and the safe way."""
    site = Installation(obj.settings)
    graph = site.code.graph
    if graph is None:
        raise click.UsageError("the migrations cannot be read: run `upgrader doctor`")
    order = sorted(graph.revisions.values(), key=lambda r: (r.position, r.id))
    if revisions:
        unknown = [r for r in revisions if r not in graph.revisions]
        if unknown:
            raise click.UsageError(f"unknown revision(s): {', '.join(unknown)}")
        wanted = [r.id for r in order if r.id in revisions]
    elif whole:
        wanted = [r.id for r in order]
    else:
        d = site.diagnose()
        require_database(d)
        wanted = [r.id for r in d.pending_revisions]
    try:
        report = lint_revisions(site.settings, graph, wanted, dialect, site.app())
    except LintError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        render(report)
    return 0 if report.clean else 1


def render(report: LintReport) -> None:
    checked = "sqlglot and squawk" if report.squawk else "sqlglot"
    click.echo(f"{len(report.revisions)} revision(s), {report.dialect} ({checked})")
    for rev in report.revisions:
        _revision(rev)
    if not report.revisions:
        click.echo("Nothing to lint: no revision is pending.")
    elif report.clean:
        click.secho("Clean: nothing breaks the release still serving.", fg="green")


def _revision(rev: RevisionLint) -> None:
    phase = f"declared {rev.declared}, suggested {rev.suggested}"
    click.echo(f"\n{rev.revision}  {rev.message}  ({phase})")
    if rev.not_checked:
        click.secho(f"  {rev.not_checked}", fg="yellow")
    for f in rev.findings:
        mark = "acknowledged" if f.acknowledged else f.kind
        click.secho(f"  [{mark}] {f.rule}: {f.statement}", fg=None if f.acknowledged else "red")
        click.echo(f"      why: {f.why}")
        click.echo(f"      safe way: {f.safe}")
        if f.acknowledged:
            click.echo(f"      acknowledged: {f.acknowledged}")
