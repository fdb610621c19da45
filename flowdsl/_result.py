"""What a run reports: its status, every output that completed, every error."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic, Literal, Mapping, TypeVar, overload

import attrs

from ._nodes import AsyncBatchNode, AsyncNode, BaseNode, BatchNode, Node

__all__ = [
    "Action",
    "ChildRun",
    "ItemError",
    "NodeStatus",
    "RunError",
    "RunResult",
    "RunStatus",
]

R = TypeVar("R")
T = TypeVar("T")

RunStatus = Literal["completed", "failed", "awaiting", "cancelled"]
#: `rescued`: failed, but its fallback's value stands in for its output;
#: `cancelled`: in flight when the run was cancelled;
#: `skipped`: on a branch not taken (its route or condition did not hold, or
#: what it needs was skipped); `not_run`: never started, because the run
#: stopped at a failure elsewhere; `stopped`: a batch that had started when
#: the run stopped at such a failure; `waiting`: a wait or durable sleep node
#: holding a paused run; `pending`: not reached yet in a paused run.
NodeStatus = Literal[
    "completed",
    "rescued",
    "failed",
    "skipped",
    "cancelled",
    "not_run",
    "stopped",
    "waiting",
    "pending",
]


@attrs.frozen
class Action(Generic[T]):
    """A node's value, labelled with the route it takes.

    Return `fd.Action("approved", value)` from a node; consumers declared
    `@fd.node(on=(producer, "approved"))` run, others routed on the producer
    are skipped. Parameters named after the producer receive `value`, and a
    producer annotated `-> fd.Action[int]` is checked as producing an `int`.

    Attributes:
        name: The route taken.
        value: The node's output.
    """

    name: str
    value: T = None  # type: ignore[assignment]


@attrs.frozen
class ChildRun:
    """What a subflow or loop node hands the scheduler: the child's run and
    the value the node publishes."""

    result: RunResult
    value: Any


@attrs.frozen
class RunError:
    """One failure in a run: a whole node, or one item of a batch.

    Attributes:
        node_id: The failing node's id.
        item_index: The batch item's index, or None for a whole node.
        attempts: How many attempts were made.
        exception: The exception the last attempt raised.
        path: Subflow ids from the top-level flow down; empty at top level.
    """

    node_id: str
    item_index: int | None
    attempts: int
    exception: BaseException
    path: tuple[str, ...] = ()

    def describe(self) -> str:
        """One line: where it failed and what was raised."""
        where = f"node {self.node_id!r}"
        if self.item_index is not None:
            where += f" item {self.item_index}"
        return f"{where} raised {self.exception!r}"


@attrs.frozen
class ItemError:
    """The slot of a failed item in a batch run with `on_error="collect"`.

    Attributes:
        index: The item's index in the batch input.
        exception: What the worker raised.
        attempts: How many attempts the item was given.
    """

    index: int
    exception: BaseException
    attempts: int = 1


@attrs.frozen(eq=False)
class RunResult:
    """The outcome of one run.

    Index it by node id (`result["total"]`), by a batch's output key, or by
    the node object itself (`result[total]`, typed for mypy as the node's
    return type). Outputs of every node that completed are present even when
    the run failed.

    Attributes:
        flow_id: The flow's id.
        run_id: This run's id.
        status: `"completed"` only when every node completed or was skipped;
            `"awaiting"` when paused at a wait or durable sleep; `"failed"`;
            `"cancelled"`.
        outputs: Output key to value, for every node that completed.
        errors: Every node and item failure, in the order they happened.
        node_status: Each node id to its status (see `NodeStatus`).
        timings: Each node id that started to its wall time in seconds.
        duration: The whole run's wall time in seconds.
        children: The child run of each subflow and loop node (a loop's
            last iteration), by node id.
        waiting_for: For an `"awaiting"` run, the events it waits for.
        wake_at: For an `"awaiting"` run, the Unix time its first durable
            sleep ends.
        state: The run as plain data (JSON-serializable when its outputs,
            inputs and context values are): pass it to `Flow.resume`.
        rescued: The failures that fallbacks recovered from (not in
            `errors`: they did not fail the run).
    """

    flow_id: str
    run_id: str
    status: RunStatus
    outputs: Mapping[str, Any]
    errors: tuple[RunError, ...]
    node_status: Mapping[str, NodeStatus]
    timings: Mapping[str, float]
    duration: float
    _keys: Mapping[str, str] = attrs.field(alias="keys", repr=False)
    children: Mapping[str, RunResult] = attrs.field(factory=dict)
    waiting_for: tuple[str, ...] = ()
    wake_at: float | None = None
    state: Mapping[str, Any] = attrs.field(factory=dict, repr=False)
    rescued: tuple[RunError, ...] = ()

    @property
    def ok(self) -> bool:
        """Whether the run completed."""
        return self.status == "completed"

    if TYPE_CHECKING:

        @overload
        def __getitem__(self, key: Node[Any, R]) -> R: ...
        @overload
        def __getitem__(self, key: AsyncNode[Any, R]) -> R: ...
        @overload
        def __getitem__(self, key: BatchNode[Any, Any, R]) -> list[R]: ...
        @overload
        def __getitem__(self, key: AsyncBatchNode[Any, Any, R]) -> list[R]: ...
        @overload
        def __getitem__(self, key: str) -> Any: ...

    def __getitem__(self, key: str | BaseNode) -> Any:
        output_key = self._output_key(key)
        try:
            return self.outputs[output_key]
        except KeyError:
            raise self._missing(key, output_key) from None

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, (str, BaseNode)):
            return False
        return self._output_key(key) in self.outputs

    def get(self, key: str | BaseNode, default: Any = None) -> Any:
        """The output of `key` (a node or its id), or `default` if it has none."""
        return self.outputs.get(self._output_key(key), default)

    def _output_key(self, key: str | BaseNode) -> str:
        if isinstance(key, BaseNode):
            key = key.id
        return self._keys.get(key, key)

    def _missing(self, key: str | BaseNode, output_key: str) -> KeyError:
        node_id = key.id if isinstance(key, BaseNode) else key
        owner = next((n for n, k in self._keys.items() if k == output_key), node_id)
        status = self.node_status.get(owner)
        if status is None:
            known = ", ".join(sorted(self.outputs)) or "none"
            return KeyError(
                f"flow {self.flow_id!r} has no node or output {node_id!r}; "
                f"outputs of this run: {known}."
            )
        why = {
            "skipped": "it was on a branch not taken",
            "pending": "the run paused before reaching it",
            "waiting": "the run is waiting for it; resume with its event",
            "not_run": "the run stopped at a failure before it started",
            "stopped": "the run stopped at a failure while it ran",
            "cancelled": "the run was cancelled while it ran",
            "failed": "it failed; see result.errors",
        }.get(status, "it has no value")
        return KeyError(
            f"node {owner!r} has no output in run {self.run_id!r}: its status is "
            f"{status!r} ({why})."
        )
