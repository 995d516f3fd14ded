"""A quantity measured once per repeat: the median the benchmarks print, and the spread behind it.

On a shared host the same ratio moves by more than the distance to some aims from one repeat to
the next, so an aim's verdict (benchmarks/aims.py) says in how many repeats it held as well as
whether the median meets it.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Repeats:
    values: tuple[float, ...]  # one per repeat, in the order they ran

    def __post_init__(self) -> None:
        if not self.values:
            raise ValueError("Repeats needs at least one value")

    @classmethod
    def of(cls, values: Iterable[float]) -> Repeats:
        return cls(tuple(float(value) for value in values))

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def spread(self, fmt: str = ".2f", scale: float = 1.0) -> str:
        """'low to high' over the repeats (the one value when there is one)."""
        low, high = min(self.values) * scale, max(self.values) * scale
        return f"{low:{fmt}}" if len(self.values) == 1 else f"{low:{fmt}} to {high:{fmt}}"

    def scaled(self, factor: float) -> Repeats:
        """Every value times `factor` (the same measurement against another reference)."""
        return Repeats.of(value * factor for value in self.values)

    def holding(self, holds: Callable[[float], bool]) -> int:
        """How many repeats satisfy `holds`."""
        return sum(1 for value in self.values if holds(value))
