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


def cost(argv: list[str], env: dict[str, str], ok: tuple[int, ...] = (0,)) -> Cost:
    """(CPU, wall) seconds of one command, its children included; it must end with a
    status in `ok`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode not in ok:
        raise SystemExit(f"{argv[0]} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall
