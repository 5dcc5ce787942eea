"""Which Alembic revision each release of the sample application ends at.

This is the one place that says so. A release that adds no migration ends at the
same revision as the release before it (2.0.1 below): upgrader records such a
release on its own, with no wizard and no downtime.
"""

from __future__ import annotations

RELEASES: dict[str, str] = {
    "1.0.0": "0001_initial",  # authors and books
    "1.1.0": "0002_loans_isbn",  # a new table (loans) and a new column (books.isbn)
    "2.0.0": "0003_sort_names",  # a data migration rewriting rows, plus two indexes
    "2.0.1": "0003_sort_names",  # code only: no migration
}

CURRENT = "2.0.1"
"""The release this code is. upgrader compares it with the version in the database."""

OLDEST = "1.0.0"
