"""Run events: what happened, in order, for whoever listens.

Events are only built when someone listens (`on_event=`): with no listener
the scheduler and `Context.emit` skip them entirely. Each run numbers its
events with `seq`, assigned and delivered under one lock, so a listener sees
them in strictly increasing `seq` order even when many threads emit at once.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

import attrs

__all__ = ["Event", "EventBus", "EventSink", "Listener"]

_log = logging.getLogger("flowdsl")

Listener = Callable[["Event"], None]


@attrs.frozen
class Event:
    """One thing that happened in a run.

    Attributes:
        kind: `run_start`, `node_start`, `node_finish`, `node_retry`,
            `node_skipped`, `node_error`, `node_rescued`, `batch_progress`,
            `run_finish`, or a custom name given to `Context.emit`.
        run_id: The run's id.
        node_id: The node concerned, if any.
        item_index: The batch item concerned, if any.
        attempt: The attempt number, where one applies.
        seq: This event's number in its run: 1, 2, 3, ... in delivery order.
        time: Unix time when it was emitted.
        data: Details: the error for `node_error` and `node_rescued`,
            `{"error", "delay"}` for `node_retry`, `{"done", "pulled",
            "exhausted"}` for `batch_progress`, `{"status"}` for
            `run_finish`, or what a node passed to `emit`.
    """

    kind: str
    run_id: str
    node_id: str | None
    item_index: int | None
    attempt: int | None
    seq: int
    time: float
    data: Any = None


class EventBus:
    """Fan events out to subscribers; pass it as `on_event=`.

    Example: `bus.subscribe(print, kind="node_error")`.
    """

    def __init__(self) -> None:
        self._subscribers: list[tuple[str | None, Listener]] = []

    def subscribe(self, listener: Listener, *, kind: str | None = None) -> None:
        """Call `listener` with every event (or only those of `kind`).

        Args:
            listener: Called once per event, in `seq` order.
            kind: Only events of this kind; None for all.
        """
        self._subscribers.append((kind, listener))

    def __call__(self, event: Event) -> None:
        for kind, listener in self._subscribers:
            if kind is None or kind == event.kind:
                listener(event)


class EventSink:
    """Numbers and delivers one run's events (the faces own it)."""

    def __init__(self, run_id: str, listener: Listener, first_seq: int = 1) -> None:
        self._run_id = run_id
        self._listener = listener
        self._lock = threading.Lock()
        self._seq = first_seq - 1  # a resumed run numbers on from its last event

    def __call__(
        self,
        kind: str,
        node_id: str | None = None,
        item_index: int | None = None,
        data: Any = None,
        attempt: int | None = None,
    ) -> None:
        with self._lock:
            self._seq += 1
            event = Event(
                kind, self._run_id, node_id, item_index, attempt, self._seq,
                time.time(), data,
            )  # fmt: skip
            try:
                self._listener(event)
            except Exception:  # observers must not break the run they observe
                _log.exception("on_event listener failed on %s", event.kind)
