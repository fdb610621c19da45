"""Run stores and their serializers.

A store records runs as they happen, so a run can be resumed after a crash,
looked up later, and its nodes' outputs cached across runs. `SqliteStore` is
the embedded default (stdlib `sqlite3`, nothing to install or start);
`MemoryStore` keeps everything in memory. Values go through a serializer:
`JsonSerializer` (the default) stores typed JSON and is safe to load from an
untrusted file; `PickleSerializer` is opt-in and only for stores you trust.
"""

from ._base import CacheEntry, EventRow, Outcome, RunDetails, RunRecord, Store
from ._memory import MemoryStore
from ._serialize import JsonSerializer, PickleSerializer, SerializationError, Serializer
from ._sqlite import SqliteStore

__all__ = [
    "CacheEntry",
    "EventRow",
    "JsonSerializer",
    "MemoryStore",
    "Outcome",
    "PickleSerializer",
    "RunDetails",
    "RunRecord",
    "SerializationError",
    "Serializer",
    "SqliteStore",
    "Store",
]
