"""The executable plan: a validated flow, compiled for the scheduler.

A plan is the scheduler's only view of a flow: ids, keys, dependencies and
options, plus the node objects the faces call. It is built once per `Flow`
and never changes.
"""

from __future__ import annotations

from typing import Any, Mapping

import attrs

from ._nodes import BaseNode, Join, OnError
from ._policy import RetryPolicy

__all__ = ["Plan", "PlanNode"]


@attrs.frozen
class PlanNode:
    """One node as the scheduler sees it.

    Attributes:
        id: The node id.
        key: The key its value is published under.
        node: The node object (the faces call it).
        is_async: Whether its function is a coroutine function.
        inline: Whether a sync node always runs on the scheduler's thread.
        sources: `(parameter, producer key)` pairs.
        inputs: `(parameter, flow input name)` pairs.
        context_params: Parameters that receive a `Context`.
        deps: Ids of the nodes it waits for.
        dependents: Ids of the nodes that wait for it.
        batch_input: For a batch, the key of the value it scatters.
        concurrency: For a batch, its own limit on items in flight.
        chunk_size: For a batch, items per executor call.
        on_error: For a batch, what a failed item does.
        required: Parameters without a default.
        on: `(producer id, action)` the node runs on, if routed.
        when: Its condition (an `Expression` or a callable), if any.
        join: `"all"` or `"any"`.
        loop: For a loop node, how it repeats.
        pause: `("wait", event)` or `("sleep", (seconds, durable))` for the
            nodes the scheduler completes itself.
        policy: Retries and timeout.
        fallback: Called with the final error, if set.
        fallback_async: Whether `fallback` is a coroutine function.
        fallback_context: Whether `fallback` takes a `Context` too.
    """

    id: str
    key: str
    node: BaseNode
    is_async: bool
    inline: bool
    sources: tuple[tuple[str, str], ...]
    inputs: tuple[tuple[str, str], ...]
    context_params: tuple[str, ...]
    deps: tuple[str, ...]
    dependents: tuple[str, ...]
    batch_input: str | None = None
    concurrency: int | None = None
    chunk_size: int = 1
    on_error: OnError = "raise"
    required: frozenset[str] = frozenset()
    on: tuple[str, str] | None = None
    when: Any = None
    join: Join = "all"
    loop: Any = None
    pause: tuple[str, Any] | None = None
    policy: RetryPolicy = attrs.field(factory=RetryPolicy)
    fallback: Any = None
    fallback_async: bool = False
    fallback_context: bool = False

    @property
    def is_batch(self) -> bool:
        return self.batch_input is not None


@attrs.frozen
class Plan:
    """A validated flow, ready to run.

    Attributes:
        flow_id: The flow's id.
        nodes: Node id to plan node, in the flow's order.
        producer_of: Published key to the id of the node publishing it.
        required_inputs: Each required flow input to the ids of its consumers.
        optional_inputs: Each flow input with a default to its consumers.
        input_types: Each flow input to `(node id, annotation)` per consumer.
        open_inputs: Whether inputs no node declares are accepted (a callable
            condition may read any input, so flowdsl cannot list them).
    """

    flow_id: str
    nodes: Mapping[str, PlanNode]
    producer_of: Mapping[str, str]
    required_inputs: Mapping[str, tuple[str, ...]]
    optional_inputs: Mapping[str, tuple[str, ...]]
    input_types: Mapping[str, tuple[tuple[str, Any], ...]]
    open_inputs: bool = False
