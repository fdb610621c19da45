"""Nodes that pause a run: waiting for an outside event, and sleeping.

Neither runs user code. The scheduler completes a wait node with the payload
of its event (given to `resume`), and a sleep node when its time comes: in a
live run through a timer the faces keep for it, or, for a durable sleep, on a
resume after its wake time.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from ._nodes import BaseNode, NodeRef
from .exceptions import DefinitionError

__all__ = ["SleepNode", "WaitNode", "sleep", "wait_for"]


class WaitNode(BaseNode):
    """A node that suspends the run until its event arrives (see `wait_for`)."""

    event: str

    @property
    def reference(self) -> str:
        return f"wait:{self.event}"


class SleepNode(BaseNode):
    """A node that completes after a delay (see `sleep`)."""

    seconds: float
    durable: bool

    @property
    def reference(self) -> str:
        return f"sleep:{self.seconds}"


def wait_for(
    event: str, *, id: str | None = None, after: Sequence[NodeRef] = ()
) -> WaitNode:
    """A node that pauses the run until `event` arrives.

    When the run reaches it, the run goes on with everything that does not
    depend on it, then ends with `status == "awaiting"` and the event in
    `result.waiting_for`. `flow.resume(result.state, events={event: payload})`
    continues the run, and the payload becomes this node's output, so nodes
    downstream read it by naming a parameter after the node's id.

    Args:
        event: The event's name.
        id: The node's id; defaults to the event's name.
        after: Nodes that must finish before the wait begins.

    Returns:
        The node.

    Raises:
        DefinitionError: `event` is not a non-empty string.
    """
    if not isinstance(event, str) or not event:
        raise DefinitionError(f"wait_for needs an event name, got {event!r}.")
    node = WaitNode(_named(id or event), id=id or event, options={"after": after})
    node.event = event
    return node


def sleep(
    seconds: float,
    *,
    id: str = "sleep",
    durable: bool = False,
    after: Sequence[NodeRef] = (),
) -> SleepNode:
    """A node that completes `seconds` after it is reached.

    In a live run the run waits (other branches go on meanwhile). With
    `durable=True` the run instead ends `"awaiting"` with `result.wake_at`
    (a Unix time); a `resume` before then stays awaiting, one after it goes on.

    Args:
        seconds: How long to wait.
        id: The node's id.
        durable: Pause the run instead of waiting in it.
        after: Nodes that must finish before the sleep begins.

    Returns:
        The node.

    Raises:
        DefinitionError: `seconds` is negative, not a number, or not finite.
    """
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, (int, float))
        or not math.isfinite(seconds)
        or seconds < 0
    ):
        raise DefinitionError(
            f"sleep {id!r}: seconds must be a finite number >= 0, got {seconds!r}."
        )
    if not isinstance(durable, bool):
        raise DefinitionError(f"sleep {id!r}: durable must be True or False.")
    node = SleepNode(_named(id), id=id, options={"after": after})
    node.seconds = float(seconds)
    node.durable = durable
    return node


def _named(name: str) -> Any:
    """A stand-in function: the scheduler completes pause nodes itself."""

    def pause() -> Any:  # a wait node's value is its event's payload
        return None

    pause.__name__ = pause.__qualname__ = name
    return pause
