"""Run stores: MemoryStore and SqliteStore record runs the same way; SqliteStore
is durable, shared safely by threads and processes, and builds SQL only from
constants."""

from __future__ import annotations

import ast
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Iterator, cast

import attrs
import pytest

import flowdsl
from flowdsl.exceptions import DefinitionError, FlowdslError, RunLocked
from flowdsl.store import (
    CacheEntry,
    EventRow,
    MemoryStore,
    Outcome,
    RunRecord,
    SqliteStore,
    Store,
    _sqlite,
)

T0 = 1_000.0
LEASE = 30.0

StoreFactory = Callable[..., Store]


def make_record(run_id: str = "r1", **changes: Any) -> RunRecord:
    record = RunRecord(
        run_id=run_id,
        flow_id="flow",
        flow_ref="pkg.mod:flow",
        status="running",
        started=T0,
        finished=None,
        blueprint_hash="abc123",
        definition={"a": {"spec": {"kind": "node"}, "code": "h1"}, "b": {"x": [1]}},
        inputs=b'{"n":1}',
    )
    return attrs.evolve(record, **changes)


def done(node_id: str, item_index: int | None = None, value: bytes = b"1") -> Outcome:
    return Outcome(node_id, item_index, "completed", value=value, finished=T0)


def failed(node_id: str, item_index: int | None = None, attempts: int = 1) -> Outcome:
    return Outcome(
        node_id,
        item_index,
        "failed",
        attempts=attempts,
        error_type="ValueError",
        error="boom",
    )


def event(seq: int, kind: str = "node_started") -> EventRow:
    return EventRow(seq, kind, "a", None, 1, T0 + seq, f'{{"seq": {seq}}}')


