"""Timing helpers: calibrated loops and interleaved engine/baseline samples.

A *sample* is the mean time of one call, measured over enough back-to-back
calls that the sample lasts at least `min_time` seconds (the loop count is
calibrated once, like `timeit.Timer.autorange`). Engine and baseline samples
alternate (engine, baseline, engine, baseline, ...) so that a slow phase of
the shared machine hits both sides alike; the table reports medians.
"""

from __future__ import annotations

import gc
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable

Thunk = Callable[[], Any]

#: Never calibrate beyond this many calls per sample.
MAX_LOOPS = 100_000


@dataclass
class Samples:
    """Seconds per call, one value per sample, for the engine and the baseline."""

    engine: list[float]
    baseline: list[float] | None
    engine_loops: int
    baseline_loops: int

    @property
    def engine_median(self) -> float:
        """The engine's median seconds per call."""
        return statistics.median(self.engine)

    @property
    def baseline_median(self) -> float | None:
        """The baseline's median seconds per call (None when there is none)."""
        return statistics.median(self.baseline) if self.baseline else None


def time_loops(fn: Thunk, loops: int) -> float:
    """Seconds per call of `fn`, averaged over `loops` back-to-back calls.

    A full collection runs first (untimed) so that garbage left by the other
    side of the comparison is not charged to this one; the collector stays
    enabled while timing, as it is in real runs.
    """
    gc.collect()
    start = time.perf_counter()
    for _ in range(loops):
        fn()
    return (time.perf_counter() - start) / loops


def calibrate(fn: Thunk, min_time: float) -> int:
    """The number of calls per sample that makes a sample last `min_time`."""
    loops = 1
    while loops < MAX_LOOPS:
        if time_loops(fn, loops) * loops >= min_time:
            break
        loops *= 2
    return loops


def interleaved(
    engine: Thunk,
    baseline: Thunk | None,
    *,
    samples: int,
    min_time: float,
) -> Samples:
    """Time `engine` and `baseline` in alternating samples.

    Both are called at least once before timing (calibration doubles as a
    warm-up), so imports, caches and lazily created pools are not measured.

    Args:
        engine: Runs the workload on flowdsl once.
        baseline: Runs the same work in plain Python once, or None.
        samples: Samples per side.
        min_time: The shortest a sample may last, in seconds.
    """
    engine_loops = calibrate(engine, min_time)
    baseline_loops = calibrate(baseline, min_time) if baseline is not None else 0
    engine_times: list[float] = []
    baseline_times: list[float] = []
    for _ in range(samples):
        engine_times.append(time_loops(engine, engine_loops))
        if baseline is not None:
            baseline_times.append(time_loops(baseline, baseline_loops))
    return Samples(
        engine=engine_times,
        baseline=baseline_times if baseline is not None else None,
        engine_loops=engine_loops,
        baseline_loops=baseline_loops,
    )
