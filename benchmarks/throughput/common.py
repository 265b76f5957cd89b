"""Shared helpers for throughput rows."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass


@dataclass
class Row:
    """One line of the throughput table: ours against native, same work."""

    family: str
    setting: str
    ours: float
    native: float | None
    unit: str = "steps/s"
    note: str = ""

    @property
    def ratio(self) -> float | None:
        return None if not self.native else self.ours / self.native

    def as_dict(self) -> dict:
        return {**asdict(self), "ratio": self.ratio}


def rate(work: Callable[[], int], repeats: int = 3) -> float:
    """Median rate (units per second) of ``work``, which returns how many units it did."""
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        units = work()
        rates.append(units / (time.perf_counter() - start))
    return statistics.median(rates)


def interleaved(ours: Callable[[], int], native: Callable[[], int], repeats: int = 5) -> tuple[float, float]:
    """Median rates of two workloads run alternately, so drift in machine load hits both."""
    a, b = [], []
    for _ in range(repeats):
        a.append(rate(ours, 1))
        b.append(rate(native, 1))
    return statistics.median(a), statistics.median(b)
