"""What a run store keeps, and the protocol every store implements.

A store records runs as they happen: one `RunRecord` per run, one `Outcome`
per node and per batch item, and the run's events. The engine talks to it
through a handful of calls, each one transaction:

- `begin` creates a run (or reopens it for a resume) and takes its lease;
- `commit` writes a group of outcomes and events, renews the lease and may
  set the run's status;
- `load` reads a run back for a resume;
- `release` gives the lease up.

Recording is exactly-once: the first `"completed"` outcome of a
`(run_id, node_id, item_index)` is final, and a later outcome for the same
key is ignored. Other outcomes (`"failed"`, `"retrying"`, `"skipped"`) are
replaced by whatever is recorded later for the same key.
"""

from __future__ import annotations

from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

import attrs

from ._serialize import Serializer

__all__ = [
    "CacheEntry",
    "EventRow",
    "Outcome",
    "RunDetails",
    "RunRecord",
    "Store",
]


@attrs.frozen
class RunRecord:
    """One run, as the store keeps it.

    Attributes:
        run_id: The run's id, stable across resumes.
        flow_id: The flow's id.
        flow_ref: `"module:attribute"` where the flow can be imported, for
            `fd.resume`; None when it is not importable (a flow built in
            `__main__` or inside a function).
        status: `"running"`, `"completed"`, `"failed"`, `"cancelled"` or
            `"awaiting"`.
        started: Unix time the run was first started.
        finished: Unix time it last ended; None while running.
        blueprint_hash: SHA-256 of the flow's blueprint.
        definition: Per node id, what resume compares to detect a changed
            flow: `{"spec": <the node's blueprint entry>, "code": <hash>}`.
        inputs: The flow inputs, encoded by the store's serializer.
        state: The run's pause state (context values, durable sleep wake
            times, routing actions), encoded by the serializer; None if unset.
    """

    run_id: str
    flow_id: str
    flow_ref: str | None
    status: str
    started: float
    finished: float | None
    blueprint_hash: str
    definition: Mapping[str, Any]
    inputs: bytes
    state: bytes | None = None


@attrs.frozen
class Outcome:
    """What became of one node, or one batch item, in a run.

    Attributes:
        node_id: The node.
        item_index: The batch item; None for the node as a whole.
        status: `"completed"` (final), `"failed"`, `"retrying"` (an attempt
            failed and another is due) or `"skipped"`.
        attempts: Attempts made so far, counting every process.
        value: The output encoded by the serializer (`"completed"` only). A
            completed batch records no value: its output is its items'.
        error_type: The exception's qualified type name (`"failed"`,
            `"retrying"`).
        error: The exception's message.
        action: The routing action the node returned, if any.
        started: Unix time the node (or item) started, if known.
        finished: Unix time it ended.
    """

    node_id: str
    item_index: int | None
    status: str
    attempts: int = 1
    value: bytes | None = None
    error_type: str | None = None
    error: str | None = None
    action: str | None = None
    started: float | None = None
    finished: float | None = None


@attrs.frozen
class EventRow:
    """One recorded event; `data` is JSON text (values it cannot hold as
    JSON appear as their `repr`)."""

    seq: int
    kind: str
    node_id: str | None
    item_index: int | None
    attempt: int | None
    time: float
    data: str


@attrs.frozen
class CacheEntry:
    """A cached node output: `key` hashes the node's code and inputs."""

    key: str
    node_id: str
    value: bytes


@attrs.frozen
class RunDetails:
    """A run with every outcome: what `store.get_run(run_id)` returns."""

    record: RunRecord
    outcomes: tuple[Outcome, ...]

    def node(self, node_id: str) -> Outcome | None:
        """The outcome of a node as a whole (None if it has none yet)."""
        for outcome in self.outcomes:
            if outcome.node_id == node_id and outcome.item_index is None:
                return outcome
        return None

    def items(self, node_id: str) -> list[Outcome]:
        """The outcomes of a batch's items, by index."""
        found = [
            o
            for o in self.outcomes
            if o.node_id == node_id and o.item_index is not None
        ]
        return sorted(found, key=lambda o: o.item_index or 0)


@runtime_checkable
class Store(Protocol):
    """Where runs are recorded. `MemoryStore` and `SqliteStore` implement it.

    Every method is one transaction and is safe to call from any thread.

    Attributes:
        serializer: Encodes outputs and inputs (JSON unless configured).
        lease: Seconds a lease lasts without renewal; None: no leases.
    """

    serializer: Serializer
    lease: float | None

    def begin(self, record: RunRecord, owner: str, now: float) -> RunRecord:
        """Create the run, or reopen it if it exists; either way take its lease.

        A reopened run keeps its id, inputs, start time and state; its status
        becomes `"running"`, and it takes the definition (`flow_ref`,
        `blueprint_hash`, `definition`) of `record`, which the caller has
        checked against the stored one.

        Raises:
            RunLocked: Another owner holds an unexpired lease on the run.
        """
        ...

    def commit(
        self,
        run_id: str,
        owner: str,
        now: float,
        outcomes: Sequence[Outcome] = (),
        events: Sequence[EventRow] = (),
        *,
        status: str | None = None,
        state: bytes | None = None,
    ) -> None:
        """Write one group in one transaction and renew the lease.

        A `status` other than `"running"` also sets `finished` and releases
        the lease.

        Raises:
            RunLocked: `owner` no longer holds the lease: another owner took
                it over, or it was released (only `begin` takes a lease).
        """
        ...

    def release(self, run_id: str, owner: str) -> None:
        """Give up the lease, if `owner` still holds it."""
        ...

    def load(self, run_id: str) -> RunDetails | None:
        """The run and its outcomes, or None if there is no such run."""
        ...

    def runs(self, flow_id: str | None = None) -> list[RunRecord]:
        """Every run (of one flow, if given), oldest first."""
        ...

    def get_run(self, run_id: str) -> RunDetails:
        """The run with its per-node and per-item outcomes.

        Raises:
            KeyError: There is no such run.
        """
        ...

    def run(self, run_id: str) -> RunDetails:
        """The same as `get_run`.

        Raises:
            KeyError: There is no such run.
        """
        return self.get_run(run_id)

    def events(self, run_id: str) -> list[EventRow]:
        """The run's events, in `seq` order."""
        ...

    def cache_get(self, key: str) -> bytes | None:
        """A cached output, or None."""
        ...

    def cache_put(self, entry: CacheEntry) -> None:
        """Remember an output under its key (the first one stored wins)."""
        ...

    def delete_outcomes(self, run_id: str, node_ids: Sequence[str]) -> None:
        """Forget what was recorded for these nodes (and their items), so a
        resume runs them again."""
        ...
