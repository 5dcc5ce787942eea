"""The shape every benchmark here shares: A and B measured in interleaved pairs (A, B, then
B, A…), so the machine's drift falls on both sides, and a median with its spread."""

from __future__ import annotations

import compileall
import resource
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
Cost = tuple[float, float]
"""CPU and wall seconds."""


def interleaved(a: Callable[[], T], b: Callable[[], T], rounds: int) -> list[tuple[T, T]]:
    """(a's result, b's result) per round, the order alternating from one round to the next."""
    pairs = []
    for i in range(rounds):
        if i % 2 == 0:
            first = a()
            pairs.append((first, b()))
        else:
            second = b()
            pairs.append((a(), second))
    return pairs


def spread(values: list[float], fmt: str = "{:.3f}") -> str:
    """The median, the interquartile range, the range and the count."""
    values = sorted(values)
    q = statistics.quantiles(values, n=4)
    return (
        f"{fmt.format(statistics.median(values))} (IQR {fmt.format(q[0])}-{fmt.format(q[2])}, "
        f"range {fmt.format(values[0])}-{fmt.format(values[-1])}, n={len(values)})"
    )


def as_installed(env: dict[str, str], *sources: Path) -> dict[str, str]:
    """Commands run as on a user's machine: `sources` byte-compiled, as pip compiles a
    wheel it installs (an editable install is not, and PYTHONDONTWRITEBYTECODE, set on
    these machines, would make every run compile upgrader again: 40 ms a command, while
    Alembic and SQLAlchemy, installed by pip, are compiled)."""
    for source in sources:
        compileall.compile_dir(str(source), quiet=1)
    return {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}


def ratios(costs: list[tuple[Cost, Cost]]) -> str:
    """B's CPU and wall time against A's, pair by pair, with their spreads."""
    return (
        f"CPU ratio {spread([b[0] / a[0] for a, b in costs])}; "
        f"wall ratio {spread([b[1] / a[1] for a, b in costs])}"
    )


def measured(work: Callable[[], object], *, own: bool = False) -> Cost:
    """CPU and wall seconds of `work()`: the CPU of the processes it ran and, with `own`,
    of this one (work done in this process, a library call)."""

    def cpu() -> float:
        used = [resource.getrusage(resource.RUSAGE_CHILDREN)]
        if own:
            used.append(resource.getrusage(resource.RUSAGE_SELF))
        return sum(u.ru_utime + u.ru_stime for u in used)

    before, started = cpu(), time.perf_counter()
    work()
    return cpu() - before, time.perf_counter() - started


def cost(argv: list[str], env: dict[str, str], ok: tuple[int, ...] = (0,)) -> Cost:
    """(CPU, wall) seconds of one command, its children included; it must end with a
    status in `ok`."""
    done: list[subprocess.CompletedProcess[str]] = []
    spent = measured(
        lambda: done.append(
            subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        )
    )
    if done[0].returncode not in ok:
        raise SystemExit(
            f"{argv[0]} failed ({done[0].returncode}):\n{done[0].stdout}\n{done[0].stderr}"
        )
    return spent
