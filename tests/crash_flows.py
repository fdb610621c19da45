"""Flows for the crash tests, shared by the test process and its children.

Every node body writes `begin` and `end` lines to a side-effect ledger (the
file named by `CRASH_LEDGER`, when set): a record of real executions kept
outside the store, so the tests can count them independently of the
engine's own bookkeeping. A ledger line is

    begin|end|fail RUN_ID NODE_ID ITEM ATTEMPT PID UNIX_TIME

with `-` as ITEM for a node that is not a batch item. Each line goes out in
one `write` on a file opened in append mode, so lines from concurrent
threads and processes never interleave, and a SIGKILL never tears one.

The bodies are deterministic: some fail their first attempt on purpose
(`ctx.attempt == 1`), the same in every process and after every resume, so
a run always ends with the same outputs.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any, NamedTuple

import flowdsl as fd

__all__ = [
    "FLOWS",
    "LEDGER_ENV",
    "LedgerLine",
    "big",
    "kind_async",
    "kind_batch",
    "kind_subflow",
    "kind_subflow_items",
    "kind_sync",
    "read_ledger",
    "slow",
]

#: The environment variable naming the ledger file.
LEDGER_ENV = "CRASH_LEDGER"


class LedgerLine(NamedTuple):
    """One line of the ledger."""

    kind: str
    run_id: str
    node_id: str
    item: int | None
    attempt: int
    pid: int
    time: float

    @property
    def key(self) -> tuple[str, str, int | None]:
        """What the store records one result for: (run, node, item)."""
        return (self.run_id, self.node_id, self.item)


def ledger(ctx: fd.Context, kind: str) -> None:
    """Append one line for this body to the ledger, if there is one."""
    path = os.environ.get(LEDGER_ENV)
    if not path:
        return
    item = "-" if ctx.item_index is None else str(ctx.item_index)
    line = (
        f"{kind} {ctx.run_id} {ctx.node_id} {item} {ctx.attempt} "
        f"{os.getpid()} {time.time():.6f}\n"
    )
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()


def read_ledger(path: str | os.PathLike[str]) -> list[LedgerLine]:
    """Every line of a ledger, in file order (none if there is no file)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return []
    lines = []
    for raw in text.splitlines():
        kind, run_id, node_id, item, attempt, pid, at = raw.split(" ")
        index = None if item == "-" else int(item)
        lines.append(
            LedgerLine(kind, run_id, node_id, index, int(attempt), int(pid), float(at))
        )
    return lines


def value_of(x: int) -> int:
    """What a body makes of its input: any deterministic function will do."""
    return (x * 7919 + 13) % 100_003


# -- the 1,000-item checkpointed batch ----------------------------------------


@fd.node
def numbers(count: int) -> list[int]:
    return list(range(count))


@fd.batch(input=numbers, output="out")
def work(item: int, pause: float, ctx: fd.Context) -> int:
    """2-5 ms of "work" per item at pause=0.002."""
    ledger(ctx, "begin")
    time.sleep(pause * (1.0 + 0.5 * (item % 4)))
    ledger(ctx, "end")
    return value_of(item)


big = fd.Flow("crash_big", [numbers, work])


# -- one small flow per node kind; every target fails its first attempt ------


@fd.node
def source(n: int, ctx: fd.Context) -> int:
    ledger(ctx, "begin")
    ledger(ctx, "end")
    return n + 1


def _attempt(ctx: fd.Context, fail_first: bool) -> None:
    """Start a body; fail its first attempt if told to."""
    ledger(ctx, "begin")
    if fail_first and ctx.attempt == 1:
        ledger(ctx, "fail")
        raise RuntimeError(f"{ctx.node_id}[{ctx.item_index}] fails attempt 1")


@fd.node(retries=2, retry_delay=0.02)
def sync_target(source: int, ctx: fd.Context) -> int:
    _attempt(ctx, True)
    time.sleep(0.005)
    ledger(ctx, "end")
    return value_of(source)


