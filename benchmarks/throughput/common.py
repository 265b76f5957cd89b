"""Shared helpers for throughput rows."""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil


@dataclass
class Side:
    """One side of a row, measured: the median rate and what each repetition did.

    ``units`` is the work of one repetition (steps, resets, ...), the same in every repetition;
    ``cpu_share`` is the median of (CPU seconds of this process and its children) / wall seconds
    over the repetitions: on a loaded machine a side that got less of a core looks slower.
    """

    rate: float
    units: int
    repeats: int
    cpu_share: float
    rates: list[float] = field(default_factory=list)
    #: Median units per CPU second (of this process and its children): what the work costs, whatever share
    #: of a core the side got on a shared machine.
    cpu_rate: float | None = None


@dataclass
class Row:
    """One line of the throughput table: ours against native, same work.

    ``ours_side`` / ``native_side`` say how many units each repetition did and how much of a core
    each side got; ``load`` is the 1/5/15-minute load average when the row started; ``leaves_out``
    says what the timed work does not include.
    """

    family: str
    setting: str
    ours: float
    native: float | None
    unit: str = "steps/s"
    note: str = ""
    ours_side: Side | None = None
    native_side: Side | None = None
    load: tuple[float, float, float] | None = None
    leaves_out: str = ""

    @property
    def ratio(self) -> float | None:
        return None if not self.native else self.ours / self.native

    @property
    def cpu_ratio(self) -> float | None:
        """Ours / native in units per CPU second (both sides' processes and their children)."""
        ours, native = self.ours_side, self.native_side
        if ours is None or native is None or not ours.cpu_rate or not native.cpu_rate:
            return None
        return ours.cpu_rate / native.cpu_rate

    def as_dict(self) -> dict:
        return {**asdict(self), "ratio": self.ratio, "cpu_ratio": self.cpu_ratio}

    @classmethod
    def compared(cls, family: str, setting: str, pair: tuple[Side, Side | None], unit: str = "steps/s",
                 note: str = "", leaves_out: str = "", load: tuple[float, float, float] | None = None) -> Row:
        """A row from :func:`head_to_head`'s (or :func:`measured`'s) sides; the load is read now unless given."""
        ours, native = pair
        if native is not None and ours.units != native.units:
            raise RuntimeError(f"{family} / {setting}: the sides did different work ({ours.units} vs {native.units})")
        return cls(family, setting, ours.rate, native.rate if native else None, unit, note, ours, native,
                   load if load is not None else load_average(), leaves_out)


def load_average() -> tuple[float, float, float]:
    """The 1, 5 and 15-minute load averages (what else the machine was doing)."""
    one, five, fifteen = os.getloadavg()
    return round(one, 2), round(five, 2), round(fifteen, 2)


def cpu_seconds(process: psutil.Process) -> float:
    """CPU seconds of ``process`` (this one) and of its living descendants (browsers, JVMs, interpreters).

    This process's own time comes from ``time.process_time`` (nanoseconds); the descendants' from
    psutil, in clock ticks (10 ms), which only matters for the rows whose work is in another process.
    """
    total = time.process_time()
    for proc in process.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


def _timed(work: Callable[[], int | tuple[int, float]], process: psutil.Process) -> tuple[int, float, float]:
    """(units, wall seconds, CPU seconds) of one call of ``work``.

    ``work`` returns its units, or ``(units, seconds)`` where ``seconds`` are waits inside it that it timed itself
    and that are not part of the work (left out of the wall time; their little CPU time stays in).
    """
    cpu = cpu_seconds(process)
    start = time.perf_counter()
    done = work()
    wall = time.perf_counter() - start
    units, waited = done if isinstance(done, tuple) else (done, 0.0)
    return units, wall - waited, cpu_seconds(process) - cpu


def side_from_runs(runs: list[tuple[int, float, float]]) -> Side:
    """A :class:`Side` from (units, wall seconds, CPU seconds) of each measured repetition."""
    units = {u for u, _, _ in runs}
    if len(units) != 1:
        raise RuntimeError(f"the repetitions of one side did different amounts of work: {sorted(units)}")
    rates = [u / wall for u, wall, _ in runs]
    cpu_rates = [u / cpu for u, _, cpu in runs if cpu > 0]
    return Side(statistics.median(rates), units.pop(), len(runs),
                statistics.median(cpu / wall for _, wall, cpu in runs), rates,
                statistics.median(cpu_rates) if cpu_rates else None)


