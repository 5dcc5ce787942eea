"""The shape every benchmark here shares: A and B measured in interleaved pairs (A, B, then
B, A…), so the machine's drift falls on both sides, and a median with its spread."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


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
