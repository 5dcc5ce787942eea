"""The states of an installation, and everything that follows from each: one table.

Every other place asks a state what it means (`state.serving`, `state.refusal`…) and
never lists states of its own, so a new state is added here, once (tests/test_layers.py
holds that: no tuple or set of states outside this module).

- `code`: the family visitors see in "Down for Maintenance (ErrN)";
- `exit`: the exit status of `upgrader status` (docs/cli.md);
- `serving`: visitors get the application (maintenance lets only the allow-list through);
- `wizard`: what the install wizard may start in it ("upgrade", "install"), if anything;
- `refusal`: the exit status with which `upgrade` refuses it, or None when it may run
  (`upgrade_running` refuses unless the caller holds the upgrade lock: a dead holder);
- `quiet`: the node registry writes nothing then (an upgrade holds the database, or there
  is none, or nothing to register in);
- `settled`: nothing to upgrade (an upgrade that finds it does nothing);
- `unfinished`: an upgrade began and did not end well (the wizard's failure page);
- `needs_upgrade`: the code is ahead of the database (the public status says so);
- `page`: which paragraph the visitor's page adds to the summary;
- `static`: whether the web server's fallback page may say it as it is (else it says
  "maintenance": served when the application cannot answer, it must never say "ok");
- `readable`: upgrader's tables can be read (not so without a database, or before an
  installation): what there is to adopt, or nodes to list.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from upgrader.i18n import N_


class State(str, enum.Enum):
    OK = "ok"
    NOT_INSTALLED = "not_installed"
    UPGRADE_PENDING = "upgrade_pending"
    UPGRADE_RUNNING = "upgrade_running"
    UPGRADE_INTERRUPTED = "upgrade_interrupted"
    UPGRADE_FAILED = "upgrade_failed"
    DATABASE_AHEAD = "database_ahead"
    SCHEMA_UNKNOWN = "schema_unknown"
    DATABASE_TOO_OLD = "database_too_old"  # older than this release upgrades from (a stop)
    MAINTENANCE = "maintenance"
    DATABASE_UNAVAILABLE = "database_unavailable"
    # Serving states (core/phases.py): the site stays up, administrators see a banner.
    ONLINE_PENDING = "online_pending"  # revisions that may be applied with the site up
    POST_DEPLOY_PENDING = "post_deploy_pending"  # once no node runs older code
    COMPATIBLE_AHEAD = "compatible_ahead"  # older code, on a schema declared to fit it

    @property
    def meaning(self) -> Meaning:
        return MEANINGS[self]

    @property
    def error_code(self) -> str | None:
        """The code visitors see in "Down for Maintenance (ErrN)"."""
        return MEANINGS[self].code

    @property
    def exit_code(self) -> int:
        """The exit status of `upgrader status` (documented in docs/cli.md)."""
        return MEANINGS[self].exit

    @property
    def serving(self) -> bool:
        """Does the guard let visitors through? (MAINTENANCE lets the allow-list through.)"""
        return MEANINGS[self].serving

    @property
    def wizard(self) -> str | None:
        return MEANINGS[self].wizard

    @property
    def refusal(self) -> int | None:
        return MEANINGS[self].refusal

    @property
    def readable(self) -> bool:
        return MEANINGS[self].readable

    @property
    def quiet(self) -> bool:
        return MEANINGS[self].quiet

    @property
    def settled(self) -> bool:
        return MEANINGS[self].settled

    @property
    def unfinished(self) -> bool:
        return MEANINGS[self].unfinished

    @property
    def needs_upgrade(self) -> bool:
        return MEANINGS[self].needs_upgrade

    @property
    def summary(self) -> str:
        """One line that any visitor may read: calm, and free of internals (untranslated)."""
        return MEANINGS[self].summary

    @property
    def headline(self) -> str:
        """The headline (untranslated): "Down for Maintenance" and the code, or the name."""
        return MEANINGS[self].headline


@dataclass(frozen=True)
class Meaning:
    code: str | None
    exit: int
    summary: str
    headline: str = N_("Down for Maintenance")
    serving: bool = False
    wizard: str | None = None
    refusal: int | None = None
    quiet: bool = False
    settled: bool = False
    unfinished: bool = False
    needs_upgrade: bool = False
    page: str = ""  # running | pending | unfinished | mismatch | outage | maintenance
    static: bool = True
    readable: bool = True


UNAVAILABLE = 69  # the exit status of a command that cannot reach the database
NOT_INSTALLED = 4
MISMATCH = 3
BUSY = 75

MEANINGS: dict[State, Meaning] = {
    State.OK: Meaning(
        None,
        0,
        N_("Everything is up to date."),
        N_("Up to date"),
        serving=True,
        settled=True,
        static=False,
    ),
    State.NOT_INSTALLED: Meaning(
        None,
        4,
        N_("This site has not been installed yet."),
        N_("Not installed"),
        wizard="install",
        refusal=NOT_INSTALLED,
        quiet=True,
        static=False,
        readable=False,
    ),
    State.UPGRADE_PENDING: Meaning(
        "Err2",
        2,
        N_("This site is being updated to a new version. Please check back soon."),
        wizard="upgrade",
        needs_upgrade=True,
        page="pending",
    ),
    State.UPGRADE_RUNNING: Meaning(
        "Err2",
        2,
        N_("An update of this site is in progress. Please check back soon."),
        refusal=BUSY,
        quiet=True,
        needs_upgrade=True,
        page="running",
    ),
    State.UPGRADE_INTERRUPTED: Meaning(
        "Err2",
        2,
        N_("An update of this site was interrupted. An administrator needs to finish it."),
        wizard="upgrade",
        unfinished=True,
        needs_upgrade=True,
        page="unfinished",
    ),
    State.UPGRADE_FAILED: Meaning(
        "Err2",
        2,
        N_("An update of this site did not complete. An administrator needs to finish it."),
        wizard="upgrade",
        unfinished=True,
        needs_upgrade=True,
        page="unfinished",
    ),
    State.DATABASE_AHEAD: Meaning(
        "Err3",
        3,
        N_(
            "This site's software is older than its database. An administrator needs to "
            "deploy the matching version."
        ),
        refusal=MISMATCH,
        page="mismatch",
    ),
    State.SCHEMA_UNKNOWN: Meaning(
        "Err3",
        3,
        N_(
            "This site's database does not match its software. An administrator needs to "
            "look at it."
        ),
        refusal=MISMATCH,
        page="mismatch",
    ),
    State.DATABASE_TOO_OLD: Meaning(
        "Err3",
        3,
        N_(
            "This site's database is too old for this version of its software. An "
            "administrator needs to upgrade it in steps."
        ),
        refusal=MISMATCH,
        page="mismatch",
    ),
    State.MAINTENANCE: Meaning(
        None,
        5,
        N_("This site is down for maintenance. Please check back soon."),
        settled=True,
        page="maintenance",
        static=False,  # said as maintenance, with the administrator's message if any
    ),
    State.DATABASE_UNAVAILABLE: Meaning(
        "Err1",
        1,
        N_("This site cannot reach its database right now. Please try again in a few minutes."),
        refusal=UNAVAILABLE,
        quiet=True,
        page="outage",
        readable=False,
    ),
    State.ONLINE_PENDING: Meaning(
        None,
        6,
        N_("An update of this site can be applied while it stays online."),
        N_("Online upgrade available"),
        serving=True,
        wizard="upgrade",  # one server: the wizard applies every phase in one ordinary run
        needs_upgrade=True,
        static=False,
    ),
    State.POST_DEPLOY_PENDING: Meaning(
        None,
        7,
        N_("An update of this site will be completed once every server runs the new version."),
        N_("Post-deploy migrations pending"),
        serving=True,
        wizard="upgrade",
        needs_upgrade=True,
        static=False,
    ),
    State.COMPATIBLE_AHEAD: Meaning(
        None,
        8,
        N_("This server runs an older version of the site, which still works with its database."),
        N_("Older code on a compatible database"),
        serving=True,
        refusal=MISMATCH,
        static=False,
    ),
}
