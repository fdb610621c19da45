"""`SqliteStore`: runs recorded in one SQLite file that processes can share.

Every store method is one SQL transaction on one connection, guarded by a
lock so any thread may call it. Writes start with `BEGIN IMMEDIATE`, which
takes SQLite's write lock up front: a lease is checked and taken atomically
even when several processes use the same file. The file is in WAL mode, with
`synchronous=FULL` unless configured otherwise.

Every SQL value is bound with `?`. The only part of a statement that varies
is the table prefix, which is validated, and every statement is built once,
in `_statements`, from the constant templates below.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import threading
import time
import weakref
from pathlib import Path
from typing import Any, Final, Iterator, Mapping, Sequence

import attrs

from flowdsl.exceptions import DefinitionError, FlowdslError, RunLocked

from ._base import CacheEntry, EventRow, Outcome, RunDetails, RunRecord, Store
from ._serialize import JsonSerializer, Serializer

__all__ = ["SqliteStore"]

#: The schema version this code writes; older files are migrated on open.
SCHEMA_VERSION: Final = 1

#: `item_index` as stored for an outcome of a node as a whole: SQLite treats
#: NULLs as distinct in a primary key, so None could not be unique.
_WHOLE_NODE: Final = -1

_PREFIX: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,30}")
_VERSION_KEY: Final = "schema_version"

_BEGIN_WRITE: Final = "BEGIN IMMEDIATE"
_BEGIN_READ: Final = "BEGIN DEFERRED"
_COMMIT: Final = "COMMIT"
_ROLLBACK: Final = "ROLLBACK"
_JOURNAL_WAL: Final = "PRAGMA journal_mode=WAL"
#: SQLite's primary result codes for "another connection holds the lock".
_SQLITE_BUSY: Final = 5
_SQLITE_LOCKED: Final = 6

#: The allowed `synchronous=` values and the statement that sets each.
_SYNCHRONOUS: Final[Mapping[str, str]] = {
    "OFF": "PRAGMA synchronous=OFF",
    "NORMAL": "PRAGMA synchronous=NORMAL",
    "FULL": "PRAGMA synchronous=FULL",
    "EXTRA": "PRAGMA synchronous=EXTRA",
}

#: Every statement the store runs; `{p}` is the validated table prefix.
_TEMPLATES: Final[Mapping[str, str]] = {
    "create_meta": (
        "CREATE TABLE IF NOT EXISTS {p}meta ("
        "key TEXT PRIMARY KEY, value INTEGER NOT NULL)"
    ),
    "get_version": "SELECT value FROM {p}meta WHERE key = ?",
    "set_version": "INSERT OR REPLACE INTO {p}meta (key, value) VALUES (?, ?)",
    # -- version 1 --
    "v1_runs": (
        "CREATE TABLE {p}runs ("
        "run_id TEXT PRIMARY KEY, flow_id TEXT NOT NULL, flow_ref TEXT, "
        "status TEXT NOT NULL, started REAL NOT NULL, finished REAL, "
        "blueprint_hash TEXT NOT NULL, definition TEXT NOT NULL, "
        "inputs BLOB NOT NULL, state BLOB, serializer TEXT NOT NULL, "
        "lease_owner TEXT, lease_expires REAL)"
    ),
    "v1_runs_index": "CREATE INDEX {p}runs_by_flow ON {p}runs (flow_id, started)",
    "v1_outcomes": (
        "CREATE TABLE {p}outcomes ("
        "run_id TEXT NOT NULL, node_id TEXT NOT NULL, item_index INTEGER NOT NULL, "
        "status TEXT NOT NULL, attempts INTEGER NOT NULL, value BLOB, "
        "error_type TEXT, error TEXT, action TEXT, started REAL, finished REAL, "
        "PRIMARY KEY (run_id, node_id, item_index))"
    ),
    "v1_events": (
        "CREATE TABLE {p}events ("
        "run_id TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL, "
        "node_id TEXT, item_index INTEGER, attempt INTEGER, time REAL NOT NULL, "
        "data TEXT NOT NULL, PRIMARY KEY (run_id, seq))"
    ),
    "v1_cache": (
        "CREATE TABLE {p}cache ("
        "key TEXT PRIMARY KEY, node_id TEXT NOT NULL, value BLOB NOT NULL, "
        "created REAL NOT NULL)"
    ),
    # -- runs --
    "insert_run": (
        "INSERT INTO {p}runs (run_id, flow_id, flow_ref, status, started, "
        "finished, blueprint_hash, definition, inputs, state, serializer, "
        "lease_owner, lease_expires) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    ),
    "select_run": (
        "SELECT run_id, flow_id, flow_ref, status, started, finished, "
        "blueprint_hash, definition, inputs, state "
        "FROM {p}runs WHERE run_id = ?"
    ),
    "select_runs": (
        "SELECT run_id, flow_id, flow_ref, status, started, finished, "
        "blueprint_hash, definition, inputs, state "
        "FROM {p}runs ORDER BY started, run_id"
    ),
    "select_flow_runs": (
        "SELECT run_id, flow_id, flow_ref, status, started, finished, "
        "blueprint_hash, definition, inputs, state "
        "FROM {p}runs WHERE flow_id = ? ORDER BY started, run_id"
    ),
    "reopen_run": (
        "UPDATE {p}runs SET status = 'running', finished = NULL, flow_ref = ?, "
        "blueprint_hash = ?, definition = ? WHERE run_id = ?"
    ),
    "set_state": "UPDATE {p}runs SET state = ? WHERE run_id = ?",
    "set_status": "UPDATE {p}runs SET status = ?, finished = ? WHERE run_id = ?",
    "select_lease": ("SELECT lease_owner, lease_expires FROM {p}runs WHERE run_id = ?"),
    "set_lease": (
        "UPDATE {p}runs SET lease_owner = ?, lease_expires = ? WHERE run_id = ?"
    ),
    "release_lease": (
        "UPDATE {p}runs SET lease_owner = NULL, lease_expires = NULL "
        "WHERE run_id = ? AND lease_owner = ?"
    ),
    # -- outcomes --
    "upsert_outcome": (
        "INSERT INTO {p}outcomes (run_id, node_id, item_index, status, "
        "attempts, value, error_type, error, action, started, finished) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (run_id, node_id, item_index) DO UPDATE SET "
        "status = excluded.status, attempts = excluded.attempts, "
        "value = excluded.value, error_type = excluded.error_type, "
        "error = excluded.error, action = excluded.action, "
        "started = excluded.started, finished = excluded.finished "
        "WHERE {p}outcomes.status != 'completed'"
    ),
    "select_outcomes": (
        "SELECT node_id, item_index, status, attempts, value, error_type, "
        "error, action, started, finished "
        "FROM {p}outcomes WHERE run_id = ? ORDER BY rowid"
    ),
    "delete_outcomes": "DELETE FROM {p}outcomes WHERE run_id = ? AND node_id = ?",
    # -- events --
    "insert_event": (
        "INSERT OR IGNORE INTO {p}events (run_id, seq, kind, node_id, "
        "item_index, attempt, time, data) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    ),
    "select_events": (
        "SELECT seq, kind, node_id, item_index, attempt, time, data "
        "FROM {p}events WHERE run_id = ? ORDER BY seq"
    ),
    # -- cache --
    "cache_get": "SELECT value FROM {p}cache WHERE key = ?",
    "cache_put": (
        "INSERT OR IGNORE INTO {p}cache (key, node_id, value, created) "
        "VALUES (?, ?, ?, ?)"
    ),
}

#: Per schema version, the templates that bring a file from the version
#: before it up to that version.
_MIGRATIONS: Final[Mapping[int, tuple[str, ...]]] = {
    1: ("v1_runs", "v1_runs_index", "v1_outcomes", "v1_events", "v1_cache"),
}


def _statements(prefix: str) -> dict[str, str]:
    """Every statement, for one validated table prefix: the only place SQL is built.

    Args:
        prefix: A table prefix that passed `_check_prefix`.

    Returns:
        The statements by template name.
    """
    return {name: _TEMPLATES[name].format(p=prefix) for name in _TEMPLATES}


def _check_prefix(prefix: object) -> str:
    if not isinstance(prefix, str) or _PREFIX.fullmatch(prefix) is None:
        raise DefinitionError(
            f"SqliteStore(table_prefix={prefix!r}) is not a valid table prefix; "
            "use 1 to 31 ASCII letters, digits and underscores, not starting "
            "with a digit."
        )
    if prefix.lower().startswith("sqlite_"):
        raise DefinitionError(
            f"SqliteStore(table_prefix={prefix!r}): names starting with "
            "'sqlite_' are reserved by SQLite; choose another prefix."
        )
    return prefix


def _check_synchronous(synchronous: object) -> str:
    value = synchronous.upper() if isinstance(synchronous, str) else ""
    if value not in _SYNCHRONOUS:
        allowed = ", ".join(repr(s) for s in _SYNCHRONOUS)
        raise DefinitionError(
            f"SqliteStore(synchronous={synchronous!r}) is not a SQLite "
            f"synchronous mode; use one of {allowed}."
        )
    return value


def _check_lease(lease: object) -> float | None:
    if lease is None:
        return None
    if isinstance(lease, bool) or not isinstance(lease, (int, float)) or not lease > 0:
        raise DefinitionError(
            f"SqliteStore(lease={lease!r}) must be a number of seconds > 0, or "
            "None for no leases."
        )
    return float(lease)


def _check_timeout(timeout: object) -> float:
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or not timeout >= 0
    ):
        raise DefinitionError(
            f"SqliteStore(timeout={timeout!r}) must be a number of seconds >= 0."
        )
    return float(timeout)


def _check_path(path: str | os.PathLike[str]) -> Path:
    text = os.fspath(path)
    if not isinstance(text, str) or text in ("", ":memory:"):
        raise DefinitionError(
            f"SqliteStore(path={path!r}) must name a file; use MemoryStore for "
            "a store that lives in memory."
        )
    return Path(text)


def _use_wal(conn: sqlite3.Connection, timeout: float) -> None:
    """Switch the file to WAL mode, waiting up to `timeout` for other processes.

    SQLite does not call its busy handler when two connections switch a new
    file's journal mode at once (one of them would deadlock), so a process
    that loses the race retries here until the winner is done.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn.execute(_JOURNAL_WAL)
            return
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(0.005)


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    if code is not None:
        return code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)
    return "database is locked" in str(exc)


