"""Module-level flows for durability tests that import a flow by reference."""

from __future__ import annotations

import flowdsl as fd


@fd.node
def numbers(count: int) -> list[int]:
    return list(range(count))


@fd.batch(input=numbers, output="squares")
def square(n: int) -> int:
    return n * n


@fd.node
def total(squares: list[int]) -> int:
    return sum(squares)


squares_flow = fd.Flow("squares", [numbers, square, total])


approval = fd.wait_for("approval")


@fd.node
def decide(approval: str) -> str:
    return f"decided: {approval}"


approval_flow = fd.Flow("approve", [approval, decide])
