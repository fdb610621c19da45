"""Static typing of the core API, checked by `mypy --strict --warn-unused-ignores`.

`assert_type` lines must hold; each `# type: ignore[code]` line must be an
error mypy reports (an unused ignore fails the check). The functions are
never called: this module is read by mypy, not run.
"""

from __future__ import annotations

import asyncio
from typing import Any, Coroutine

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
