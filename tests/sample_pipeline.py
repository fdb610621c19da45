"""A user module for `Flow.from_module`: two nodes, a helper, an import."""

from __future__ import annotations

import flowdsl as fd

from .test_run import numbers  # imported nodes are not collected

__all__ = ["a", "b", "numbers"]


@fd.node
def a() -> int:
    return 2


def helper(x: int) -> int:
    return x * 5


@fd.node
def b(a: int) -> int:
    return helper(a)
