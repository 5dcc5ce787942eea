"""The console script's entry (`upgrader`, `python -m upgrader`): it loads the command
line with Python's cyclic garbage collector paused.

Loading SQLAlchemy, Alembic and upgrader allocates some 300,000 objects that live as long
as the process; each full collection the allocations trigger walks all of them again,
about 30 ms of a cold command (seen with `-X importtime`, and by the benchmarks in
benchmarks/cold_start.py). So the collector is off while the modules load, what they
built is then frozen (`gc.freeze()`: left out of every later collection, since it is
never garbage), and the collector is back on before the command runs. A library that
embeds upgrader never goes through here.
"""

from __future__ import annotations

import gc
import importlib
import sys


def main() -> None:
    gc.disable()
    try:
        from upgrader.cli import main as command_line  # heavy: loaded with the collector off

        _preload(sys.argv[1:], command_line.LAZY)
    finally:
        gc.freeze()
        gc.enable()
    command_line.main()


def _preload(args: list[str], lazy: dict[str, str]) -> None:
    """The module of the command named in `args` (Click would load it a moment later)."""
    for arg in args:
        if arg in lazy:
            importlib.import_module(lazy[arg].split(":")[0])
            return