def _definition_json(definition: Mapping[str, Any]) -> str:
    return json.dumps(dict(definition), sort_keys=True)


def _run_record(row: Sequence[Any]) -> RunRecord:
    return RunRecord(
        run_id=row[0],
        flow_id=row[1],
        flow_ref=row[2],
        status=row[3],
        started=row[4],
        finished=row[5],
        blueprint_hash=row[6],
        definition=json.loads(row[7]),
        inputs=bytes(row[8]),
        state=None if row[9] is None else bytes(row[9]),
    )


def _outcome(row: Sequence[Any]) -> Outcome:
    return Outcome(
        node_id=row[0],
        item_index=None if row[1] == _WHOLE_NODE else row[1],
        status=row[2],
        attempts=row[3],
        value=None if row[4] is None else bytes(row[4]),
        error_type=row[5],
        error=row[6],
        action=row[7],
        started=row[8],
        finished=row[9],
    )


def _outcome_params(run_id: str, o: Outcome) -> tuple[Any, ...]:
    if o.item_index is not None and o.item_index < 0:
        raise ValueError(
            f"outcome of node {o.node_id!r} has item_index {o.item_index!r}; "
            "batch item indexes start at 0."
        )
    index = _WHOLE_NODE if o.item_index is None else o.item_index
    return (
        run_id,
        o.node_id,
        index,
        o.status,
        o.attempts,
        o.value,
        o.error_type,
        o.error,
        o.action,
        o.started,
        o.finished,
    )


