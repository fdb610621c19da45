"""The run context: state shared by every node of one run."""

from __future__ import annotations

import threading
from typing import Any, Callable

__all__ = ["Context", "SharedState"]

_MISSING: Any = object()


class SharedState:
    """The run-wide key/value store behind every `Context` of one run.

    Every read and write holds one lock, so nodes running on different
    threads never lose each other's writes.
    """

    def __init__(self, run_id: str, emit: Callable[..., None] | None = None) -> None:
        self.run_id = run_id
        self.values: dict[str, Any] = {}
        self.lock = threading.Lock()
        self.emit = emit
        self.cancelled = threading.Event()
        # A class node's prepared value per (node, item), kept across its
        # attempts in this run only (prep runs once; exec is retried).
        self.prepared: dict[tuple[str, int | None], Any] = {}


class Context:
    """What a node sees of its run, injected into a parameter annotated `Context`.

    The key/value methods read and write state shared by the whole run; a
    value set by one node is visible to every node that starts after the set
    returns.

    Attributes:
        run_id: The run's id, stable across resumes.
        node_id: The id of the node being run.
        item_index: The batch item's index, or None outside a batch.
        attempt: The attempt number, starting at 1.
    """

    __slots__ = ("_state", "attempt", "item_index", "node_id")

    def __init__(
        self,
        state: SharedState,
        node_id: str,
        item_index: int | None = None,
        attempt: int = 1,
    ) -> None:
        self._state = state
        self.node_id = node_id
        self.item_index = item_index
        self.attempt = attempt

    @property
    def run_id(self) -> str:
        return self._state.run_id

    @property
    def idempotency_key(self) -> str:
        """`run_id:node_id:item_index`, stable across retries and resumes.

        Pass it to outside systems so a repeated call can be recognised.
        """
        item = "" if self.item_index is None else str(self.item_index)
        return f"{self.run_id}:{self.node_id}:{item}"

    @property
    def cancelled(self) -> bool:
        """Whether the run was cancelled: a long sync node should check this
        now and then, and return early when it turns true."""
        return self._state.cancelled.is_set()

    def get(self, key: str, default: Any = None) -> Any:
        """Return the value stored under `key`, or `default`."""
        with self._state.lock:
            return self._state.values.get(key, default)

    def set(self, key: str, value: Any) -> None:
        """Store `value` under `key` for every later node of this run."""
        with self._state.lock:
            self._state.values[key] = value

    def has(self, key: str) -> bool:
        """Whether a value is stored under `key`."""
        with self._state.lock:
            return key in self._state.values

    def delete(self, key: str) -> None:
        """Remove `key`; a missing key is not an error."""
        with self._state.lock:
            self._state.values.pop(key, None)

    def emit(self, name: str, data: Any = None) -> None:
        """Send a custom event named `name` to the run's `on_event` listener.

        Nothing happens when nobody listens.
        """
        emit = self._state.emit
        if emit is not None:
            emit(name, self.node_id, self.item_index, data, self.attempt)

    def __repr__(self) -> str:
        where = "" if self.item_index is None else f" item {self.item_index}"
        return f"<Context run {self.run_id!r} node {self.node_id!r}{where}>"
