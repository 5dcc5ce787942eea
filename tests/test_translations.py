"""Translations: the catalogs are complete and current, the blocked page follows
Accept-Language, the command line follows the locale, and an integrator's own catalog
adds a language or changes a wording. The wizard in German is walked in Chromium
(tests/test_wizard_browser.py)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from babel.messages.mofile import read_mo, write_mo
from babel.messages.pofile import read_po
from werkzeug.test import Client

from tests.helpers import ROOT, cli_args, install, run_cli
from tests.test_guard import guard
from upgrader import i18n

LOCALE = ROOT / "upgrader" / "locale"
PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def catalog_of(path: Path) -> Any:
    with open(path, "rb") as handle:
        return read_po(handle)


def test_the_template_holds_every_message_of_the_code(tmp_path: Path) -> None:
    fresh = tmp_path / "upgrader.pot"
    pybabel = Path(sys.executable).parent / "pybabel"
    subprocess.run(
        [str(pybabel), "extract", "-F", "babel.cfg", "-k", "N_", "--no-location",
         "--omit-header", "--sort-output", "-o", str(fresh), "."],
        cwd=ROOT, check=True, capture_output=True,
    )  # fmt: skip
    committed = {m.id for m in catalog_of(LOCALE / "upgrader.pot") if m.id}
    extracted = {m.id for m in catalog_of(fresh) if m.id}
    assert extracted == committed, "run the extract command in docs/translating.md"


@pytest.mark.parametrize("language", ["de"])
def test_a_shipped_language_is_complete_and_compiled(language: str) -> None:
    messages = LOCALE / language / "LC_MESSAGES"
    catalog = catalog_of(messages / "upgrader.po")
    template = {m.id for m in catalog_of(LOCALE / "upgrader.pot") if m.id}
    translated = {m.id: m.string for m in catalog if m.id}
    assert set(translated) == template
    for message in catalog:
        if not message.id:
            continue
        assert message.string, f"not translated: {message.id!r}"
        assert "fuzzy" not in message.flags, f"fuzzy: {message.id!r}"
        assert set(PLACEHOLDER.findall(message.id)) == set(PLACEHOLDER.findall(message.string))
    with open(messages / "upgrader.mo", "rb") as handle:
        compiled = read_mo(handle)
    assert {m.id: m.string for m in compiled if m.id} == translated, "run pybabel compile"


def test_the_blocked_page_follows_accept_language(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    install(url, "1.0.0")
    client = Client(guard(url, tmp_path))
    german = client.get("/", headers={"Accept-Language": "de-CH, de;q=0.9, en;q=0.5"})
    assert german.status_code == 503
    assert "Wegen Wartungsarbeiten geschlossen (Err2)" in german.text
    assert "Diese Website wird gerade auf eine neue Version aktualisiert." in german.text
    assert '<html lang="de">' in german.text
    assert german.headers["Content-Language"] == "de"
    assert "Accept-Language" in german.headers["Vary"]
    for header in ("fr-FR, fr;q=0.9", "", "*"):
        english = client.get("/", headers={"Accept-Language": header} if header else {})
        assert "Down for Maintenance (Err2)" in english.text, header
        assert english.headers["Content-Language"] == "en"
    # API clients get the same problem+json as ever: codes, not prose, are the contract.
    api = client.get("/", headers={"Accept": "application/json", "Accept-Language": "de"})
    assert api.json["title"] == "Down for Maintenance (Err2)"


def test_the_command_line_follows_the_locale(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    install(url, "1.0.0")
    german = run_cli(*cli_args(url), "status", env={"LANG": "de_DE.UTF-8"})
    assert german.output.startswith("Wegen Wartungsarbeiten geschlossen (Err2) · upgrade_pending")
    assert "Diese Website wird gerade auf eine neue Version aktualisiert." in german.output
    assert german.exit_code == 2
    english = run_cli(*cli_args(url), "status", env={"LANG": "de_DE.UTF-8", "LC_ALL": "C"})
    assert english.output.startswith("Down for Maintenance (Err2)")


def test_an_integrator_adds_a_language_and_changes_a_wording(tmp_path: Path) -> None:
    from babel.messages.catalog import Catalog

    locales = tmp_path / "locales"
    for language, pairs in {
        "fr": {"Down for Maintenance": "Fermé pour maintenance"},
        "de": {"Down for Maintenance": "Gleich wieder da"},
    }.items():
        catalog = Catalog(locale=language, domain="upgrader")
        for english, translated in pairs.items():
            catalog.add(english, translated)
        target = locales / language / "LC_MESSAGES"
        target.mkdir(parents=True)
        with open(target / "upgrader.mo", "wb") as handle:
            write_mo(handle, catalog)
    url = f"sqlite:///{tmp_path / 'app.db'}"
    install(url, "1.0.0")
    client = Client(guard(url, tmp_path, locale_dir=str(locales)))
    french = client.get("/", headers={"Accept-Language": "fr"})
    assert "Fermé pour maintenance (Err2)" in french.text
    assert "This site is being updated" in french.text  # untranslated: English, not a gap
    german = client.get("/", headers={"Accept-Language": "de"})
    assert "Gleich wieder da (Err2)" in german.text  # their wording first
    assert "Diese Website wird gerade" in german.text  # then upgrader's catalog
    assert i18n.available(str(locales)) == ("en", "de", "fr")
