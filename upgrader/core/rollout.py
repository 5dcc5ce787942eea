"""The words of a rollout over several nodes (docs/multi-node.md): revisions to apply
online, post-deploy revisions held back by nodes on older code, and old code that a
newer release declared compatible."""

from __future__ import annotations

from upgrader.core import nodes
from upgrader.core.decide import Context, Finding
from upgrader.core.records import Run
from upgrader.core.wording import Text, Words, progress


def compatible(f: Finding, c: Context, w: Words) -> Text:
    version, cli = c.code.version.raw, w.cli
    return Text(
        f"Deploy the new release on this node and restart it (it runs {version}): its code "
        f"still works here, but `{cli} upgrade --post-deploy` waits for every node to run "
        f"the new release (`{cli} nodes` lists them).",
        (
            f"revision(s) {', '.join(f.unknown)} come from a newer release, applied online; "
            f"this code ({version}, {', '.join(c.code.heads)}) is declared compatible with "
            "them",
            _phased_progress(f.phased_run),
        ),
    )


def _phased_progress(run: Run | None) -> str:
    """A live online or post-deploy run, for administrators."""
    if run is None:
        return ""
    return (
        f"run #{run.id} ({run.phase}) is applying them with the site up, started by "
        f"{run.actor or 'unknown'} on {run.host} (pid {run.pid}): {progress(run) or 'starting'}"
    )


def _later(f: Finding, version: str) -> str:
    assert f.split is not None
    rest = f.split.rest
    if not rest:
        return ""
    ids = ", ".join(r.id for r in rest)
    return f"{len(rest)} post-deploy revision(s) ({ids}) wait until every node runs {version}"


def _waiting(run: Run | None, w: Words) -> str:
    if run is None:
        return ""
    return f"Wait for run #{run.id} ({run.phase}) to finish; follow it with `{w.cli} status`."


def online(f: Finding, c: Context, w: Words) -> Text:
    assert f.split is not None and c.stored is not None
    version, online = c.code.version.raw, f.split.online
    then = f", then, once every node runs {version}, `{w.cli} upgrade --post-deploy`"
    return Text(
        _waiting(f.phased_run, w)
        or f"Run `{w.cli} upgrade --online`: it applies {len(online)} revision(s) while the "
        f"site stays up{then if f.split.rest else ''}.",
        (
            f"version {c.stored.raw} to {version}: {len(online)} revision(s) can be applied "
            f"online ({', '.join(r.id for r in online)})",
            _later(f, version),
            _phased_progress(f.phased_run),
        ),
    )


def post_deploy(f: Finding, c: Context, w: Words) -> Text:
    version, cli, seen = c.code.version.raw, w.cli, c.db.nodes
    old = nodes.older(seen or (), version)
    blocked = ""
    if seen is None:
        fix = f"Once every node runs {version}, run `{cli} upgrade --post-deploy`."
    elif old:
        names = ", ".join(n.name for n in old)
        fix = (
            f"Deploy {version} on the node(s) still on older code and restart them, or stop "
            f"them ({names}; `{cli} nodes` lists them); then run `{cli} upgrade --post-deploy`."
        )
        blocked = f"post-deploy pending, blocked by {len(old)} old node(s): {nodes.describe(old)}"
    else:
        fix = f"Run `{cli} upgrade --post-deploy`: no node runs older code any more."
    return Text(
        _waiting(f.phased_run, w) or fix,
        (_later(f, version), blocked, _phased_progress(f.phased_run)),
    )


def blocked_by(c: Context) -> tuple[str, ...]:
    """The nodes on older code that hold post-deploy revisions back, by name."""
    return tuple(n.name for n in nodes.older(c.db.nodes or (), c.code.version.raw))
