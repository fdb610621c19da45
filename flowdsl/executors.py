"""Where sync nodes run: inline, on threads, on processes, or any `Executor`.

Executors are plain `concurrent.futures.Executor`s, so users can pass their
own pools. Async nodes always run as tasks on an event loop.
"""

from __future__ import annotations

import os
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Literal, Union

import attrs

from .exceptions import DefinitionError

__all__ = ["ExecutorChoice", "ExecutorSpec", "default_workers", "resolve_executor"]

#: What `run(executor=...)` accepts.
ExecutorSpec = Union[Literal["inline", "threads", "processes"], Executor, None]

# A user's executor whose size cannot be read is given this many commands at
# once, so that a huge batch is not queued into it all at once.
_UNKNOWN_POOL_SLOTS = 64


def default_workers() -> int:
    """The default pool size: the stdlib thread pool's own formula."""
    return min(32, (os.cpu_count() or 1) + 4)


@attrs.frozen
class ExecutorChoice:
    """A resolved `executor=` argument.

    Attributes:
        kind: `"inline"`, `"threads"`, `"processes"` or `"custom"`.
        slots: How many sync commands may be in flight at once.
        given: The user's own executor, for `"custom"`.
    """

    kind: Literal["inline", "threads", "processes", "custom"]
    slots: int | None
    given: Executor | None = None

    def open(self) -> Executor | None:
        """A new pool for one run (None for inline or a user's executor)."""
        if self.kind == "threads":
            return ThreadPoolExecutor(self.slots, thread_name_prefix="flowdsl")
        if self.kind == "processes":
            return ProcessPoolExecutor(self.slots)
        return None


def resolve_executor(spec: object) -> ExecutorChoice:
    """Interpret the `executor=` argument of `run()`.

    Raises:
        DefinitionError: `spec` is not a known name nor an `Executor`.
    """
    if spec is None or spec == "threads":
        return ExecutorChoice("threads", default_workers())
    if spec == "inline":
        return ExecutorChoice("inline", 1)
    if spec == "processes":
        return ExecutorChoice("processes", os.cpu_count() or 1)
    if isinstance(spec, Executor):
        slots = getattr(spec, "_max_workers", None)
        if not isinstance(slots, int) or slots < 1:
            slots = _UNKNOWN_POOL_SLOTS
        return ExecutorChoice("custom", slots, spec)
    raise DefinitionError(
        f"executor must be 'inline', 'threads', 'processes' or a "
        f"concurrent.futures.Executor, got {spec!r}."
    )
