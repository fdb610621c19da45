"""Scatter-gather: double each item of a list in parallel, then sum.

Run it with `make run` (or `python examples/batch.py`).
"""

from __future__ import annotations

import asyncio

import flowdsl as fd


@fd.node
def start() -> list[int]:
    return [10, 20, 30]


@fd.batch(input=start, output="doubled")
async def double(item: int) -> int:
    await asyncio.sleep(0.01)  # stands in for real I/O; items overlap
    return item * 2


@fd.node
def total(doubled: list[int]) -> int:
    return sum(doubled)


flow = fd.Flow("batch-workflow", [start, double, total])


async def main_async() -> int:
    result = await flow.arun()
    return result[total]


def main() -> None:
    result = flow.run()
    print("run():  total =", result[total])
    print("arun(): total =", asyncio.run(main_async()))
    print("doubled:", result[double])
    print()
    print(flow.to_mermaid())


if __name__ == "__main__":
    main()
