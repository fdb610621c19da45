"""The workloads of BENCHMARKS.md, each as a flow and a plain-Python baseline.

Every builder returns a `Case`: how to construct the flow (timed on its own,
as "build"), how to run it once, and how to do the same work without
flowdsl. Both `run` and `baseline` return the workload's final value, which
`run.py` compares once before timing so that a benchmark never measures a
wrong answer.

Node definitions (decorating functions) happen when the case is created and
are not timed: they correspond to import time in a real program. Only
`fd.Flow(...)` (inference, validation, plan and blueprint) counts as build.
"""

from __future__ import annotations

import asyncio
import inspect
from dataclasses import dataclass
from typing import Any, Callable

import flowdsl as fd

#: What `Flow.run(executor=...)` is given; None means the default (threads).
Executor = Any


@dataclass(frozen=True)
class Case:
    """One workload, ready to measure.

    Attributes:
        name: The row's label, e.g. "W2 batch-cpu (inline)".
        n: Work units (nodes or items) the overhead is divided by.
        unit: What a work unit is: "node" or "item".
        metric: "overhead" (µs per unit above the baseline), "ratio" (engine
            time / baseline time) or "build" (µs per node, no baseline).
        target: The bar from BENCHMARKS.md, in the metric's unit.
        build: Constructs the flow (the timed part of building).
        run: Runs a built flow once and returns the final value.
        baseline: Does the same work in plain Python and returns the same
            value; None for "build".
    """

    name: str
    n: int
    unit: str
    metric: str
    target: float
    build: Callable[[], fd.Flow]
    run: Callable[[fd.Flow], Any]
    baseline: Callable[[], Any] | None


# -- W1 chain ------------------------------------------------------------------


def first(x: int) -> int:
    """The chain's head: reads the flow input `x`."""
    return x + 1


def _chain_step(previous: str) -> Callable[[int], int]:
    """A fresh function whose one parameter is wired to node `previous`."""

    def step(value: int = fd.From(previous)) -> int:
        return value + 1

    return step


def chain_functions(n: int) -> list[Callable[[int], int]]:
    """The `n` plain functions of a chain: `first`, then n-1 steps."""
    return [first] + [_chain_step(f"n{i - 1}") for i in range(1, n)]


def chain_nodes(functions: list[Callable[[int], int]]) -> list[Any]:
    """Nodes n0..n{n-1}; node i reads node i-1 through `fd.From`."""
    return [fd.node(id=f"n{i}")(fn) for i, fn in enumerate(functions)]


def w1_chain(
    n: int = 200, *, executor: Executor = None, label: str = " (default)"
) -> Case:
    """W1: `n` trivial sync nodes in a line, each adding 1 to its input."""
    functions = chain_functions(n)
    nodes = chain_nodes(functions)
    last = f"n{n - 1}"

    def run(flow: fd.Flow) -> Any:
        return flow.run(inputs={"x": 0}, executor=executor)[last]

    def baseline() -> int:
        value = 0
        for fn in functions:
            value = fn(value)
        return value

    return Case(
        name="W1 chain" + label,
        n=n,
        unit="node",
        metric="overhead",
        target=3.0,
        build=lambda: fd.Flow("w1-chain", nodes),
        run=run,
        baseline=baseline,
    )


# -- W2 batch-cpu --------------------------------------------------------------


def start(n: int) -> list[int]:
    """The batch's input: `list(range(n))`, with `n` a flow input."""
    return list(range(n))


def double(item: int) -> int:
    """The W2 worker."""
    return item * 2


def total(doubled: list[int]) -> int:
    """Sums the gathered batch (reads the batch's output key `doubled`)."""
    return sum(doubled)


def w2_batch_cpu(
    n: int = 10_000, *, executor: Executor = None, label: str = " (default)"
) -> Case:
    """W2: scatter `list(range(n))` to a sync doubling worker, gather, sum."""
    nodes = [
        fd.node(start),
        fd.batch(input="start", output="doubled")(double),
        fd.node(total),
    ]

    def run(flow: fd.Flow) -> Any:
        return flow.run(inputs={"n": n}, executor=executor)["total"]

    def baseline() -> int:
        return sum(double(x) for x in range(n))

    return Case(
        name="W2 batch-cpu" + label,
        n=n,
        unit="item",
        metric="overhead",
        target=2.0 if executor == "inline" else 10.0,
        build=lambda: fd.Flow("w2-batch-cpu", nodes),
        run=run,
        baseline=baseline,
    )