def _event_params(run_id: str, e: EventRow) -> tuple[Any, ...]:
    return (run_id, e.seq, e.kind, e.node_id, e.item_index, e.attempt, e.time, e.data)


class SqliteStore(Store):
    """Records runs in a SQLite file: durable, and shared safely by processes.

    Each method is one transaction: a crash leaves every `commit` either
    fully written or not at all. Leases are taken inside the write
    transaction, so when several processes begin or resume the same run,
    exactly one gets it and the others get `RunLocked`. The file is opened in
    WAL mode (if its filesystem cannot do WAL, SQLite keeps its rollback
    journal). A store is safe to use from any thread; use it as a context
    manager, or call `close()`, to close the file.

    On open the tables are created if absent, and a file written by an older
    flowdsl is migrated to the current schema.

    Args:
        path: The database file; created if missing. `":memory:"` is
            refused: use `MemoryStore` for a store in memory.
        serializer: Encodes values; `JsonSerializer()` by default.
        lease: Seconds a run's lease lasts without renewal (None: no leases).
        synchronous: SQLite's `synchronous` mode: `"FULL"` (the default:
            a commit survives power loss), `"EXTRA"`, `"NORMAL"` (faster; a
            commit may be lost on power loss, never corrupted) or `"OFF"`.
        table_prefix: Prepended to every table name, so several stores can
            share one file: 1 to 31 ASCII letters, digits and underscores.
        timeout: Seconds to wait for another process's write lock before
            raising `sqlite3.OperationalError`.

    Raises:
        DefinitionError: An option is invalid, or the file was written by a
            newer flowdsl (its schema version is higher than this one knows).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        serializer: Serializer | None = None,
        lease: float | None = 30.0,
        synchronous: str = "FULL",
        table_prefix: str = "flowdsl_",
        timeout: float = 10.0,
    ) -> None:
        self._path = _check_path(path)
        self.serializer: Serializer = serializer or JsonSerializer()
        self.lease = _check_lease(lease)
        self._synchronous = _check_synchronous(synchronous)
        self._prefix = _check_prefix(table_prefix)
        wait = _check_timeout(timeout)
        self._sql = _statements(self._prefix)
        self._lock = threading.Lock()
        try:
            self._conn: sqlite3.Connection | None = sqlite3.connect(
                str(self._path),
                timeout=wait,
                isolation_level=None,  # transactions are begun explicitly
                check_same_thread=False,  # guarded by self._lock instead
            )
        except sqlite3.Error as exc:
            raise FlowdslError(
                f"SqliteStore cannot open {str(self._path)!r}: {exc}; check that "
                "its folder exists and that this process may write there."
            ) from exc
        assert self._conn is not None
        try:
            self._conn.execute(_SYNCHRONOUS[self._synchronous])
            _use_wal(self._conn, wait)
            self._migrate()
        except BaseException:
            self._conn.close()
            self._conn = None
            raise
        # A store dropped without close() still closes its file when collected.
        weakref.finalize(self, self._conn.close)

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    @property
    def table_prefix(self) -> str:
        """The prefix of this store's table names."""
        return self._prefix

    # -- the Store protocol -------------------------------------------------

    def begin(self, record: RunRecord, owner: str, now: float) -> RunRecord:
        """Create the run, or reopen it if it exists; either way take its lease.

        A reopened run keeps its id, inputs, start time and state; its status
        becomes `"running"`, and it takes the definition (`flow_ref`,
        `blueprint_hash`, `definition`) of `record`, which the caller has
        checked against the stored one (a None `flow_ref` keeps the stored
        one).

        Args:
            record: The run to create.
            owner: Who takes the lease.
            now: The current Unix time.

        Returns:
            The run as stored.

        Raises:
            RunLocked: Another owner holds an unexpired lease on the run.
        """
        with self._transaction(_BEGIN_WRITE) as conn:
            stored = self._select_run(conn, record.run_id)
            if stored is None:
                self._insert_run(conn, record, owner, now)
                return record
            self._take_lease(conn, record.run_id, owner, now)
            reopened = attrs.evolve(
                stored,
                status="running",
                finished=None,
                flow_ref=record.flow_ref or stored.flow_ref,
                blueprint_hash=record.blueprint_hash,
                definition=record.definition,
            )
            params = (
                reopened.flow_ref,
                reopened.blueprint_hash,
                _definition_json(reopened.definition),
                record.run_id,
            )
            conn.execute(self._sql["reopen_run"], params)
            return reopened

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

        An outcome for a key that already has a `"completed"` outcome is
        ignored; an event whose `seq` is already stored is ignored. A
        `status` other than `"running"` also sets `finished` and releases
        the lease.

        Args:
            run_id: The run.
            owner: The lease holder.
            now: The current Unix time.
            outcomes: Outcomes to record.
            events: Events to record.
            status: The run's new status, if it changes.
            state: The run's new pause state, if it changes.

        Raises:
            RunLocked: The lease was lost to another owner meanwhile.
            KeyError: There is no such run.
        """
        outcome_rows = [_outcome_params(run_id, o) for o in outcomes]
        event_rows = [_event_params(run_id, e) for e in events]
        with self._transaction(_BEGIN_WRITE) as conn:
            if self._select_run(conn, run_id) is None:
                raise KeyError(f"no run {run_id!r} in this store")
            self._take_lease(conn, run_id, owner, now, renew_only=True)
            conn.executemany(self._sql["upsert_outcome"], outcome_rows)
            conn.executemany(self._sql["insert_event"], event_rows)
            if state is not None:
                conn.execute(self._sql["set_state"], (state, run_id))
            if status is not None:
                finished = None if status == "running" else now
                conn.execute(self._sql["set_status"], (status, finished, run_id))
                if status != "running":
                    conn.execute(self._sql["set_lease"], (None, None, run_id))

    def release(self, run_id: str, owner: str) -> None:
        """Give up the lease, if `owner` still holds it.

        Args:
            run_id: The run.
            owner: Who gives the lease up.
        """
        with self._transaction(_BEGIN_WRITE) as conn:
            conn.execute(self._sql["release_lease"], (run_id, owner))

    def load(self, run_id: str) -> RunDetails | None:
        """The run and its outcomes, or None if there is no such run.

        Args:
            run_id: The run.

        Returns:
            The run with every outcome, or None.
        """
        with self._transaction(_BEGIN_READ) as conn:
            record = self._select_run(conn, run_id)
            if record is None:
                return None
            rows = conn.execute(self._sql["select_outcomes"], (run_id,))
            return RunDetails(record, tuple(_outcome(row) for row in rows))

    def runs(self, flow_id: str | None = None) -> list[RunRecord]:
        """Every run (of one flow, if given), oldest first.

        Args:
            flow_id: Only this flow's runs, if given.

        Returns:
            The runs, by start time (then run id).
        """
        with self._transaction(_BEGIN_READ) as conn:
            if flow_id is None:
                rows = conn.execute(self._sql["select_runs"])
            else:
                rows = conn.execute(self._sql["select_flow_runs"], (flow_id,))
            return [_run_record(row) for row in rows]

    def get_run(self, run_id: str) -> RunDetails:
        """The run with its per-node and per-item outcomes.

        Args:
            run_id: The run.

        Returns:
            The run with every outcome.

        Raises:
            KeyError: There is no such run.
        """
        details = self.load(run_id)
        if details is None:
            raise KeyError(f"no run {run_id!r} in this store")
        return details

    def events(self, run_id: str) -> list[EventRow]:
        """The run's events, in `seq` order.

        Args:
            run_id: The run.

        Returns:
            Its events (none for an unknown run).
        """
        with self._transaction(_BEGIN_READ) as conn:
            rows = conn.execute(self._sql["select_events"], (run_id,))
            return [EventRow(*row) for row in rows]

    def cache_get(self, key: str) -> bytes | None:
        """A cached output, or None.

        Args:
            key: The cache key.

        Returns:
            The stored value, or None.
        """
        with self._transaction(_BEGIN_READ) as conn:
            row = conn.execute(self._sql["cache_get"], (key,)).fetchone()
            return None if row is None else bytes(row[0])

    def cache_put(self, entry: CacheEntry) -> None:
        """Remember an output under its key (the first one stored wins).

        Args:
            entry: The output and its key.
        """
        params = (entry.key, entry.node_id, entry.value, time.time())
        with self._transaction(_BEGIN_WRITE) as conn:
            conn.execute(self._sql["cache_put"], params)

    def delete_outcomes(self, run_id: str, node_ids: Sequence[str]) -> None:
        """Forget what was recorded for these nodes (and their items), so a
        resume runs them again.

        Args:
            run_id: The run.
            node_ids: The nodes to forget.
        """
        params = [(run_id, node_id) for node_id in node_ids]
        with self._transaction(_BEGIN_WRITE) as conn:
            conn.executemany(self._sql["delete_outcomes"], params)

    # -- lifetime -----------------------------------------------------------

    def close(self) -> None:
        """Close the file; calling it again does nothing."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        closed = " (closed)" if self._conn is None else ""
        return f"<SqliteStore {str(self._path)!r}{closed}>"

    # -- helpers ------------------------------------------------------------

    @contextlib.contextmanager
    def _transaction(self, begin: str) -> Iterator[sqlite3.Connection]:
        """Hold the lock and run the block in one transaction, rolled back on
        any error."""
        with self._lock:
            conn = self._conn
            if conn is None:
                raise FlowdslError(
                    f"{self!r} is closed; open a new SqliteStore to use the file."
                )
            conn.execute(begin)
            try:
                yield conn
                conn.execute(_COMMIT)
            except BaseException:
                if conn.in_transaction:
                    conn.execute(_ROLLBACK)
                raise

    def _migrate(self) -> None:
        """Create the tables, or bring an older file up to `SCHEMA_VERSION`."""
        with self._transaction(_BEGIN_WRITE) as conn:
            conn.execute(self._sql["create_meta"])
            row = conn.execute(self._sql["get_version"], (_VERSION_KEY,)).fetchone()
            found = 0 if row is None else row[0]
            if not isinstance(found, int) or found < 0:
                raise DefinitionError(
                    f"{str(self._path)!r} holds {self._prefix}meta with schema "
                    f"version {found!r}, which is not a flowdsl schema version; "
                    "use another file or table_prefix."
                )
            if found > SCHEMA_VERSION:
                raise DefinitionError(
                    f"{str(self._path)!r} was written by a newer flowdsl (schema "
                    f"version {found}; this flowdsl knows up to {SCHEMA_VERSION}); "
                    "upgrade flowdsl to open it."
                )
            for version in range(found + 1, SCHEMA_VERSION + 1):
                for name in _MIGRATIONS[version]:
                    conn.execute(self._sql[name])
                conn.execute(self._sql["set_version"], (_VERSION_KEY, version))

    def _select_run(self, conn: sqlite3.Connection, run_id: str) -> RunRecord | None:
        row = conn.execute(self._sql["select_run"], (run_id,)).fetchone()
        return None if row is None else _run_record(row)

    def _insert_run(
        self, conn: sqlite3.Connection, record: RunRecord, owner: str, now: float
    ) -> None:
        held: tuple[str | None, float | None] = (None, None)
        if self.lease is not None:
            held = (owner, now + self.lease)
        definition = _definition_json(record.definition)
        params = (
            record.run_id,
            record.flow_id,
            record.flow_ref,
            record.status,
            record.started,
            record.finished,
            record.blueprint_hash,
            definition,
            record.inputs,
            record.state,
            self.serializer.name,
            *held,
        )
        conn.execute(self._sql["insert_run"], params)

    def _take_lease(
        self,
        conn: sqlite3.Connection,
        run_id: str,
        owner: str,
        now: float,
        *,
        renew_only: bool = False,
    ) -> None:
        """Take (or renew) the lease; with `renew_only`, `owner` must hold it."""
        if self.lease is None:
            return
        row = conn.execute(self._sql["select_lease"], (run_id,)).fetchone()
        if row is not None:
            held_by, expires = row
            if renew_only and held_by != owner:  # lost: taken over, or released
                raise RunLocked(run_id, held_by or "nobody", expires or now)
            if held_by is not None and held_by != owner and expires > now:
                raise RunLocked(run_id, held_by, expires)
        conn.execute(self._sql["set_lease"], (owner, now + self.lease, run_id))