@fd.node(retries=2, retry_delay=0.02)
async def async_target(source: int, ctx: fd.Context) -> int:
    _attempt(ctx, True)
    await asyncio.sleep(0.005)
    ledger(ctx, "end")
    return value_of(source)


@fd.node
def spread(source: int, ctx: fd.Context) -> list[int]:
    ledger(ctx, "begin")
    ledger(ctx, "end")
    return [source + i for i in range(6)]


@fd.batch(input=spread, output="batch_out", retries=2, retry_delay=0.02, concurrency=3)
def batch_target(item: int, ctx: fd.Context) -> int:
    _attempt(ctx, (ctx.item_index or 0) % 3 == 1)
    time.sleep(0.003 * (1 + (ctx.item_index or 0) % 2))
    ledger(ctx, "end")
    return value_of(item)


def _sink(value: Any, ctx: fd.Context) -> list[Any]:
    ledger(ctx, "begin")
    ledger(ctx, "end")
    return ["sink", value]


@fd.node(id="sink")
def sink_sync(sync_target: int, ctx: fd.Context) -> list[Any]:
    return _sink(sync_target, ctx)


@fd.node(id="sink")
def sink_async(async_target: int, ctx: fd.Context) -> list[Any]:
    return _sink(async_target, ctx)


@fd.node(id="sink")
def sink_batch(batch_out: list[int], ctx: fd.Context) -> list[Any]:
    return _sink(batch_out, ctx)


@fd.node(id="sink")
def sink_sub(sub: int, ctx: fd.Context) -> list[Any]:
    return _sink(sub, ctx)


@fd.node(id="sink")
def sink_subs(subs: list[int], ctx: fd.Context) -> list[Any]:
    return _sink(subs, ctx)


# The child flow run by the subflow kinds: its middle node fails attempt 1.


@fd.node
def c_first(x: int, ctx: fd.Context) -> int:
    ledger(ctx, "begin")
    ledger(ctx, "end")
    return x * 2


@fd.node(retries=2, retry_delay=0.02)
def c_target(c_first: int, ctx: fd.Context) -> int:
    _attempt(ctx, True)
    time.sleep(0.003)
    ledger(ctx, "end")
    return value_of(c_first)


@fd.node
def c_last(c_target: int, ctx: fd.Context) -> int:
    ledger(ctx, "begin")
    ledger(ctx, "end")
    return c_target + 1


child = fd.Flow("crash_child", [c_first, c_target, c_last])


kind_sync = fd.Flow("crash_kind_sync", [source, sync_target, sink_sync])
kind_async = fd.Flow("crash_kind_async", [source, async_target, sink_async])
kind_batch = fd.Flow("crash_kind_batch", [source, spread, batch_target, sink_batch])
kind_subflow = fd.Flow(
    "crash_kind_subflow",
    [source, fd.subflow(child, id="sub", inputs={"x": source}), sink_sub],
)
kind_subflow_items = fd.Flow(
    "crash_kind_subflow_items",
    [
        source,
        spread,
        fd.subflow(child, id="subs", over=spread, item="x", concurrency=2),
        sink_subs,
    ],
)

# -- one long sync body, for the lease tests -----------------------------------


@fd.node
def hold(seconds: float, ctx: fd.Context) -> float:
    """A body that runs longer than the lease: the lease must be renewed."""
    ledger(ctx, "begin")
    time.sleep(seconds)
    ledger(ctx, "end")
    return seconds


slow = fd.Flow("crash_slow", [hold])

#: Name -> flow, for the driver.
FLOWS = {
    "big": big,
    "kind_sync": kind_sync,
    "kind_async": kind_async,
    "kind_batch": kind_batch,
    "kind_subflow": kind_subflow,
    "kind_subflow_items": kind_subflow_items,
    "slow": slow,
}