# -- W3 batch-io-async ---------------------------------------------------------


async def double_later(item: int) -> int:
    """The W3 worker: 10 ms of simulated I/O, then double."""
    await asyncio.sleep(0.01)
    return item * 2


async def _gather(n: int) -> list[int]:
    return list(await asyncio.gather(*(double_later(i) for i in range(n))))


def w3_batch_io_async(n: int = 2_000, *, face: str = "arun") -> Case:
    """W3: an async batch of `n` sleeping items, no concurrency limit.

    `face="arun"` times `asyncio.run(flow.arun())`, which pays for a fresh
    event loop exactly like the baseline `asyncio.run(gather(...))`;
    `face="run"` times the sync face `flow.run()` (async work then runs on a
    private loop in a portal thread).
    """
    nodes = [
        fd.node(start),
        fd.batch(input="start", output="doubled")(double_later),
    ]

    if face == "arun":

        def run(flow: fd.Flow) -> Any:
            return asyncio.run(flow.arun(inputs={"n": n}))["doubled"]

    else:

        def run(flow: fd.Flow) -> Any:
            return flow.run(inputs={"n": n})["doubled"]

    return Case(
        name=f"W3 batch-io-async ({face})",
        n=n,
        unit="item",
        metric="ratio",
        target=1.25,
        build=lambda: fd.Flow("w3-batch-io-async", nodes),
        run=run,
        baseline=lambda: asyncio.run(_gather(n)),
    )


# -- W4 fan-out ----------------------------------------------------------------


def source() -> int:
    """The fan-out's source."""
    return 1


def _branch(k: int) -> Callable[[int], int]:
    """A fresh function reading `source` (an inferred edge, by name)."""

    def branch(source: int) -> int:
        return source + k

    return branch


def _sink(names: list[str]) -> Callable[..., int]:
    """A sink with one keyword parameter per name, built without `exec`.

    flowdsl rejects `**kwargs` parameters, so the function is written with
    `**values` but advertises an explicit signature through `__signature__`,
    which `inspect.signature` (and hence flowdsl) honours. Each parameter is
    named after a branch node's id, so its edge is inferred; the engine then
    calls `sink(n0=..., n1=..., ...)`, which `**values` accepts.
    """

    def sink(**values: int) -> int:
        return sum(values.values())

    sink.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY) for name in names]
    )
    return sink


def w4_fan_out(
    n: int = 500, *, executor: Executor = None, label: str = " (default)"
) -> Case:
    """W4: one source, `n` independent sync nodes reading it, one sink of all."""
    names = [f"n{i}" for i in range(n)]
    branches = [_branch(i) for i in range(n)]
    sink = _sink(names)
    nodes = [
        fd.node(source),
        *(fd.node(id=name)(fn) for name, fn in zip(names, branches)),
        fd.node(id="sink")(sink),
    ]
    pairs = list(zip(names, branches))

    def run(flow: fd.Flow) -> Any:
        return flow.run(executor=executor)["sink"]

    def baseline() -> int:
        value = source()
        return sink(**{name: fn(value) for name, fn in pairs})

    return Case(
        name="W4 fan-out" + label,
        n=n,
        unit="node",
        metric="overhead",
        target=3.0,
        build=lambda: fd.Flow("w4-fan-out", nodes),
        run=run,
        baseline=baseline,
    )


# -- Build ---------------------------------------------------------------------


def build_chain(n: int = 500) -> Case:
    """Build: construct and validate a `Flow` of `n` chained nodes (W1's shape).

    The nodes are decorated once, up front; what is timed is `fd.Flow(...)`:
    signature and annotation reading, edge inference, validation (ids, cycle
    search), the plan and the blueprint.
    """
    nodes = chain_nodes(chain_functions(n))

    def build() -> fd.Flow:
        return fd.Flow("build", nodes)

    return Case(
        name="Build (chain)",
        n=n,
        unit="node",
        metric="build",
        target=50.0,
        build=build,
        run=lambda flow: len(flow.nodes),
        baseline=None,
    )
