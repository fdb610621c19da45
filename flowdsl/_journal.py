"""The journal: what a durable run has yet to commit, and when to commit it.

The scheduler core writes an `Outcome` here for every node and item it
settles (encoding values with the store's serializer, so an output that
cannot be stored fails its node at once), and the faces commit what has
gathered when `due` says so. The journal never touches the store: it is
plain data and a commit policy, like the rest of the core.

The policy, by default, is database-style group commit: commit whenever
something is waiting, so a result is durable within one commit, and
whatever finished during a commit goes into the next one. `commit_every`
trades more re-execution after a crash for fewer commits: wait for that
many rows, or that many seconds, whichever comes first.
"""

from __future__ import annotations

import json
import threading
from typing import Any, Tuple, Union

from ._events import Event
from .exceptions import DefinitionError
from .store._base import CacheEntry, EventRow, Outcome
from .store._serialize import Serializer

__all__ = ["CommitEvery", "Journal", "check_commit_every", "error_fields"]

#: `commit_every=`: rows (int), seconds (float), or `(rows, seconds)`.
CommitEvery = Union[int, float, Tuple[int, float], None]


def check_commit_every(value: Any) -> tuple[int | None, float | None]:
    """Split `commit_every=` into (rows, seconds), rejecting bad values."""

    def bad() -> DefinitionError:
        return DefinitionError(
            "commit_every must be a number of rows (int >= 1), a number of "
            "seconds (float > 0), or (rows, seconds); got "
            f"{value!r}."
        )

    if value is None:
        return None, None
    if isinstance(value, tuple):
        if len(value) != 2 or not isinstance(value[1], (int, float)):
            raise bad()
        try:
            rows, _ = check_commit_every(value[0])
            _, seconds = check_commit_every(float(value[1]))
        except DefinitionError:
            raise bad() from None
        if rows is None or seconds is None:
            raise bad()
        return rows, seconds
    if isinstance(value, bool):
        raise bad()
    if isinstance(value, int):
        if value < 1:
            raise bad()
        return value, None
    if isinstance(value, float):
        if not value > 0 or value == float("inf"):
            raise bad()
        return None, value
    raise bad()


def error_fields(exc: BaseException) -> tuple[str, str]:
    """An exception as stored: its qualified type name and its message."""
    cls = type(exc)
    name = cls.__qualname__
    if cls.__module__ not in ("builtins", "__main__"):
        name = f"{cls.__module__}.{name}"
    return name, str(exc)


def _event_data(data: Any) -> str:
    """Event data as JSON text; what JSON cannot hold appears as its repr."""
    if isinstance(data, BaseException):
        data = repr(data)
    try:
        return json.dumps(data, default=repr, sort_keys=True)
    except (TypeError, ValueError):  # keys that are not strings, NaN, cycles
        return json.dumps(repr(data))


class Journal:
    """Rows waiting for their commit, and the policy that says when.

    Args:
        serializer: The store's serializer.
        rows: Commit once this many rows wait (None: as soon as any do).
        seconds: Commit once the oldest row has waited this long.
    """

    def __init__(
        self,
        serializer: Serializer,
        *,
        rows: int | None = None,
        seconds: float | None = None,
    ) -> None:
        self.serializer = serializer
        self._rows = rows
        self._seconds = seconds
        self.outcomes: list[Outcome] = []
        self.cache: list[CacheEntry] = []
        self._events: list[EventRow] = []
        self._events_lock = threading.Lock()  # events come from any thread
        self._oldest: float | None = None  # faces' clock: first row waiting
        self.batch_rows = False  # a completed batch waits in this group
        self.stopped = False

    # -- writing rows -----------------------------------------------------------

    def encode(self, value: Any, node_id: str, index: int | None) -> bytes:
        """Encode an output (raises `SerializationError`)."""
        return self.serializer.dumps(value, node_id=node_id, item_index=index)

    def stop(self) -> None:
        """Record no more outcomes (the run was cancelled: whatever finishes
        now may have stopped early). Events are still kept."""
        self.stopped = True

    def add(self, outcome: Outcome, now: float) -> None:
        if self.stopped:
            return
        if self._oldest is None:
            self._oldest = now
        self.outcomes.append(outcome)

    def failed(
        self,
        node_id: str,
        index: int | None,
        exc: BaseException,
        attempts: int,
        now: float,
        wall: float,
        *,
        retrying: bool = False,
    ) -> None:
        error_type, message = error_fields(exc)
        status = "retrying" if retrying else "failed"
        outcome = Outcome(
            node_id, index, status, attempts, None, error_type, message,
            finished=wall,
        )  # fmt: skip
        self.add(outcome, now)

    def event(self, event: Event) -> None:
        """Keep an event for the next commit (a listener; any thread).

        `batch_progress` events are not kept: the items' outcomes say the
        same, and a batch sends one per finished chunk.
        """
        if event.kind == "batch_progress":
            return
        row = EventRow(
            event.seq, event.kind, event.node_id, event.item_index, event.attempt,
            event.time, _event_data(event.data),
        )  # fmt: skip
        with self._events_lock:
            self._events.append(row)

    # -- committing ---------------------------------------------------------------

    def due(self, now: float, idle: bool = True, group: int = 1) -> bool:
        """Whether the faces should commit now (events ride along).

        Args:
            now: The faces' clock.
            idle: Whether the face has no outcome waiting to be handled.
            group: Under the default policy, commit once this many rows
                wait even if the face is never idle.
        """
        if self.outcomes or self.cache:
            rows, seconds, oldest = self._rows, self._seconds, self._oldest
            if rows is None and seconds is None:
                return idle or len(self.outcomes) >= group
            if rows is not None and len(self.outcomes) >= rows:
                return True
            if seconds is not None and oldest is not None and now - oldest >= seconds:
                return True
        return False

    def wakeup(self) -> float | None:
        """When a commit falls due with nothing else happening (faces' clock)."""
        if self._seconds is not None and self._oldest is not None:
            return self._oldest + self._seconds
        return None

    def take(self) -> tuple[list[Outcome], list[EventRow], list[CacheEntry], bool]:
        """Everything waiting, for one commit; the journal starts afresh."""
        outcomes, self.outcomes = self.outcomes, []
        cache, self.cache = self.cache, []
        with self._events_lock:
            events, self._events = self._events, []
        batch, self.batch_rows = self.batch_rows, False
        self._oldest = None
        return outcomes, events, cache, batch
