"""Statements compiled once and run as the driver's own SQL, for what is written once per
revision.

SQLAlchemy's `Connection.execute()` spends about 30 µs a statement on work that is the same
for every revision (a cache key, an execution context, a result). The step journal writes
two statements per revision, on SQLite inside the migration's own transaction: on a chain of
trivial revisions that was a tenth of the run (issue 21). A `Prepared` statement is compiled
once per dialect and run with `exec_driver_sql`, each value put through its type's bind
processor as `execute()` would (SQLite stores a datetime as text, for one).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Dialect
from sqlalchemy.sql import ClauseElement


@dataclasses.dataclass(frozen=True)
class Prepared:
    sql: str
    names: tuple[str, ...]  # the parameters, in the order a positional driver takes them
    processors: tuple[Callable[[Any], Any] | None, ...]
    positional: bool

    def params(self, values: Mapping[str, Any]) -> tuple[Any, ...] | dict[str, Any]:
        given = [values[name] for name in self.names]
        processed = [
            value if process is None else process(value)
            for process, value in zip(self.processors, given, strict=True)
        ]
        if self.positional:
            return tuple(processed)
        return dict(zip(self.names, processed, strict=True))

    def run(self, conn: Connection, values: Sequence[Mapping[str, Any]]) -> None:
        """One statement per set of values (the driver's executemany for several)."""
        if len(values) == 1:
            conn.exec_driver_sql(self.sql, self.params(values[0]))
        elif values:
            conn.exec_driver_sql(self.sql, [self.params(v) for v in values])


def prepare(
    statement: ClauseElement, dialect: Dialect, keys: Sequence[str] | None = None
) -> Prepared:
    """`statement` compiled for `dialect`; an INSERT takes the columns `keys` (and returns
    nothing: compiled as for executemany, PostgreSQL's implicit RETURNING is left out)."""
    compiled: Any = statement.compile(
        dialect=dialect, column_keys=list(keys) if keys else None, for_executemany=True
    )
    names = tuple(compiled.positiontup if compiled.positional else compiled.binds)
    processors = tuple(
        compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect) for name in names
    )
    return Prepared(compiled.string, names, processors, bool(compiled.positional))
