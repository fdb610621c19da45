"""Static typing of the core API, checked by `mypy --strict --warn-unused-ignores`.

`assert_type` lines must hold; each `# type: ignore[code]` line must be an
error mypy reports (an unused ignore fails the check). The functions are
never called: this module is read by mypy, not run.
"""

from __future__ import annotations

import asyncio
from typing import Any, Coroutine, Literal

from typing_extensions import assert_type

import flowdsl as fd


@fd.node
def start() -> list[int]:
    return [10, 20, 30]


@fd.batch(input=start, output="doubled")
async def double(item: int) -> int:
    return item * 2


@fd.batch(input=start, output="halves")
def halve(item: int, divisor: float = 2.0) -> float:
    return item / divisor


@fd.node(id="sum")
def total(doubled: list[int]) -> int:
    return sum(doubled)


@fd.node
async def fetch(url: str) -> bytes:
    return url.encode()


def check_calls() -> None:
    assert_type(start(), list[int])
    assert_type(total([1, 2]), int)
    assert_type(fetch("x"), Coroutine[Any, Any, bytes]).close()
    assert_type(halve(3), float)
    assert_type(asyncio.run(double(3)), int)
    total("not a list")  # type: ignore[arg-type]
    _ = fetch(1)  # type: ignore[arg-type]


def check_results() -> None:
    flow = fd.Flow("typed", [start, double, halve, total, fetch])
    result = flow.run({"url": "u"})
    assert_type(result, fd.RunResult)
    assert_type(result[total], int)
    assert_type(result[fetch], bytes)
    assert_type(result[double], list[int])
    assert_type(result[halve], list[float])
    assert_type(result["sum"], Any)
    name: str = result[total]  # type: ignore[assignment]
    del name


def check_options() -> None:
    fd.node(id=3)  # type: ignore[call-overload]
    fd.batch(input=start, on_error="ignore")  # type: ignore[arg-type]


def check_flow_api() -> None:
    flow = fd.Flow("typed", [start, double, total])
    assert_type(flow.id, str)
    assert_type(flow.blueprint, fd.Blueprint)
    assert_type(flow.blueprint.to_dict(), dict[str, Any])
    assert_type(flow.blueprint.to_json(), str)
    assert_type(fd.Blueprint.from_dict({}), fd.Blueprint)
    assert_type(flow.blueprint.node("start"), fd.NodeSpec)
    assert_type(flow.to_mermaid(), str)
    assert_type(flow.inputs["url"], bool)
    result = flow.run(concurrency=4, executor="inline", check=False)
    assert_type(result.status, Literal["completed", "failed", "awaiting", "cancelled"])
    assert_type(result.errors, tuple[fd.RunError, ...])
    assert_type(result.duration, float)
    assert_type(result.get("sum"), Any)
    fd.Flow("bad", [42])  # type: ignore[list-item]
    flow.run(executor="gpu")  # type: ignore[arg-type]
    flow.run(concurrency="many")  # type: ignore[arg-type]


async def check_async_face() -> None:
    flow = fd.Flow("typed", [start, double, total])
    result = await flow.arun()
    assert_type(result, fd.RunResult)
    assert_type(result[total], int)


def check_decorator_forms() -> None:
    @fd.node(inline=True)
    def cheap(x: int) -> str:
        return str(x)

    @fd.node(id="fetcher")
    async def fetcher(x: int) -> str:
        return str(x)

    as_node: fd.Node[[int], str] = cheap
    as_async_node: fd.AsyncNode[[int], str] = fetcher
    as_batch: fd.BatchNode[int, [float], float] = halve
    as_async_batch: fd.AsyncBatchNode[int, [], int] = double
    del as_node, as_async_node, as_batch, as_async_batch
    not_async: fd.AsyncNode[[int], str] = cheap  # type: ignore[assignment]
    del not_async
    fd.node(inline="yes")  # type: ignore[call-overload]
    fd.batch(input=start, concurrency="4")  # type: ignore[arg-type]
    cheap("1")  # type: ignore[arg-type]
    halve("1")  # type: ignore[arg-type]