def head_to_head(ours: Callable[[], int | tuple[int, float]], native: Callable[[], int | tuple[int, float]],
                 repeats: int = 3, warmup: int = 1,
                 prepare: tuple[Callable[[], object], Callable[[], object]] | None = None) -> tuple[Side, Side]:
    """Both sides of a row: ``warmup`` unmeasured calls each, then ``repeats`` measured calls each, interleaved.

    Each callable does one repetition of the work and returns how many units it did (or ``(units, seconds)``,
    ``seconds`` of waits inside it that are not the work, which it timed itself); the order alternates
    (ours first, then native first, ...) so that drifts in machine load hit both sides alike.  Raises if the
    two sides did different amounts of work.  ``prepare`` (ours, native) runs untimed before each call of
    that side, its CPU time left out too (e.g. resetting a pool of environments, so that a row times steps
    alone); returned ``seconds`` suit idle waits between a repetition's steps, whose CPU time is negligible.

    Example:
        >>> ours, native = head_to_head(lambda: 10, lambda: 10)
        >>> ours.units == native.units == 10 and ours.repeats == 3
        True
    """
    if repeats < 3:
        raise ValueError(f"a row needs at least 3 measured repetitions per side, got {repeats}")
    process = psutil.Process()
    prepare_ours, prepare_native = prepare or (_nothing, _nothing)
    before = {"ours": prepare_ours, "native": prepare_native}
    for _ in range(warmup):
        before["ours"]()
        ours()
        before["native"]()
        native()
    runs: dict[str, list[tuple[int, float, float]]] = {"ours": [], "native": []}
    for i in range(repeats):
        order = (("ours", ours), ("native", native)) if i % 2 == 0 else (("native", native), ("ours", ours))
        for name, work in order:
            before[name]()
            runs[name].append(_timed(work, process))
    a, b = side_from_runs(runs["ours"]), side_from_runs(runs["native"])
    if a.units != b.units:
        raise RuntimeError(f"the two sides did different work: ours {a.units} units, native {b.units}")
    return a, b


def _nothing() -> None:
    return None


def measured(work: Callable[[], int], repeats: int = 3, warmup: int = 1) -> tuple[Side, None]:
    """One side without a native counterpart, measured like :func:`head_to_head` measures each side."""
    if repeats < 3:
        raise ValueError(f"a row needs at least 3 measured repetitions, got {repeats}")
    process = psutil.Process()
    for _ in range(warmup):
        work()
    return side_from_runs([_timed(work, process) for _ in range(repeats)]), None


def rate(work: Callable[[], int], repeats: int = 3) -> float:
    """Median rate (units per second) of ``work``, which returns how many units it did."""
    return measured(work, repeats, warmup=0)[0].rate


def interleaved(ours: Callable[[], int], native: Callable[[], int], repeats: int = 5) -> tuple[float, float]:
    """Median rates of two workloads run alternately after a warm-up (see :func:`head_to_head`)."""
    a, b = head_to_head(ours, native, max(repeats, 3))
    return a.rate, b.rate


@contextlib.contextmanager
def benchmark_cache() -> Iterator[Path]:
    """The cache a benchmark row uses: ``$AGENTGYM_CACHE`` if set (kept), else a temporary one, removed after.

    Example:
        >>> with benchmark_cache() as cache:  # doctest: +SKIP
        ...     rows = measure()
    """
    existing = os.environ.get("AGENTGYM_CACHE")
    if existing:
        yield Path(existing)
        return
    scratch = tempfile.mkdtemp(prefix="agc-bench-")
    os.environ["AGENTGYM_CACHE"] = scratch
    try:
        yield Path(scratch)
    finally:
        os.environ.pop("AGENTGYM_CACHE", None)
        shutil.rmtree(scratch, ignore_errors=True)
