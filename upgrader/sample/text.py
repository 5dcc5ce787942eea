"""Pure text rules shared by the 2.0.0 data migration and the application.

They live here, not in the migration, so the tests can check the migrated rows
against the same rules.
"""

from __future__ import annotations


def sort_name(name: str) -> str:
    """'Ursula K. Le Guin' -> 'Le Guin, Ursula K.'; a single word stays as it is."""
    particles = {"le", "de", "van", "von", "du", "da", "di"}
    words = name.split()
    if len(words) < 2:
        return name.strip()
    cut = len(words) - 1
    while cut > 1 and words[cut - 1].lower() in particles:
        cut -= 1
    return f"{' '.join(words[cut:])}, {' '.join(words[:cut])}"


def isbn13(isbn: str | None) -> str | None:
    """Normalise an ISBN-10 or ISBN-13, hyphenated or not, to 13 digits.

    Anything that is not a valid ISBN is returned unchanged: a data migration
    must not destroy what it does not understand.
    """
    if isbn is None:
        return None
    digits = isbn.replace("-", "").replace(" ", "").upper()
    if len(digits) == 13 and digits.isdigit():
        return digits
    if (
        len(digits) != 10
        or not digits[:9].isdigit()
        or not (digits[9].isdigit() or digits[9] == "X")
    ):
        return isbn
    core = "978" + digits[:9]
    total = sum(int(c) * (1 if i % 2 == 0 else 3) for i, c in enumerate(core))
    return core + str((10 - total % 10) % 10)
