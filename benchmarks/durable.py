"""Measure checkpointed W2: items per second with a SqliteStore, and the cost.

Usage:
    python benchmarks/durable.py            # N=10,000, 5 samples per row
    python benchmarks/durable.py --quick    # N=2,000, 3 samples

W2 of BENCHMARKS.md (scatter `list(range(N))` to a doubling worker, gather,
sum) runs in interleaved samples: without a store (the in-memory baseline),
then with `store=SqliteStore(...)` under several commit policies:

- default: every result committed as soon as possible (group commit: what
  finished during one commit goes into the next), each one durable within a
  commit;
- `commit_every=N` / `(rows, seconds)`: fewer commits, more work repeated
  after a crash;
- `synchronous="NORMAL"`: WAL without an fsync per commit (a power cut, not a
  process crash, may lose the last commits).

Each row reports items per second, the ratio of its time to the in-memory
run's, how many commits the run made, and the most rows a crash could lose
(the largest commit group: the work a crash could repeat beyond the items in
flight). A fresh database file is used for every run. This is a measurement,
not a test.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import workloads

import flowdsl as fd
from flowdsl.store import SqliteStore

TARGET = 20_000  # items per second, from BENCHMARKS.md


@dataclass(frozen=True)
class Policy:
    """One row: an executor, a store setting and a commit policy."""

    label: str
    executor: Any
    store: bool = True
    commit_every: Any = None
    synchronous: str = "FULL"


POLICIES = [
    Policy("in memory (no store)", None, store=False),
    Policy("default group commit", None),
    Policy("commit_every=100", None, commit_every=100),
    Policy("commit_every=(1000, 0.1)", None, commit_every=(1000, 0.1)),
    Policy("default, synchronous=NORMAL", None, synchronous="NORMAL"),
    Policy("inline, in memory (no store)", "inline", store=False),
    Policy("inline, default group commit", "inline"),
    Policy("inline, commit_every=(1000, 0.1)", "inline", commit_every=(1000, 0.1)),
]


class CountingStore(SqliteStore):
    """A SqliteStore that counts its commits and their sizes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.groups: list[int] = []

    def commit(
        self,
        run_id: str,
        owner: str,
        now: float,
        outcomes: Any = (),
        *args: Any,
        **kwargs: Any,
    ) -> None:
        self.groups.append(len(outcomes))
        super().commit(run_id, owner, now, outcomes, *args, **kwargs)


@dataclass
class Result:
    """The samples of one row."""

    policy: Policy
    seconds: list[float]
    commits: int = 0
    largest_group: int = 0


def run_once(
    flow: fd.Flow, n: int, policy: Policy, folder: Path
) -> tuple[float, int, int]:
    """One run; returns (seconds, commits, largest commit group)."""
    store = None
    if policy.store:
        path = Path(tempfile.mkstemp(suffix=".db", dir=folder)[1])
        path.unlink()
        store = CountingStore(path, synchronous=policy.synchronous)
    start = time.perf_counter()
    result = flow.run(
        {"n": n}, executor=policy.executor, store=store,
        commit_every=policy.commit_every,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    if result["total"] != n * (n - 1):
        raise RuntimeError(f"{policy.label}: wrong total {result['total']}")
    if store is None:
        return seconds, 0, 0
    store.close()
    return seconds, len(store.groups), max(store.groups)


def measure(n: int, samples: int, policies: Sequence[Policy]) -> list[Result]:
    case = workloads.w2_batch_cpu(n)
    flow = case.build()
    results = [Result(p, []) for p in policies]
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        for policy in policies:  # warm up: imports, pools, SQLite
            run_once(flow, min(n, 500), policy, folder)
        for sample in range(samples):
            print(f"sample {sample + 1}/{samples}", file=sys.stderr)
            for result in results:  # interleaved: a slow phase hits every row
                seconds, commits, largest = run_once(flow, n, result.policy, folder)
                result.seconds.append(seconds)
                result.commits, result.largest_group = commits, largest
    return results


def table(n: int, results: Sequence[Result]) -> str:
    baselines = {
        r.policy.executor: statistics.median(r.seconds)
        for r in results
        if not r.policy.store
    }
    header = ("W2 N=" + f"{n:,}", "median", "items/s", "x in memory", "commits",
              "largest group", f">= {TARGET:,}/s")  # fmt: skip
    lines = [header]
    for r in results:
        median = statistics.median(r.seconds)
        rate = n / median
        base = baselines.get(r.policy.executor)
        lines.append(
            (
                r.policy.label,
                f"{median * 1e3:.1f} ms",
                f"{rate:,.0f}",
                "-" if base is None else f"{median / base:.2f}",
                f"{r.commits:,}" if r.policy.store else "-",
                f"{r.largest_group:,}" if r.policy.store else "-",
                ("yes" if rate >= TARGET else "no") if r.policy.store else "-",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]

    def render(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths))
        )

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([render(lines[0]), rule, *map(render, lines[1:])])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="N=2,000, 3 samples")
    parser.add_argument("--samples", type=int, help="samples per row (default 5)")
    parser.add_argument("--n", type=int, help="items (default 10,000)")
    args = parser.parse_args(argv)
    n = args.n or (2_000 if args.quick else 10_000)
    samples = args.samples or (3 if args.quick else 5)
    results = measure(n, samples, POLICIES)
    print(table(n, results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
