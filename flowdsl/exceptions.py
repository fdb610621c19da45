"""Every exception flowdsl raises, in one hierarchy rooted at `FlowdslError`."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:
    from ._result import RunResult

__all__ = [
    "BatchInputError",
    "BlueprintError",
    "DefinitionChanged",
    "DefinitionError",
    "ExpressionError",
    "FlowCancelled",
    "FlowFailed",
    "FlowWarning",
    "FlowdslError",
    "LoopLimitExceeded",
    "MissingInputError",
    "NodeTimeout",
    "RecordedError",
    "RunLocked",
]


class FlowdslError(Exception):
    """Base class of every error flowdsl raises on its own account."""


class DefinitionError(FlowdslError, ValueError):
    """A node, batch or flow is defined wrongly.

    Raised when a decorator is applied with bad options, or when a function
    cannot be a node at all (a generator, a lambda without an id).
    """


class ExpressionError(DefinitionError):
    """A condition string is not a valid, safe flowdsl expression.

    Raised when the expression is parsed (when the decorator or flow is
    built), never while it is evaluated.
    """


class BlueprintError(DefinitionError):
    """Building or loading a flow found one or more problems.

    Every problem found is listed at once, one per entry of `problems`, each
    naming the nodes involved and what to change.

    Args:
        flow_id: The id of the flow being built.
        problems: One human-readable sentence per problem.
    """

    def __init__(self, flow_id: str, problems: Sequence[str]) -> None:
        self.flow_id = flow_id
        self.problems: tuple[str, ...] = tuple(problems)
        count = len(self.problems)
        noun = "problem" if count == 1 else "problems"
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"flow {flow_id!r} has {count} {noun}:\n{lines}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.flow_id, self.problems))


class MissingInputError(DefinitionError):
    """`run()` was called without a flow input that some node requires.

    Raised before any node runs.

    Args:
        flow_id: The id of the flow.
        missing: Each missing input name mapped to the ids of the nodes that
            need it.
    """

    def __init__(self, flow_id: str, missing: dict[str, tuple[str, ...]]) -> None:
        self.flow_id = flow_id
        self.missing = dict(missing)
        parts = [
            f"{name!r} (needed by {', '.join(repr(n) for n in nodes)})"
            for name, nodes in missing.items()
        ]
        names = ", ".join(repr(name) for name in missing)
        super().__init__(
            f"flow {flow_id!r} is missing required input(s): {'; '.join(parts)}. "
            f"Pass them as run(inputs={{{names}: ...}}) or give the "
            "parameters a default."
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.flow_id, self.missing))


class BatchInputError(FlowdslError, TypeError):
    """A batch's input value cannot be scattered (not an iterable of items)."""


class FlowFailed(FlowdslError):
    """A run did not complete; `result` holds everything that did.

    The first node error is chained as `__cause__`.

    Args:
        message: What failed, in one paragraph.
        result: The run's result, with every output that completed.
    """

    def __init__(self, message: str, result: RunResult) -> None:
        super().__init__(message)
        self.result = result

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.args[0], self.result))


class FlowWarning(UserWarning):
    """Something about a flow looks wrong but does not stop it from running."""


class LoopLimitExceeded(FlowdslError):
    """A loop's condition still held after `max_iterations` iterations.

    Args:
        loop_id: The loop's node id.
        max_iterations: Its limit.
    """

    def __init__(self, loop_id: str, max_iterations: int) -> None:
        self.loop_id = loop_id
        self.max_iterations = max_iterations
        super().__init__(
            f"loop {loop_id!r} still wanted to repeat after {max_iterations} "
            "iterations; raise max_iterations= or check its while_ condition."
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.loop_id, self.max_iterations))


class FlowCancelled(FlowFailed):
    """A run was cancelled; `result` holds every output that completed."""


class NodeTimeout(FlowdslError, TimeoutError):
    """An attempt ran past its node's `timeout`.

    Args:
        node_id: The node.
        timeout: Its timeout in seconds.
        item_index: The batch item, if any.
    """

    def __init__(self, node_id: str, timeout: float, item_index: int | None = None):
        self.node_id = node_id
        self.timeout = timeout
        self.item_index = item_index
        where = f"node {node_id!r}" + (
            "" if item_index is None else f" item {item_index}"
        )
        super().__init__(
            f"{where} took longer than its timeout of {timeout:g} s; raise "
            "timeout= or make the attempt faster."
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.node_id, self.timeout, self.item_index))


class RunLocked(FlowdslError):
    """Another process holds the run's lease: it is running or resuming it.

    Args:
        run_id: The locked run.
        owner: Who holds the lease.
        expires: When the lease runs out (Unix time) unless its owner renews it.
    """

    def __init__(self, run_id: str, owner: str, expires: float) -> None:
        left = expires - time.time()
        when = (
            f"for {left:.1f} s more unless renewed"
            if left > 0
            else "though it has expired"
        )
        super().__init__(
            f"run {run_id!r} is held by another runner (lease owner {owner!r}, "
            f"{when}); wait for it to finish, or for the lease to expire if "
            "that process died (store.release(run_id, owner) frees it at once "
            "when you know it is dead)."
        )
        self.run_id = run_id
        self.owner = owner
        self.expires = expires

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.run_id, self.owner, self.expires))


class DefinitionChanged(FlowdslError):
    """A stored run's flow changed since it was recorded; resuming it as is
    would mix outputs of two different flows.

    Args:
        run_id: The run being resumed.
        differences: One line per difference, each naming its node.
    """

    def __init__(self, run_id: str, differences: Sequence[str]) -> None:
        self.run_id = run_id
        self.differences = tuple(differences)
        listed = "".join(f"\n  - {d}" for d in self.differences)
        super().__init__(
            f"run {run_id!r} was recorded with a different flow:{listed}\n"
            'Pass on_change="rerun_changed" to run the changed nodes (and what '
            "depends on them) again, or start a new run."
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.run_id, self.differences))


class RecordedError(FlowdslError):
    """An error recorded by an earlier process, loaded back from a store.

    The original exception object is not stored (it may not be safe to
    load); its type name and message are.

    Args:
        type_name: The original exception's qualified type name.
        message: Its message.
    """

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.type_name, self.message))
