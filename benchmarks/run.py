"""Measure flowdsl's engine overhead on the workloads of BENCHMARKS.md.

Usage:
    python benchmarks/run.py            # full sizes, 7 samples per side
    python benchmarks/run.py --quick    # small sizes, 3 samples (< ~30 s)
    python benchmarks/run.py --only W2  # rows whose name contains "W2"

Each workload is run on flowdsl and as plain Python in the same process, in
interleaved samples (engine, baseline, engine, baseline, ...); the table
reports medians, the overhead per node or item (or, for W3, the ratio to
`asyncio.gather`) and the target from BENCHMARKS.md. Building the flow is
timed separately from running it. This is a measurement, not a test: it never
fails because of a time, only if a workload computes a wrong answer.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from dataclasses import dataclass
from typing import Sequence

import sampling
import workloads

import flowdsl as fd

FULL_SAMPLES = 7
QUICK_SAMPLES = 3


@dataclass(frozen=True)
class Sizes:
    """N for each workload."""

    chain: int
    batch_cpu: int
    batch_io: int
    fan_out: int
    build: int


FULL = Sizes(chain=200, batch_cpu=10_000, batch_io=2_000, fan_out=500, build=500)
QUICK = Sizes(chain=100, batch_cpu=2_000, batch_io=500, fan_out=100, build=100)


def cases(sizes: Sizes) -> list[workloads.Case]:
    """Every row of the table, in order."""
    return [
        workloads.w1_chain(sizes.chain),
        workloads.w2_batch_cpu(sizes.batch_cpu),
        workloads.w2_batch_cpu(sizes.batch_cpu, executor="inline", label=" (inline)"),
        workloads.w3_batch_io_async(sizes.batch_io, face="arun"),
        workloads.w3_batch_io_async(sizes.batch_io, face="run"),
        workloads.w4_fan_out(sizes.fan_out),
        workloads.w4_fan_out(sizes.fan_out, executor="inline", label=" (inline)"),
        workloads.build_chain(sizes.build),
    ]


@dataclass(frozen=True)
class Row:
    """One measured workload."""

    case: workloads.Case
    build: sampling.Samples
    run: sampling.Samples | None  # None for the Build workload

    @property
    def score(self) -> float:
        """The number compared with the target (µs per unit, or a ratio)."""
        case = self.case
        if self.run is None:
            return self.build.engine_median * 1e6 / case.n
        engine = self.run.engine_median
        baseline = self.run.baseline_median
        assert baseline is not None  # every non-build case has a baseline
        if case.metric == "ratio":
            return engine / baseline
        return (engine - baseline) * 1e6 / case.n

    @property
    def spread(self) -> float:
        """Half the range of the engine's samples, relative to their median."""
        samples = self.run if self.run is not None else self.build
        times = samples.engine
        return (max(times) - min(times)) / 2 / samples.engine_median


def check(case: workloads.Case, flow: fd.Flow) -> None:
    """Refuse to time a workload whose engine and baseline answers differ."""
    if case.baseline is None:
        return
    got, want = case.run(flow), case.baseline()
    if got != want:
        raise RuntimeError(
            f"{case.name}: the flow returned {got!r:.80} but the plain-Python "
            f"baseline returned {want!r:.80}; not timing a wrong answer."
        )


def measure(case: workloads.Case, samples: int, min_time: float) -> Row:
    """Time building the case's flow, then running it against its baseline."""
    # Building is timed on its own; fewer samples suffice for the other rows.
    build_samples = samples if case.metric == "build" else min(samples, 3)
    build = sampling.interleaved(
        case.build, None, samples=build_samples, min_time=min_time
    )
    if case.metric == "build":
        return Row(case, build, None)
    flow = case.build()
    check(case, flow)
    run = sampling.interleaved(
        lambda: case.run(flow), case.baseline, samples=samples, min_time=min_time
    )
    return Row(case, build, run)


def fmt_time(seconds: float | None) -> str:
    """A duration with a readable unit."""
    if seconds is None:
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.3f} s"


def fmt_score(row: Row) -> str:
    """The overhead per unit, or the ratio."""
    case = row.case
    if case.metric == "ratio":
        return f"{row.score:.2f}x"
    return f"{row.score:.2f} µs/{case.unit}"


def fmt_target(case: workloads.Case) -> str:
    """The bar from BENCHMARKS.md."""
    if case.metric == "ratio":
        return f"<= {case.target:g}x"
    return f"<= {case.target:g} µs/{case.unit}"


def table(rows: Sequence[Row]) -> str:
    """The results as an aligned text table."""
    header = ("workload", "N", "build", "engine", "baseline", "overhead/ratio",
              "±", "target", "meets")  # fmt: skip
    lines = [header]
    for row in rows:
        case = row.case
        lines.append(
            (
                case.name,
                f"{case.n:,}",
                fmt_time(row.build.engine_median),
                fmt_time(row.run.engine_median if row.run else None),
                fmt_time(row.run.baseline_median if row.run else None),
                fmt_score(row),
                f"{row.spread:.0%}",
                fmt_target(case),
                "yes" if row.score <= case.target else "no",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    left = {0}  # the workload name is left-aligned, numbers right-aligned

    def render(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.ljust(w) if i in left else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(cells, widths))
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([render(lines[0]), rule, *map(render, lines[1:])])


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="small N and 3 samples (~30 s)"
    )
    parser.add_argument(
        "--samples", type=int, help=f"samples per side (default {FULL_SAMPLES})"
    )
    parser.add_argument(
        "--min-time",
        type=float,
        help="shortest sample in seconds; calls are repeated to reach it "
        "(default 0.05, quick 0.01)",
    )
    parser.add_argument(
        "--only", help="run only the rows whose name contains this (e.g. W2)"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = QUICK if args.quick else FULL
    samples = args.samples or (QUICK_SAMPLES if args.quick else FULL_SAMPLES)
    min_time = args.min_time or (0.01 if args.quick else 0.05)
    selected = [
        case
        for case in cases(sizes)
        if not args.only or args.only.lower() in case.name.lower()
    ]
    print(
        f"flowdsl {fd.__version__} on Python {platform.python_version()} "
        f"({platform.system()}, {os.cpu_count()} CPUs); "
        f"{'quick, ' if args.quick else ''}{samples} interleaved samples per "
        f"side, each >= {min_time * 1e3:g} ms; medians per run.",
        flush=True,
    )
    rows = []
    for case in selected:
        print(f"  measuring {case.name} (N={case.n:,}) ...", file=sys.stderr)
        rows.append(measure(case, samples, min_time))
    print()
    print(table(rows))
    print()
    print("overhead = (engine - baseline) / N; W3 ratio = engine / asyncio.gather;")
    print("Build = Flow() time / N; ± = half the range of the engine samples.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
