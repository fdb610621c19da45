"""`MemoryStore`: a run store in this process's memory, for tests and notebooks."""

from __future__ import annotations

import threading
from typing import Optional, Sequence, Tuple

import attrs

from flowdsl.exceptions import RunLocked

from ._base import CacheEntry, EventRow, Outcome, RunDetails, RunRecord, Store
from ._serialize import JsonSerializer, Serializer

__all__ = ["MemoryStore"]

_Key = Tuple[str, Optional[int]]


class MemoryStore(Store):
    """Keeps runs in memory: the same behaviour as `SqliteStore`, no file.

    Values still go through the serializer, so a flow that runs against a
    `MemoryStore` will also store in a `SqliteStore`.

    Args:
        serializer: Encodes values; `JsonSerializer()` by default.
        lease: Seconds a run's lease lasts without renewal (None: no leases).
    """

    def __init__(
        self, *, serializer: Serializer | None = None, lease: float | None = 30.0
    ) -> None:
        self.serializer: Serializer = serializer or JsonSerializer()
        self.lease = lease
        self._lock = threading.Lock()
        self._runs: dict[str, RunRecord] = {}
        self._leases: dict[str, tuple[str, float]] = {}
        self._outcomes: dict[str, dict[_Key, Outcome]] = {}
        self._events: dict[str, dict[int, EventRow]] = {}
        self._cache: dict[str, CacheEntry] = {}

    def begin(self, record: RunRecord, owner: str, now: float) -> RunRecord:
        with self._lock:
            self._take_lease(record.run_id, owner, now)
            stored = self._runs.get(record.run_id)
            if stored is None:
                stored = record
                self._outcomes[record.run_id] = {}
                self._events[record.run_id] = {}
            else:
                stored = attrs.evolve(
                    stored,
                    status="running",
                    finished=None,
                    flow_ref=record.flow_ref or stored.flow_ref,
                    blueprint_hash=record.blueprint_hash,
                    definition=record.definition,
                )
            self._runs[record.run_id] = stored
            return stored

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
        with self._lock:
            if run_id not in self._runs:
                raise KeyError(f"no run {run_id!r} in this store")
            self._take_lease(run_id, owner, now, renew_only=True)
            table = self._outcomes[run_id]
            for outcome in outcomes:
                key = (outcome.node_id, outcome.item_index)
                old = table.get(key)
                if old is None or old.status != "completed":
                    table[key] = outcome
            stored_events = self._events[run_id]
            for event in events:
                stored_events.setdefault(event.seq, event)
            record = self._runs[run_id]
            if state is not None:
                record = attrs.evolve(record, state=state)
            if status is not None:
                finished = None if status == "running" else now
                record = attrs.evolve(record, status=status, finished=finished)
                if status != "running":
                    self._leases.pop(run_id, None)
            self._runs[run_id] = record

    def release(self, run_id: str, owner: str) -> None:
        with self._lock:
            held = self._leases.get(run_id)
            if held is not None and held[0] == owner:
                del self._leases[run_id]

    def load(self, run_id: str) -> RunDetails | None:
        with self._lock:
            record = self._runs.get(run_id)
            if record is None:
                return None
            return RunDetails(record, tuple(self._outcomes[run_id].values()))

    def runs(self, flow_id: str | None = None) -> list[RunRecord]:
        with self._lock:
            found = [
                r
                for r in self._runs.values()
                if flow_id is None or r.flow_id == flow_id
            ]
        return sorted(found, key=lambda r: r.started)

    def get_run(self, run_id: str) -> RunDetails:
        details = self.load(run_id)
        if details is None:
            raise KeyError(f"no run {run_id!r} in this store")
        return details

    def events(self, run_id: str) -> list[EventRow]:
        with self._lock:
            return sorted(self._events.get(run_id, {}).values(), key=lambda e: e.seq)

    def cache_get(self, key: str) -> bytes | None:
        with self._lock:
            entry = self._cache.get(key)
            return None if entry is None else entry.value

    def cache_put(self, entry: CacheEntry) -> None:
        with self._lock:
            self._cache.setdefault(entry.key, entry)

    def delete_outcomes(self, run_id: str, node_ids: Sequence[str]) -> None:
        with self._lock:
            gone = set(node_ids)
            table = self._outcomes.get(run_id, {})
            for key in [k for k in table if k[0] in gone]:
                del table[key]

    def _take_lease(
        self, run_id: str, owner: str, now: float, *, renew_only: bool = False
    ) -> None:
        """Take (or renew) the lease; with `renew_only`, `owner` must hold it."""
        if self.lease is None:
            return
        held = self._leases.get(run_id)
        if renew_only and (held is None or held[0] != owner):
            # Lost: another process took it over, or it was released.
            raise RunLocked(
                run_id, held[0] if held else "nobody", held[1] if held else now
            )
        if held is not None and held[0] != owner and held[1] > now:
            raise RunLocked(run_id, held[0], held[1])
        self._leases[run_id] = (owner, now + self.lease)

    def __repr__(self) -> str:
        return f"<MemoryStore: {len(self._runs)} runs>"