@pytest.fixture
def make_store(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[StoreFactory]:
    """Builds stores of the kind the test is parametrized with; closes them."""
    kind = getattr(request, "param", "sqlite")
    opened: list[SqliteStore] = []

    def factory(**options: Any) -> Store:
        options.setdefault("lease", LEASE)
        if kind == "memory":
            return MemoryStore(**options)
        store = SqliteStore(tmp_path / f"runs{len(opened)}.db", **options)
        opened.append(store)
        return store

    yield factory
    for store in opened:
        store.close()


both_kinds = pytest.mark.parametrize(
    "make_store", ["memory", "sqlite"], indirect=True, ids=["memory", "sqlite"]
)


@pytest.fixture
def store(make_store: StoreFactory) -> Store:
    """One store with 30-second leases."""
    return make_store()


@pytest.fixture
def db(tmp_path: Path) -> Iterator[SqliteStore]:
    """A SqliteStore on a fresh file."""
    with SqliteStore(tmp_path / "runs.db") as store:
        yield store


def tables(path: Path) -> set[str]:
    rows = query(path, "SELECT name FROM sqlite_master WHERE type = 'table'")
    return {row[0] for row in rows}


def query(path: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(str(path))
    try:
        return list(conn.execute(sql, params))
    finally:
        conn.close()


def execute(path: Path, *statements: str) -> None:
    conn = sqlite3.connect(str(path), isolation_level=None)
    try:
        for sql in statements:
            conn.execute(sql)
    finally:
        conn.close()


# -- behaviour both stores share ----------------------------------------------


@both_kinds
class TestBegin:
    """`begin` creates a run, or reopens it keeping what was stored."""

    def test_a_store_implements_the_protocol(self, store: Store) -> None:
        assert isinstance(store, Store)

    def test_a_new_run_is_stored_as_given(self, store: Store) -> None:
        record = make_record()
        assert record == store.begin(record, "me", T0)
        assert record == store.get_run("r1").record
        assert () == store.get_run("r1").outcomes

    def test_the_definition_loads_back_as_a_dict(self, store: Store) -> None:
        store.begin(make_record(), "me", T0)
        definition = store.get_run("r1").record.definition
        assert make_record().definition == definition
        assert isinstance(definition, dict)

    def test_reopening_keeps_the_run_and_takes_the_definition(
        self, store: Store
    ) -> None:
        store.begin(make_record(), "me", T0)
        store.commit("r1", "me", T0 + 5, status="failed", state=b"paused")
        assert "failed" == store.get_run("r1").record.status
        assert T0 + 5 == store.get_run("r1").record.finished

        changed = {"a": {"spec": {"kind": "node"}, "code": "h2"}}
        other = make_record(
            flow_id="ignored",
            flow_ref="pkg.moved:flow",
            status="ignored",
            started=T0 + 9,
            finished=T0 + 9,
            blueprint_hash="def456",
            definition=changed,
            inputs=b"[]",
            state=b"ignored",
        )
        reopened = store.begin(other, "me", T0 + 10)

        expected = make_record(
            flow_ref="pkg.moved:flow",
            blueprint_hash="def456",
            definition=changed,
            state=b"paused",
        )
        assert expected == reopened
        assert expected == store.get_run("r1").record

    def test_reopening_without_a_flow_ref_keeps_the_stored_one(
        self, store: Store
    ) -> None:
        store.begin(make_record(), "me", T0)
        reopened = store.begin(make_record(flow_ref=None), "me", T0 + 1)
        assert "pkg.mod:flow" == reopened.flow_ref
        assert "pkg.mod:flow" == store.get_run("r1").record.flow_ref


@both_kinds
class TestCommit:
    """`commit` writes outcomes, events, state and status as one group."""

    def test_outcomes_are_recorded(self, store: Store) -> None:
        store.begin(make_record(), "me", T0)
        a = done("a", value=b'"x"')
        b0, b1 = done("b", 0), failed("b", 1, attempts=3)
        store.commit("r1", "me", T0 + 1, [a, b0, b1])
        details = store.get_run("r1")
        assert a == details.node("a")
        assert [b0, b1] == details.items("b")
        assert details.node("b") is None

    def test_state_is_set_and_kept(self, store: Store) -> None:
        store.begin(make_record(), "me", T0)
        store.commit("r1", "me", T0, state=b"one")
        store.commit("r1", "me", T0)
        assert b"one" == store.get_run("r1").record.state

    def test_a_final_status_sets_finished(self, store: Store) -> None:
        store.begin(make_record(), "me", T0)
        store.commit("r1", "me", T0 + 7, status="completed")
        record = store.get_run("r1").record
        assert ("completed", T0 + 7) == (record.status, record.finished)
        with pytest.raises(RunLocked):  # the lease went with the end
            store.commit("r1", "me", T0 + 8, status="running")
        store.begin(make_record(), "me", T0 + 8)  # reopening takes it again
        record = store.get_run("r1").record
        assert ("running", None) == (record.status, record.finished)

    def test_an_unknown_run_is_a_key_error(self, store: Store) -> None:
        with pytest.raises(KeyError):
            store.commit("nope", "me", T0, [done("a")])


@both_kinds
class TestExactlyOnce:
    """The first completed outcome of a key is final; others are replaced."""

    def test_a_second_completed_outcome_is_ignored(self, store: Store) -> None:
        store.begin(make_record(), "me", T0)
        store.commit("r1", "me", T0, [done("a", value=b"1")])
        store.commit("r1", "me", T0, [done("a", value=b"2")])
        assert done("a", value=b"1") == store.get_run("r1").node("a")
        assert 1 == len(store.get_run("r1").outcomes)

    def test_failed_is_replaced_by_completed(self, store: Store) -> None:
        store.begin(make_record(), "me", T0)
        store.commit("r1", "me", T0, [failed("a", attempts=1)])
        store.commit("r1", "me", T0, [failed("a", attempts=2)])
        assert failed("a", attempts=2) == store.get_run("r1").node("a")
        store.commit("r1", "me", T0, [done("a")])
        assert done("a") == store.get_run("r1").node("a")

    def test_completed_is_not_replaced_by_failed(self, store: Store) -> None:
        store.begin(make_record(), "me", T0)
        store.commit("r1", "me", T0, [done("a", 3)])
        store.commit("r1", "me", T0, [failed("a", 3)])
        assert [done("a", 3)] == store.get_run("r1").items("a")

    def test_within_one_group_the_first_completed_wins(self, store: Store) -> None:
        store.begin(make_record(), "me", T0)
        store.commit("r1", "me", T0, [done("a", value=b"1"), done("a", value=b"2")])
        assert done("a", value=b"1") == store.get_run("r1").node("a")

    def test_the_whole_node_and_item_zero_are_distinct(self, store: Store) -> None:
        store.begin(make_record(), "me", T0)
        store.commit("r1", "me", T0, [done("a", None, b"whole"), done("a", 0, b"0")])
        details = store.get_run("r1")
        assert done("a", None, b"whole") == details.node("a")
        assert [done("a", 0, b"0")] == details.items("a")


@both_kinds
class TestEvents:
    """Events come back in `seq` order; a stored `seq` is not stored twice."""

    def test_events_come_back_in_seq_order(self, store: Store) -> None:
        store.begin(make_record(), "me", T0)
        store.commit("r1", "me", T0, events=[event(2), event(0)])
        store.commit("r1", "me", T0, events=[event(1)])
        assert [event(0), event(1), event(2)] == store.events("r1")

    def test_a_duplicate_seq_is_ignored(self, store: Store) -> None:
        store.begin(make_record(), "me", T0)
        store.commit("r1", "me", T0, events=[event(0), event(1)])
        store.commit("r1", "me", T0, events=[event(1, "again"), event(2)])
        assert [event(0), event(1), event(2)] == store.events("r1")

    def test_an_unknown_run_has_no_events(self, store: Store) -> None:
        assert [] == store.events("nope")

    def test_events_of_runs_are_kept_apart(self, store: Store) -> None:
        store.begin(make_record("r1"), "me", T0)
        store.begin(make_record("r2"), "me", T0)
        store.commit("r1", "me", T0, events=[event(0)])
        store.commit("r2", "me", T0, events=[event(0, "other")])
        assert [event(0)] == store.events("r1")
        assert [event(0, "other")] == store.events("r2")


@both_kinds
class TestLeases:
    """One owner at a time: a lease lasts `lease` seconds unless renewed."""

    def test_another_owner_is_locked_out(self, store: Store) -> None:
        store.begin(make_record(), "a", T0)
        with pytest.raises(RunLocked) as caught:
            store.begin(make_record(), "b", T0 + LEASE - 1)
        assert ("r1", "a", T0 + LEASE) == (
            caught.value.run_id,
            caught.value.owner,
            caught.value.expires,
        )

    def test_an_expired_lease_can_be_taken(self, store: Store) -> None:
        store.begin(make_record(), "a", T0)
        store.begin(make_record(), "b", T0 + LEASE)
        with pytest.raises(RunLocked):
            store.begin(make_record(), "a", T0 + LEASE + 1)

    def test_the_owner_may_begin_again(self, store: Store) -> None:
        store.begin(make_record(), "a", T0)
        store.begin(make_record(), "a", T0 + 1)

    def test_commit_renews_the_lease(self, store: Store) -> None:
        store.begin(make_record(), "a", T0)
        store.commit("r1", "a", T0 + 20)
        with pytest.raises(RunLocked):
            store.begin(make_record(), "b", T0 + 40)
        store.begin(make_record(), "b", T0 + 50)

    def test_an_owner_who_lost_the_lease_cannot_commit(self, store: Store) -> None:
        store.begin(make_record(), "a", T0)
        store.begin(make_record(), "b", T0 + LEASE + 1)
        with pytest.raises(RunLocked) as caught:
            store.commit("r1", "a", T0 + LEASE + 2, [done("x")])
        assert "b" == caught.value.owner
        assert store.get_run("r1").node("x") is None

    def test_a_final_status_releases_the_lease(self, store: Store) -> None:
        store.begin(make_record(), "a", T0)
        store.commit("r1", "a", T0 + 1, status="completed")
        store.begin(make_record(), "b", T0 + 2)
        assert "running" == store.get_run("r1").record.status

    def test_running_status_keeps_the_lease(self, store: Store) -> None:
        store.begin(make_record(), "a", T0)
        store.commit("r1", "a", T0 + 1, status="running")
        with pytest.raises(RunLocked):
            store.begin(make_record(), "b", T0 + 2)

    def test_release_needs_the_owner(self, store: Store) -> None:
        store.begin(make_record(), "a", T0)
        store.release("r1", "b")
        with pytest.raises(RunLocked):
            store.begin(make_record(), "b", T0 + 1)
        store.release("r1", "a")
        store.begin(make_record(), "b", T0 + 1)

    def test_no_leases_when_lease_is_none(self, make_store: StoreFactory) -> None:
        store = make_store(lease=None)
        store.begin(make_record(), "a", T0)
        store.begin(make_record(), "b", T0)
        store.commit("r1", "a", T0, [done("x")])
        assert done("x") == store.get_run("r1").node("x")


@both_kinds
class TestQueries:
    """Runs are listed oldest first; unknown runs are reported clearly."""

    def test_runs_are_listed_oldest_first(self, store: Store) -> None:
        store.begin(make_record("late", started=T0 + 2), "me", T0)
        store.begin(make_record("early", started=T0), "me", T0)
        store.begin(make_record("other", flow_id="g", started=T0 + 1), "me", T0)
        assert ["early", "other", "late"] == [r.run_id for r in store.runs()]
        assert ["early", "late"] == [r.run_id for r in store.runs("flow")]
        assert ["other"] == [r.run_id for r in store.runs("g")]
        assert [] == store.runs("nothing")

    def test_an_unknown_run(self, store: Store) -> None:
        assert store.load("nope") is None
        with pytest.raises(KeyError, match="nope"):
            store.get_run("nope")

    def test_delete_outcomes_forgets_nodes_and_their_items(self, store: Store) -> None:
        store.begin(make_record(), "me", T0)
        kept = done("keep")
        store.commit("r1", "me", T0, [done("a"), done("b", 0), done("b", 1), kept])
        store.delete_outcomes("r1", ["a", "b", "never-ran"])
        assert (kept,) == store.get_run("r1").outcomes
        store.commit("r1", "me", T0, [done("a", value=b"again")])
        assert done("a", value=b"again") == store.get_run("r1").node("a")

    def test_delete_outcomes_of_an_unknown_run_does_nothing(self, store: Store) -> None:
        store.delete_outcomes("nope", ["a"])


@both_kinds
class TestCache:
    """The first output cached under a key wins."""

    def test_first_stored_wins(self, store: Store) -> None:
        assert store.cache_get("k") is None
        store.cache_put(CacheEntry("k", "a", b"first"))
        store.cache_put(CacheEntry("k", "a", b"second"))
        assert b"first" == store.cache_get("k")


# -- SqliteStore only ----------------------------------------------------------


class TestSqliteFile:
    """The file is durable, in WAL mode, and readable by other instances."""

    def test_another_instance_sees_the_data(self, tmp_path: Path) -> None:
        path = tmp_path / "runs.db"
        with SqliteStore(path) as first:
            first.begin(make_record(), "a", T0)
            first.commit("r1", "a", T0, [done("x")], [event(0)], state=b"s")
            first.cache_put(CacheEntry("k", "x", b"v"))
            with SqliteStore(str(path)) as second:
                assert first.get_run("r1") == second.get_run("r1")
                with pytest.raises(RunLocked):
                    second.begin(make_record(), "b", T0 + 1)
        with SqliteStore(path) as reopened:
            assert make_record(state=b"s") == reopened.get_run("r1").record
            assert done("x") == reopened.get_run("r1").node("x")
            assert [event(0)] == reopened.events("r1")
            assert b"v" == reopened.cache_get("k")

    def test_the_journal_is_wal(self, db: SqliteStore) -> None:
        assert [("wal",)] == query(db.path, "PRAGMA journal_mode")

    @pytest.mark.parametrize(
        ("option", "level"), [("FULL", 2), ("NORMAL", 1), ("OFF", 0), ("extra", 3)]
    )
    def test_synchronous_is_set(self, tmp_path: Path, option: str, level: int) -> None:
        with SqliteStore(tmp_path / "runs.db", synchronous=option) as store:
            conn = store._conn
            assert conn is not None
            assert (level,) == conn.execute("PRAGMA synchronous").fetchone()

    @pytest.mark.parametrize("bad", ["fast", "FULL; DROP TABLE x", "", 2, None])
    def test_a_bad_synchronous_is_refused(self, tmp_path: Path, bad: Any) -> None:
        with pytest.raises(DefinitionError, match="synchronous="):
            SqliteStore(tmp_path / "runs.db", synchronous=bad)
        assert not (tmp_path / "runs.db").exists()

    @pytest.mark.parametrize(
        ("option", "value"),
        [
            ("lease", 0),
            ("lease", -1),
            ("lease", "30"),
            ("lease", True),
            ("timeout", -1),
            ("timeout", float("nan")),
            ("timeout", None),
        ],
    )
    def test_bad_numbers_are_refused(
        self, tmp_path: Path, option: str, value: Any
    ) -> None:
        with pytest.raises(DefinitionError, match=f"{option}="):
            SqliteStore(tmp_path / "runs.db", **{option: value})

    @pytest.mark.parametrize("path", [":memory:", ""])
    def test_memory_is_refused(self, path: str) -> None:
        with pytest.raises(DefinitionError, match="MemoryStore"):
            SqliteStore(path)

    def test_integrity_check_is_ok(self, db: SqliteStore) -> None:
        db.begin(make_record(), "a", T0)
        for i in range(20):
            db.commit("r1", "a", T0, [done("b", i), failed("c", i)], [event(i)])
        db.delete_outcomes("r1", ["c"])
        assert [("ok",)] == query(db.path, "PRAGMA integrity_check")

    def test_a_failed_commit_writes_nothing(self, db: SqliteStore) -> None:
        db.begin(make_record(), "a", T0)
        unbindable = cast(bytes, object())
        with pytest.raises(sqlite3.Error):
            db.commit(
                "r1",
                "a",
                T0 + 20,
                [done("x"), done("y", value=unbindable)],
                [event(0)],
                status="completed",
            )
        details = db.get_run("r1")
        assert () == details.outcomes
        assert [] == db.events("r1")
        assert "running" == details.record.status
        with pytest.raises(RunLocked) as caught:  # the lease was not renewed
            db.begin(make_record(), "b", T0 + 1)
        assert T0 + LEASE == caught.value.expires
        db.commit("r1", "a", T0 + 2, [done("x")])  # and the store goes on
        assert done("x") == db.get_run("r1").node("x")

    def test_a_negative_item_index_is_refused(self, db: SqliteStore) -> None:
        db.begin(make_record(), "a", T0)
        with pytest.raises(ValueError, match="item_index"):
            db.commit("r1", "a", T0, [done("x", -1)])

    def test_close_and_context_manager(self, tmp_path: Path) -> None:
        path = tmp_path / "runs.db"
        with SqliteStore(path) as store:
            assert path == store.path
            assert f"<SqliteStore {str(path)!r}>" == repr(store)
        assert f"<SqliteStore {str(path)!r} (closed)>" == repr(store)
        store.close()  # again: nothing happens
        with pytest.raises(FlowdslError, match="closed"):
            store.runs()

    def test_stores_with_other_prefixes_share_a_file(self, tmp_path: Path) -> None:
        path = tmp_path / "runs.db"
        with SqliteStore(path) as one, SqliteStore(path, table_prefix="B2_") as two:
            one.begin(make_record("r1"), "a", T0)
            two.begin(make_record("r2"), "a", T0)
            assert ["r1"] == [r.run_id for r in one.runs()]
            assert ["r2"] == [r.run_id for r in two.runs()]
            assert "B2_" == two.table_prefix
        assert {"B2_runs", "flowdsl_runs", "B2_meta"} <= tables(path)

    def test_values_are_bound_not_spliced(self, db: SqliteStore) -> None:
        hostile = "x'); DROP TABLE flowdsl_runs; --"
        db.begin(make_record(hostile, flow_id=hostile), hostile, T0)
        db.commit(hostile, hostile, T0, [done(hostile)], [event(0, hostile)])
        assert hostile == db.get_run(hostile).record.flow_id
        assert done(hostile) == db.get_run(hostile).node(hostile)
        assert [hostile] == [r.run_id for r in db.runs(hostile)]
        assert "flowdsl_runs" in tables(db.path)


HOSTILE_PREFIXES = [
    "x; DROP TABLE y",
    "a b",
    "1abc",
    "é",
    "",
    "a" * 40,
    'x"',
    "x--",
    "x/*",
    "runs)",
    "x\n",
    "x'",
    "x.y",
    "sqlite_",
    "SQLITE_x",
    "{p}",
    None,
    b"flowdsl_",
]


class TestTablePrefix:
    """Only plain identifiers make table names; anything else is refused."""

    @pytest.mark.parametrize("prefix", HOSTILE_PREFIXES)
    def test_hostile_prefixes_are_refused(self, tmp_path: Path, prefix: Any) -> None:
        path = tmp_path / "runs.db"
        with pytest.raises(DefinitionError) as caught:
            SqliteStore(path, table_prefix=prefix)
        assert "table_prefix" in str(caught.value)
        assert repr(prefix) in str(caught.value)
        assert not path.exists()

    @pytest.mark.parametrize("prefix", ["_", "a", "x1_", "A" * 31, "run_log_"])
    def test_plain_prefixes_work(self, tmp_path: Path, prefix: str) -> None:
        with SqliteStore(tmp_path / "runs.db", table_prefix=prefix) as store:
            store.begin(make_record(), "a", T0)
            assert 1 == len(store.runs())
        assert f"{prefix}outcomes" in tables(tmp_path / "runs.db")


class TestSchema:
    """The schema is versioned: older files are migrated, newer ones refused."""

    def test_a_new_file_is_at_the_current_version(self, db: SqliteStore) -> None:
        assert 1 == _sqlite.SCHEMA_VERSION
        version = "SELECT value FROM flowdsl_meta WHERE key = 'schema_version'"
        assert [(1,)] == query(db.path, version)
        names = {"meta", "runs", "outcomes", "events", "cache"}
        assert {f"flowdsl_{name}" for name in names} == tables(db.path)

    def test_a_newer_file_is_refused(self, tmp_path: Path) -> None:
        path = tmp_path / "runs.db"
        SqliteStore(path).close()
        execute(path, "UPDATE flowdsl_meta SET value = 2")
        with pytest.raises(DefinitionError, match="upgrade flowdsl"):
            SqliteStore(path)

    @pytest.mark.parametrize("value", ["'one'", "-1", "1.5"])
    def test_a_strange_version_is_refused(self, tmp_path: Path, value: str) -> None:
        path = tmp_path / "runs.db"
        SqliteStore(path).close()
        execute(path, f"UPDATE flowdsl_meta SET value = {value}")
        with pytest.raises(DefinitionError, match="schema version"):
            SqliteStore(path)

    def test_a_version_0_file_is_migrated(self, tmp_path: Path) -> None:
        path = tmp_path / "runs.db"
        execute(
            path,
            "CREATE TABLE flowdsl_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
            "INSERT INTO flowdsl_meta VALUES ('schema_version', 0)",
            "CREATE TABLE unrelated (x)",
        )
        with SqliteStore(path) as store:
            store.begin(make_record(), "a", T0)
        assert [(1,)] == query(path, "SELECT value FROM flowdsl_meta")
        assert "unrelated" in tables(path)

    def test_migrations_run_in_order_and_keep_data(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        path = tmp_path / "runs.db"
        with SqliteStore(path) as store:
            store.begin(make_record(), "a", T0)
            store.commit("r1", "a", T0, [done("x")])

        templates = dict(_sqlite._TEMPLATES)
        templates["v2_note"] = "ALTER TABLE {p}runs ADD COLUMN note TEXT"
        templates["v2_fill"] = "UPDATE {p}runs SET note = 'migrated'"
        migrations = dict(_sqlite._MIGRATIONS)
        migrations[2] = ("v2_note", "v2_fill")
        monkeypatch.setattr(_sqlite, "_TEMPLATES", templates)
        monkeypatch.setattr(_sqlite, "_MIGRATIONS", migrations)
        monkeypatch.setattr(_sqlite, "SCHEMA_VERSION", 2)
        with SqliteStore(path) as store:
            assert done("x") == store.get_run("r1").node("x")
        with SqliteStore(path) as store:  # at version 2 now: nothing runs again
            pass
        assert [("migrated",)] == query(path, "SELECT note FROM flowdsl_runs")
        assert [(2,)] == query(path, "SELECT value FROM flowdsl_meta")

        monkeypatch.undo()
        with pytest.raises(DefinitionError, match="upgrade flowdsl"):
            SqliteStore(path)

    def test_a_failed_migration_changes_nothing(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        path = tmp_path / "runs.db"
        SqliteStore(path).close()
        templates = dict(_sqlite._TEMPLATES, v2_bad="ALTER TABLE {p}nowhere ADD x")
        migrations = dict(_sqlite._MIGRATIONS)
        migrations[2] = ("v2_bad",)
        monkeypatch.setattr(_sqlite, "_TEMPLATES", templates)
        monkeypatch.setattr(_sqlite, "_MIGRATIONS", migrations)
        monkeypatch.setattr(_sqlite, "SCHEMA_VERSION", 2)
        with pytest.raises(sqlite3.OperationalError):
            SqliteStore(path)
        assert [(1,)] == query(path, "SELECT value FROM flowdsl_meta")


EXECUTE_METHODS = {"execute", "executemany", "executescript"}


def _module_constants(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for statement in tree.body:
        if isinstance(statement, ast.Assign):
            targets = statement.targets
        elif isinstance(statement, ast.AnnAssign):
            targets = [statement.target]
        else:
            continue
        names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


def _subscript_key(node: ast.Subscript) -> ast.AST:
    key: Any = node.slice
    if type(key).__name__ == "Index":  # Python 3.8 wraps the key in ast.Index
        key = key.value
    return cast(ast.AST, key)


def _is_prebuilt(node: ast.AST) -> bool:
    """A string constant, a name, an attribute, or a lookup in a name or an
    attribute by a name, an attribute or a string: never SQL assembled where
    it is run."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, ast.Name):
        return True
    if isinstance(node, ast.Attribute):
        return _is_prebuilt(node.value)
    if isinstance(node, ast.Subscript):
        key = _subscript_key(node)
        simple_key = isinstance(key, (ast.Name, ast.Attribute)) or (
            isinstance(key, ast.Constant) and isinstance(key.value, str)
        )
        return simple_key and isinstance(node.value, (ast.Name, ast.Attribute))
    return False


class TestSqlSafety:
    """SQL is only ever run from statements prebuilt out of constants."""

    tree = ast.parse(Path(_sqlite.__file__).read_text(encoding="utf-8"))

    def calls(self, methods: set[str]) -> list[ast.Call]:
        return [
            node
            for node in ast.walk(self.tree)
            if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in methods
        ]

    def test_every_execute_gets_a_prebuilt_statement(self) -> None:
        calls = self.calls(EXECUTE_METHODS)
        assert len(calls) >= 15
        for call in calls:
            where = f"line {call.lineno}: {ast.dump(call)}"
            assert call.args, where
            assert _is_prebuilt(call.args[0]), where
            assert all(k.arg != "sql" for k in call.keywords), where

    def test_format_is_only_applied_to_module_templates(self) -> None:
        constants = _module_constants(self.tree)
        calls = self.calls({"format"})
        assert 1 == len(calls)
        for call in calls:
            receiver = cast(ast.Attribute, call.func).value
            if isinstance(receiver, ast.Subscript):
                receiver = receiver.value
            assert isinstance(receiver, ast.Name), ast.dump(call)
            assert receiver.id in constants, receiver.id
            assert [] == call.args
            assert ["p"] == [k.arg for k in call.keywords]

    def test_templates_are_plain_string_constants(self) -> None:
        for statement in self.tree.body:
            if not isinstance(statement, ast.AnnAssign):
                continue
            target = statement.target
            if isinstance(target, ast.Name) and target.id == "_TEMPLATES":
                templates = statement.value
                break
        else:
            pytest.fail("no _TEMPLATES in the module")
        assert isinstance(templates, ast.Dict)
        for value in templates.values:
            assert isinstance(value, ast.Constant), ast.dump(value)
            assert isinstance(value.value, str)

    def test_no_sql_is_built_with_percent_or_f_strings(self) -> None:
        keywords = ("SELECT", "INSERT", "UPDATE", "DELETE", "CREATE", "PRAGMA", "DROP")
        for node in ast.walk(self.tree):
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod):
                assert not isinstance(node.left, ast.Constant), ast.dump(node)
            if isinstance(node, ast.JoinedStr):
                text = "".join(
                    str(v.value) for v in node.values if isinstance(v, ast.Constant)
                )
                assert not any(k in text for k in keywords), text


class TestConcurrency:
    """Threads share one store; processes race for a lease and one wins."""

    def test_commits_from_four_threads_all_land(self, db: SqliteStore) -> None:
        db.begin(make_record(), "me", T0)
        start = threading.Barrier(4)
        errors: list[BaseException] = []

        def work(thread: int) -> None:
            try:
                start.wait(5)
                for i in range(25):
                    seq = thread * 100 + i
                    db.commit("r1", "me", T0, [done(f"n{thread}", i)], [event(seq)])
                    db.load("r1")
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert [] == errors
        details = db.get_run("r1")
        assert 100 == len(details.outcomes)
        for thread in range(4):
            assert list(range(25)) == [
                o.item_index for o in details.items(f"n{thread}")
            ]
        assert sorted(t * 100 + i for t in range(4) for i in range(25)) == [
            e.seq for e in db.events("r1")
        ]

    def test_two_processes_race_and_exactly_one_begins(self, tmp_path: Path) -> None:
        path = tmp_path / "runs.db"
        code = RACE.format(record=repr(attrs.asdict(make_record(), recurse=False)))
        root = str(Path(flowdsl.__file__).resolve().parents[1])
        children = [
            subprocess.Popen(
                [sys.executable, "-c", code, str(path), owner],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                cwd=root,
            )
            for owner in ("p1", "p2")
        ]
        try:
            for child in children:  # both have opened the file
                assert child.stdout is not None
                ready = child.stdout.readline()
                assert "READY\n" == ready, ready or cast(Any, child.stderr).read()
            for child in children:
                assert child.stdin is not None
                child.stdin.write("go\n")
                child.stdin.flush()
            outputs = [child.communicate(timeout=30) for child in children]
        finally:
            for child in children:
                if child.poll() is None:  # pragma: no cover - only on failure
                    child.kill()
                    child.wait()
        assert [0, 0] == [child.returncode for child in children], outputs
        said = [out.strip() for out, _ in outputs]
        assert 1 == said.count("BEGUN"), outputs
        winner, loser = ("p1", 1) if "BEGUN" == said[0] else ("p2", 0)
        assert f"LOCKED {winner}" == said[loser], outputs
        lease = query(path, "SELECT lease_owner, lease_expires FROM flowdsl_runs")
        assert [(winner, T0 + LEASE)] == lease


RACE = """
import sys
from flowdsl.exceptions import RunLocked
from flowdsl.store import RunRecord, SqliteStore

path, owner = sys.argv[1], sys.argv[2]
record = RunRecord(**{record})
with SqliteStore(path, lease=30.0) as store:
    print("READY", flush=True)
    sys.stdin.readline()
    try:
        store.begin(record, owner, 1000.0)
    except RunLocked as exc:
        print("LOCKED", exc.owner, flush=True)
    else:
        print("BEGUN", flush=True)
"""
