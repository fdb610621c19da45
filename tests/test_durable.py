"""Durable runs: recording, resume, definitions, caching, pauses and history.

Every behaviour runs on both faces through the `runner` fixture, against a
`MemoryStore` (the crash and kill -9 tests in test_crash.py use SQLite).
"""

from __future__ import annotations

import asyncio
import json
import pickle
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import flowdsl as fd
from flowdsl.store import MemoryStore, SerializationError

from . import durable_flows
from .conftest import Runner

ROOT = Path(__file__).resolve().parent.parent


class Boom(Exception):
    """A planned failure."""


def counting_store() -> tuple[MemoryStore, list[int]]:
    """A MemoryStore that counts its commits (rows per commit)."""
    store = MemoryStore()
    commits: list[int] = []
    original = store.commit

    def commit(
        run_id: str, owner: str, now: float, outcomes: Any = (), *a: Any, **k: Any
    ) -> None:
        commits.append(len(outcomes))
        original(run_id, owner, now, outcomes, *a, **k)

    store.commit = commit  # type: ignore[method-assign]
    return store, commits


class TestRecording:
    """What a run writes to its store."""

    def test_every_node_and_item_is_recorded_once(self, runner: Runner) -> None:
        store = MemoryStore()
        result = runner.run(
            durable_flows.squares_flow, {"count": 5}, store=store, run_id="r"
        )
        assert 30 == result["total"]
        details = store.get_run("r")
        assert "completed" == details.record.status
        assert [0, 1, 4, 9, 16] == [
            store.serializer.loads(o.value) for o in details.items("square")
        ]
        assert [0, 1, 2, 3, 4] == [o.item_index for o in details.items("square")]
        for item in details.items("square"):
            assert item.started is not None
            assert item.finished is not None
            assert item.started <= item.finished
        keys = Counter((o.node_id, o.item_index) for o in details.outcomes)
        assert {1} == set(keys.values())
        total = details.node("total")
        assert total is not None
        assert 30 == store.serializer.loads(total.value)
        assert total.started is not None
        assert total.finished is not None
        assert total.started <= total.finished

    def test_run_record(self, runner: Runner) -> None:
        store = MemoryStore()
        runner.run(durable_flows.squares_flow, {"count": 3}, store=store, run_id="r")
        (record,) = store.runs()
        assert ("r", "squares", "completed") == (
            record.run_id,
            record.flow_id,
            record.status,
        )
        assert "tests.durable_flows:squares_flow" == record.flow_ref
        assert {"count": 3} == store.serializer.loads(record.inputs)
        assert record.finished is not None
        assert record.started <= record.finished
        assert {"numbers", "square", "total"} == set(record.definition)
        assert 64 == len(record.blueprint_hash)

    def test_events_are_recorded_with_increasing_seq(self, runner: Runner) -> None:
        store = MemoryStore()
        runner.run(durable_flows.squares_flow, {"count": 3}, store=store, run_id="r")
        events = store.events("r")
        seqs = [e.seq for e in events]
        assert sorted(set(seqs)) == seqs
        assert 1 == seqs[0]
        assert "batch_progress" not in {e.kind for e in events}
        assert {"node_start", "node_finish"} <= {e.kind for e in events}
        assert "run_start" == events[0].kind
        assert "run_finish" == events[-1].kind
        assert {"status": "completed"} == json.loads(events[-1].data)

    def test_default_group_commit_and_commit_every(self, runner: Runner) -> None:
        @fd.node
        def items() -> list[int]:
            return list(range(200))

        @fd.batch(input=items, output="out", inline=True)
        def work(item: int) -> int:
            return item

        flow = fd.Flow("many", [items, work])
        store, commits = counting_store()
        runner.run(flow, store=store)
        grouped, grouped_commits = sum(commits), len(commits)
        store, commits = counting_store()
        runner.run(flow, store=store, commit_every=100)
        assert grouped == sum(commits)  # the same rows ...
        assert len(commits) < grouped_commits  # ... in fewer commits
        assert len(commits) <= 4

    def test_commit_every_needs_a_store_and_a_sane_value(self, runner: Runner) -> None:
        flow = durable_flows.squares_flow
        with pytest.raises(fd.DefinitionError, match="needs a store"):
            runner.run(flow, {"count": 1}, commit_every=10)
        for bad in (0, -1, True, 0.0, float("nan"), "10", (10,), (10, "x"), (10, 0)):
            with pytest.raises(fd.DefinitionError, match="commit_every"):
                runner.run(flow, {"count": 1}, store=MemoryStore(), commit_every=bad)

    def test_inputs_that_cannot_be_stored(self, runner: Runner) -> None:
        @fd.node
        def f(x: object) -> int:
            return 1

        with pytest.raises(fd.DefinitionError) as info:
            runner.run(fd.Flow("t", [f]), {"x": threading.Lock()}, store=MemoryStore())
        assert str(info.value).startswith("flow 't': inputs['x'] is a lock, ")

    def test_not_a_store_is_rejected(self, runner: Runner) -> None:
        with pytest.raises(fd.DefinitionError, match="store must be"):
            runner.run(durable_flows.squares_flow, {"count": 1}, store="runs.db")


class TestUnserializable:
    """An output the serializer cannot store fails its node, naming it."""

    def test_node_output(self, runner: Runner) -> None:
        lock = threading.Lock()

        @fd.node
        def make() -> Any:
            return {"ok": 1, "lock": lock}

        store = MemoryStore()
        result = runner.run(
            fd.Flow("bad", [make]), store=store, run_id="r", check=False
        )
        assert "failed" == result.status
        (error,) = result.errors
        assert isinstance(error.exception, SerializationError)
        message = str(error.exception)
        assert "'make'" in message
        assert "lock" in message
        outcome = store.get_run("r").node("make")
        assert outcome is not None
        assert "failed" == outcome.status
        assert outcome.value is None

    def test_batch_item_output(self, runner: Runner) -> None:
        @fd.node
        def items() -> list[int]:
            return [1, 2, 3]

        @fd.batch(input=items, output="out", on_error="skip")
        def work(item: int) -> Any:
            return object() if item == 2 else item

        store = MemoryStore()
        result = runner.run(fd.Flow("bad", [items, work]), store=store, run_id="r")
        assert [1, 3] == result["out"]
        (error,) = result.errors
        assert 1 == error.item_index
        assert "item 1" in str(error.exception)
        assert "object" in str(error.exception)

    def test_default_path_never_unpickles(
        self, runner: Runner, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        def refuse(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError("pickle.loads called")

        monkeypatch.setattr(pickle, "loads", refuse)
        store = MemoryStore()
        flow = durable_flows.squares_flow
        runner.run(flow, {"count": 4}, store=store, run_id="r")
        result = runner.resume(flow, "r", store=store)
        assert 14 == result["total"]


class TestResume:
    """Recorded nodes and items never run again; attempt numbers go on."""

    def test_a_failed_run_resumes_where_it_failed(self, runner: Runner) -> None:
        calls: list[str] = []
        broken = [True]

        @fd.node
        def a() -> int:
            calls.append("a")
            return 1

        @fd.node
        def b(a: int) -> int:
            calls.append("b")
            if broken[0]:
                raise Boom("down")
            return a + 1

        @fd.node
        def c(b: int) -> int:
            calls.append("c")
            return b * 10

        flow = fd.Flow("chain", [a, b, c])
        store = MemoryStore()
        first = runner.run(flow, store=store, run_id="r", check=False)
        assert "failed" == first.status
        assert "failed" == store.get_run("r").record.status
        broken[0] = False
        calls.clear()
        second = runner.resume(flow, "r", store=store)
        assert ("completed", 20) == (second.status, second["c"])
        assert ["b", "c"] == calls
        outcome = store.get_run("r").node("b")
        assert outcome is not None
        assert 2 == outcome.attempts

    def test_attempt_numbers_continue_across_resumes(self, runner: Runner) -> None:
        seen: list[int] = []

        @fd.node(retries=1)
        def flaky(ctx: fd.Context) -> int:
            seen.append(ctx.attempt)
            if ctx.attempt < 4:
                raise Boom(ctx.attempt)
            return ctx.attempt

        flow = fd.Flow("flaky", [flaky])
        store = MemoryStore()
        assert "failed" == runner.run(flow, store=store, run_id="r", check=False).status
        assert [1, 2] == seen
        # The retry budget is spent: each resume gives one more attempt.
        again = runner.resume(flow, "r", store=store, check=False)
        assert ("failed", [1, 2, 3]) == (again.status, seen)
        assert 3 == again.errors[0].attempts
        result = runner.resume(flow, "r", store=store)
        assert [1, 2, 3, 4] == seen
        assert 4 == result["flaky"]

    def test_batch_items_recorded_before_a_failure_do_not_run_again(
        self, runner: Runner
    ) -> None:
        calls: Counter[int] = Counter()
        lock = threading.Lock()
        broken = [True]

        @fd.node
        def items() -> list[int]:
            return list(range(50))

        @fd.batch(input=items, output="out", concurrency=4)
        def work(item: int) -> int:
            with lock:
                calls[item] += 1
            if item == 30 and broken[0]:
                raise Boom(item)
            return item * 2

        flow = fd.Flow("partial", [items, work])
        store = MemoryStore()
        assert "failed" == runner.run(flow, store=store, run_id="r", check=False).status
        recorded = {
            o.item_index
            for o in store.get_run("r").items("work")
            if o.status == "completed"
        }
        assert recorded
        assert 30 not in recorded
        broken[0] = False
        result = runner.resume(flow, "r", store=store)
        assert [i * 2 for i in range(50)] == result["out"]
        assert all(1 == calls[i] for i in recorded)
        assert set(range(50)) == set(calls)
        rows = Counter(o.item_index for o in store.get_run("r").items("work"))
        assert {1} == set(rows.values())

    def test_a_completed_run_resumes_without_running_anything(
        self, runner: Runner
    ) -> None:
        calls: list[int] = []

        @fd.node
        def once() -> int:
            calls.append(1)
            return 7

        flow = fd.Flow("once", [once])
        store = MemoryStore()
        runner.run(flow, store=store, run_id="r")
        again = runner.run(flow, store=store, run_id="r")  # the same id: resumed
        assert (7, [1]) == (again["once"], calls)

    def test_inputs_of_a_stored_run_cannot_change(self, runner: Runner) -> None:
        store = MemoryStore()
        flow = durable_flows.squares_flow
        runner.run(flow, {"count": 2}, store=store, run_id="r")
        with pytest.raises(fd.DefinitionError, match="other values for 'count'"):
            runner.run(flow, {"count": 3}, store=store, run_id="r")

    def test_unknown_run_id(self, runner: Runner) -> None:
        with pytest.raises(fd.DefinitionError, match="no run 'nope'"):
            runner.resume(durable_flows.squares_flow, "nope", store=MemoryStore())

    def test_a_run_id_without_a_store(self, runner: Runner) -> None:
        with pytest.raises(fd.DefinitionError, match="needs the store"):
            runner.resume(durable_flows.squares_flow, "r")

    def test_a_cancelled_run_resumes_to_the_same_output(self, runner: Runner) -> None:
        token = fd.CancelToken()
        calls: Counter[int] = Counter()

        @fd.node
        def items() -> list[int]:
            return list(range(20))

        @fd.batch(input=items, output="out", concurrency=2)
        def work(item: int) -> int:
            calls[item] += 1
            if item == 5:
                token.cancel()
            return item + 100

        flow = fd.Flow("cancel", [items, work])
        store = MemoryStore()
        first = runner.run(flow, store=store, run_id="r", cancel=token, check=False)
        assert "cancelled" == first.status
        assert "cancelled" == store.get_run("r").record.status
        recorded = {o.item_index for o in store.get_run("r").items("work")}
        assert 5 not in recorded  # it finished after the cancel: not recorded
        result = runner.resume(flow, "r", store=store)
        assert [i + 100 for i in range(20)] == result["out"]
        twice = {i for i, n in calls.items() if n > 1}
        assert 5 in twice
        assert set() == twice & recorded  # nothing recorded ran twice

    def test_fd_resume_imports_the_flow(self) -> None:
        store = MemoryStore()
        durable_flows.squares_flow.run({"count": 4}, store=store, run_id="r")
        store.delete_outcomes("r", ["total"])
        result = fd.resume("r", store=store)
        assert 14 == result["total"]

    def test_fd_resume_without_a_reference(self) -> None:
        @fd.node
        def local() -> int:
            return 1

        store = MemoryStore()
        fd.Flow("local", [local]).run(store=store, run_id="r")
        with pytest.raises(fd.DefinitionError, match="importable"):
            fd.resume("r", store=store)

    def test_events_number_on_after_a_resume(self, runner: Runner) -> None:
        store = MemoryStore()
        flow = durable_flows.squares_flow
        runner.run(flow, {"count": 3}, store=store, run_id="r")
        store.delete_outcomes("r", ["total"])
        before = store.events("r")[-1].seq
        runner.resume(flow, "r", store=store)
        seqs = [e.seq for e in store.events("r")]
        assert sorted(set(seqs)) == seqs
        assert before + 1 == next(s for s in seqs if s > before)  # numbered on


class TestSubflows:
    def test_children_are_recorded_and_not_rerun(self, runner: Runner) -> None:
        calls: Counter[int] = Counter()
        broken = [True]

        @fd.node
        def double(x: int) -> int:
            calls[x] += 1
            return 2 * x

        child = fd.Flow("child", [double])

        @fd.node
        def nums() -> list[int]:
            return [1, 2, 3]

        each = fd.subflow(child, over=nums, item="x", id="each")

        @fd.node
        def total(each: list[int]) -> int:
            if broken[0]:
                raise Boom("not yet")
            return sum(each)

        flow = fd.Flow("parent", [nums, each, total])
        store = MemoryStore()
        assert "failed" == runner.run(flow, store=store, run_id="p", check=False).status
        assert ["p", "p/each[0]@", "p/each[1]@", "p/each[2]@"] == sorted(
            r.run_id.split("@")[0] + ("@" if "@" in r.run_id else "")
            for r in store.runs()
        )
        broken[0] = False
        assert 12 == runner.resume(flow, "p", store=store)["total"]
        assert {1: 1, 2: 1, 3: 1} == dict(calls)


class TestLeases:
    def test_a_run_held_by_another_owner_is_locked(self, runner: Runner) -> None:
        calls: list[int] = []

        @fd.node
        def work() -> int:
            calls.append(1)
            return 1

        flow = fd.Flow("locked", [work])
        store = MemoryStore(lease=30.0)
        runner.run(flow, store=store, run_id="r")
        held = store.get_run("r").record
        store.begin(held, "someone else", held.started + 10**9 - 10**9 + 1e12)
        with pytest.raises(fd.RunLocked, match="'r'"):
            runner.resume(flow, "r", store=store)
        assert [1] == calls

    def test_a_lost_lease_stops_the_run(self, runner: Runner) -> None:
        store = MemoryStore(lease=0.3)
        later: list[str] = []

        @fd.node
        def steal(ctx: fd.Context) -> int:
            record = store.get_run(ctx.run_id).record
            # Another process whose clock says the lease ran out takes it.
            store.begin(record, "thief", time.time() + 60)
            time.sleep(0.5)  # meanwhile the lease keeper finds it lost
            return 1

        @fd.node
        def after(steal: int) -> int:
            later.append("after")
            return steal

        flow = fd.Flow("stolen", [steal, after])
        with pytest.raises(fd.RunLocked, match="thief"):
            runner.run(flow, store=store, run_id="r")
        assert [] == later


class TestDefinitionChanged:
    """Resuming a run whose flow changed lists every difference."""

    @staticmethod
    def base() -> tuple[Any, Any, Any]:
        @fd.node
        def source() -> list[int]:
            return [1, 2, 3]

        @fd.node
        def other() -> list[int]:
            return [4, 5]

        @fd.batch(input=source, output="out")
        def work(item: int) -> int:
            return item + 1

        return source, other, work

    def stored(self) -> MemoryStore:
        source, other, work = self.base()

        @fd.node
        def total(out: list[int]) -> int:
            return sum(out)

        store = MemoryStore()
        fd.Flow("f", [source, other, work, total]).run(store=store, run_id="r")
        return store

    def test_edited_body(self, runner: Runner) -> None:
        store = self.stored()
        source, other, work = self.base()

        @fd.node
        def total(out: list[int]) -> int:
            return sum(out) * 2  # edited

        flow = fd.Flow("f", [source, other, work, total])
        with pytest.raises(fd.DefinitionChanged) as info:
            runner.resume(flow, "r", store=store)
        assert ("node 'total': its code changed",) == info.value.differences

    def test_renamed_node(self, runner: Runner) -> None:
        store = self.stored()
        source, other, work = self.base()

        @fd.node(id="sum_all")
        def total(out: list[int]) -> int:
            return sum(out)

        flow = fd.Flow("f", [source, other, work, total])
        with pytest.raises(fd.DefinitionChanged) as info:
            runner.resume(flow, "r", store=store)
        assert (
            "node 'sum_all' is new",
            "node 'total' was removed",
        ) == info.value.differences

    def test_removed_node(self, runner: Runner) -> None:
        store = self.stored()
        source, other, work = self.base()
        flow = fd.Flow("f", [source, other, work])
        with pytest.raises(fd.DefinitionChanged) as info:
            runner.resume(flow, "r", store=store)
        assert ("node 'total' was removed",) == info.value.differences
        assert "total" in str(info.value)

    def test_changed_batch_input(self, runner: Runner) -> None:
        store = self.stored()
        source, other, _ = self.base()

        @fd.batch(input=other, output="out")
        def work(item: int) -> int:
            return item + 1

        @fd.node
        def total(out: list[int]) -> int:
            return sum(out)

        flow = fd.Flow("f", [source, other, work, total])
        with pytest.raises(fd.DefinitionChanged) as info:
            runner.resume(flow, "r", store=store)
        (line,) = info.value.differences
        assert line.startswith("node 'work': ")
        assert "batch_input 'source' -> 'other'" in line

    def test_rerun_changed_runs_the_changed_node_and_its_dependents(
        self, runner: Runner
    ) -> None:
        store = self.stored()
        source, other, work = self.base()
        calls: list[str] = []

        @fd.node
        def total(out: list[int]) -> int:
            calls.append("total")
            return sum(out) * 2

        @fd.node
        def report(total: int) -> str:
            calls.append("report")
            return f"total {total}"

        flow = fd.Flow("f", [source, other, work, total, report])
        result = runner.resume(flow, "r", store=store, on_change="rerun_changed")
        assert ("total 18", ["total", "report"]) == (result["report"], calls)
        calls.clear()
        again = runner.resume(flow, "r", store=store)  # now recorded as it is
        assert ("total 18", []) == (again["report"], calls)


class TestCache:
    """`cache=True` reuses a stored output across runs."""

    def test_the_body_does_not_run_again(self, runner: Runner) -> None:
        calls: list[int] = []

        @fd.node(cache=True)
        def expensive(x: int) -> int:
            calls.append(x)
            return x * 10

        flow = fd.Flow("cached", [expensive])
        store = MemoryStore()
        assert 10 == runner.run(flow, {"x": 1}, store=store)["expensive"]
        assert 10 == runner.run(flow, {"x": 1}, store=store)["expensive"]
        assert 20 == runner.run(flow, {"x": 2}, store=store)["expensive"]
        assert [1, 2] == calls

    def test_changed_code_invalidates(self, runner: Runner) -> None:
        store = MemoryStore()

        @fd.node(cache=True, id="expensive")
        def first(x: int) -> int:
            return x * 10

        @fd.node(cache=True, id="expensive")
        def second(x: int) -> int:
            return x * 100

        assert (
            10 == runner.run(fd.Flow("c", [first]), {"x": 1}, store=store)["expensive"]
        )
        assert (
            100
            == runner.run(fd.Flow("c", [second]), {"x": 1}, store=store)["expensive"]
        )

    def test_cache_key(self, runner: Runner) -> None:
        calls: list[str] = []

        @fd.node(cache_key=lambda name: name.lower())
        def greet(name: str) -> str:
            calls.append(name)
            return f"hello {name.lower()}"

        flow = fd.Flow("greet", [greet])
        store = MemoryStore()
        runner.run(flow, {"name": "Ada"}, store=store)
        assert "hello ada" == runner.run(flow, {"name": "ADA"}, store=store)["greet"]
        assert ["Ada"] == calls

    def test_a_cached_batch(self, runner: Runner) -> None:
        calls: list[int] = []

        @fd.node
        def items() -> list[int]:
            return [1, 2, 3]

        @fd.batch(input=items, output="out", cache=True)
        def work(item: int) -> int:
            calls.append(item)
            return item * 2

        flow = fd.Flow("cb", [items, work])
        store = MemoryStore()
        runner.run(flow, store=store)
        assert [2, 4, 6] == runner.run(flow, store=store)["out"]
        assert [1, 2, 3] == sorted(calls)

    def test_no_store_no_cache(self, runner: Runner) -> None:
        calls: list[int] = []

        @fd.node(cache=True)
        def expensive() -> int:
            calls.append(1)
            return 1

        flow = fd.Flow("nocache", [expensive])
        runner.run(flow)
        runner.run(flow)
        assert [1, 1] == calls

    def test_bad_options(self) -> None:
        def one() -> int:
            return 1

        with pytest.raises(fd.DefinitionError, match="cache must be True or False"):
            fd.node(cache=1)(one)
        with pytest.raises(fd.DefinitionError, match="cache_key must be a callable"):
            fd.node(cache_key="x")(one)  # type: ignore[arg-type]


class TestPauses:
    def test_wait_resumed_by_run_id(self, runner: Runner) -> None:
        store = MemoryStore()
        flow = durable_flows.approval_flow
        paused = runner.run(flow, store=store, run_id="r")
        assert ("awaiting", ("approval",)) == (paused.status, paused.waiting_for)
        assert "awaiting" == store.get_run("r").record.status
        done = runner.resume(flow, "r", store=store, events={"approval": "yes"})
        assert "decided: yes" == done["decide"]

    def test_context_survives_the_pause(self, runner: Runner) -> None:
        @fd.node
        def remember(ctx: fd.Context) -> int:
            ctx.set("who", "ada")
            return 1

        gate = fd.wait_for("go", after=[remember])

        @fd.node
        def use(go: str, ctx: fd.Context) -> str:
            return f"{ctx.get('who')} {go}"

        flow = fd.Flow("ctx", [remember, gate, use])
        store = MemoryStore()
        runner.run(flow, store=store, run_id="r")
        assert (
            "ada now"
            == runner.resume(flow, "r", store=store, events={"go": "now"})["use"]
        )

    def test_durable_sleep_resumed_by_run_id(self, runner: Runner) -> None:
        nap = fd.sleep(0.3, id="nap", durable=True)

        @fd.node(after=[nap])
        def wake() -> str:
            return "awake"

        flow = fd.Flow("nap", [nap, wake])
        store = MemoryStore()
        paused = runner.run(flow, store=store, run_id="r")
        assert "awaiting" == paused.status
        assert paused.wake_at is not None
        early = runner.resume(flow, "r", store=store)
        assert ("awaiting", paused.wake_at) == (early.status, early.wake_at)
        time.sleep(max(0.0, paused.wake_at - time.time()) + 0.05)
        assert "awake" == runner.resume(flow, "r", store=store)["wake"]

    def test_across_processes(self, runner: Runner, tmp_path: Path) -> None:
        db = tmp_path / "runs.db"
        script = (
            "import asyncio, sys, flowdsl as fd\n"
            "from tests import durable_flows\n"
            "flow = durable_flows.approval_flow\n"
            "store = fd.SqliteStore(sys.argv[1])\n"
            "events = {'approval': 'ok'}\n"
            "if sys.argv[2] == 'start' and sys.argv[3] == 'sync':\n"
            "    r = flow.run(store=store, run_id='r')\n"
            "elif sys.argv[2] == 'start':\n"
            "    r = asyncio.run(flow.arun(store=store, run_id='r'))\n"
            "elif sys.argv[3] == 'sync':\n"
            "    r = fd.resume('r', store=store, events=events)\n"
            "else:\n"
            "    r = asyncio.run(flow.aresume('r', store=store, events=events))\n"
            "print(r.status, r.outputs.get('decide'))\n"
        )
        env = {"PYTHONPATH": str(ROOT), "PATH": ""}
        outputs = []
        for step in ("start", "finish"):
            done = subprocess.run(
                [sys.executable, "-c", script, str(db), step, runner.face],
                capture_output=True, text=True, env=env, cwd=ROOT, timeout=60,
            )  # fmt: skip
            assert 0 == done.returncode, done.stderr
            outputs.append(done.stdout.strip())
        assert ["awaiting None", "completed decided: ok"] == outputs


class TestEdges:
    """Corners where a resumed run could differ from an uninterrupted one."""

    def test_a_cached_batch_resumes_with_its_value(self, runner: Runner) -> None:
        broken = [False]

        @fd.node
        def items() -> list[int]:
            return [1, 2, 3]

        @fd.batch(input=items, output="out", cache=True)
        def work(item: int) -> int:
            return item * 2

        @fd.node
        def total(out: list[int]) -> int:
            if broken[0]:
                raise Boom("later")
            return sum(out)

        flow = fd.Flow("cb", [items, work, total])
        store = MemoryStore()
        runner.run(flow, store=store)  # fills the cache
        broken[0] = True
        assert "failed" == runner.run(flow, store=store, run_id="r", check=False).status
        broken[0] = False
        assert 12 == runner.resume(flow, "r", store=store)["total"]

    def test_a_routing_node_is_not_served_from_the_cache(self, runner: Runner) -> None:
        @fd.node(cache=True)
        def decide(x: int) -> fd.Action[int]:
            return fd.Action("big" if x > 5 else "small", x)

        @fd.node(on=(decide, "big"))
        def big(decide: int) -> str:
            return f"big {decide}"

        flow = fd.Flow("route", [decide, big])
        store = MemoryStore()
        first = runner.run(flow, {"x": 9}, store=store)
        second = runner.run(flow, {"x": 9}, store=store)
        assert first.outputs == second.outputs
        assert "big 9" == second["big"]

    def test_an_item_stopped_by_a_halt_gets_its_retry_on_resume(
        self, runner: Runner
    ) -> None:
        gate = threading.Event()
        broken = [True]

        @fd.node
        def items() -> list[int]:
            return [0, 1, 2, 3]

        @fd.batch(input=items, output="out", on_error="skip", retries=2)
        def work(item: int, ctx: fd.Context) -> int:
            if item == 2 and ctx.attempt == 1 and broken[0]:
                gate.wait(5)  # fail only once the run has halted
                raise Boom("transient")
            return item * 10

        @fd.node
        def other() -> int:
            try:
                raise Boom("elsewhere")
            finally:
                threading.Timer(0.2, gate.set).start()

        flow = fd.Flow("halt", [items, work, other])
        store = MemoryStore()
        first = runner.run(flow, store=store, run_id="r", check=False)
        assert "failed" == first.status
        broken[0] = False

        @fd.node
        def other() -> int:  # fixed
            return 1

        fixed = fd.Flow("halt", [items, work, other])
        result = runner.resume(fixed, "r", store=store, on_change="rerun_changed")
        assert [0, 10, 20, 30] == result["out"]

    def test_recorded_attempts_inside_a_chunk_go_on(self, runner: Runner) -> None:
        seen: dict[int, list[int]] = {}
        broken = [True]

        @fd.node
        def items() -> list[int]:
            return list(range(6))

        @fd.batch(input=items, output="out", chunk_size=6, retries=1)
        def work(item: int, ctx: fd.Context) -> int:
            seen.setdefault(item, []).append(ctx.attempt)
            if item == 3 and broken[0]:
                raise Boom("down")
            return item

        flow = fd.Flow("chunk", [items, work])
        store = MemoryStore()
        assert "failed" == runner.run(flow, store=store, run_id="r", check=False).status
        assert [1, 2] == seen[3]
        broken[0] = False
        result = runner.resume(flow, "r", store=store)
        assert list(range(6)) == result["out"]
        assert [1, 2, 3] == seen[3]  # on from the recorded attempts
        assert [1] == seen[0]

    def test_cancelling_the_awaiting_task_records_the_run(self) -> None:
        store = MemoryStore()
        started = threading.Event()

        @fd.node
        async def slow() -> int:
            started.set()
            await asyncio.sleep(10)
            return 1

        @fd.node
        def quick() -> int:
            return 2

        flow = fd.Flow("slow", [slow, quick])

        async def main() -> None:
            task = asyncio.ensure_future(
                flow.arun(store=store, run_id="r", commit_every=(100, 60.0))
            )
            while not started.is_set():
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(main())
        details = store.get_run("r")
        assert "cancelled" == details.record.status
        quick_outcome = details.node("quick")
        assert quick_outcome is not None
        assert "completed" == quick_outcome.status

    def test_an_escaping_exception_leaves_the_run_failed_and_free(
        self, runner: Runner
    ) -> None:
        @fd.node
        def leave() -> int:
            raise SystemExit(3)

        flow = fd.Flow("exit", [leave])
        store = MemoryStore()
        with pytest.raises(SystemExit):
            runner.run(flow, store=store, run_id="r")
        assert "failed" == store.get_run("r").record.status

        @fd.node(id="leave")
        def stay() -> int:
            return 4

        again = fd.Flow("exit", [stay])
        result = runner.resume(again, "r", store=store, on_change="rerun_changed")
        assert 4 == result["leave"]

    def test_a_raising_cache_key_fails_its_node(self, runner: Runner) -> None:
        @fd.node(cache_key=lambda x: x["missing"])
        def f(x: dict[str, int]) -> int:
            return 1

        store = MemoryStore()
        result = runner.run(
            fd.Flow("ck", [f]), {"x": {}}, store=store, run_id="r", check=False
        )
        (error,) = result.errors
        assert "node 'f': its cache_key raised KeyError('missing')" in str(
            error.exception
        )
        assert "failed" == store.get_run("r").record.status

    def test_bad_resume_options_take_no_lease(self, runner: Runner) -> None:
        store = MemoryStore()
        flow = durable_flows.approval_flow
        runner.run(flow, store=store, run_id="r")
        with pytest.raises(fd.DefinitionError, match="aproval"):
            runner.resume(flow, "r", store=store, events={"aproval": "yes"})
        with pytest.raises(fd.DefinitionError, match="concurrency"):
            runner.resume(flow, "r", store=store, concurrency=0)
        assert "awaiting" == store.get_run("r").record.status
        done = runner.resume(flow, "r", store=store, events={"approval": "yes"})
        assert "decided: yes" == done["decide"]

    def test_a_failing_listener_costs_no_event_row(self, runner: Runner) -> None:
        def broken(event: fd.Event) -> None:
            raise RuntimeError("listener bug")

        store = MemoryStore()
        runner.run(
            durable_flows.squares_flow, {"count": 2}, store=store, run_id="r",
            on_event=broken,
        )  # fmt: skip
        kinds = {e.kind for e in store.events("r")}
        assert {"run_start", "node_start", "node_finish", "run_finish"} <= kinds

    def test_a_rescued_output_is_not_cached(self, runner: Runner) -> None:
        calls: list[int] = []
        down = [True]

        @fd.node(cache=True, fallback=lambda error: -1)
        def fetch() -> int:
            calls.append(1)
            if down[0]:
                raise Boom("down")
            return 7

        flow = fd.Flow("rescue", [fetch])
        store = MemoryStore()
        assert -1 == runner.run(flow, store=store)["fetch"]
        down[0] = False
        assert 7 == runner.run(flow, store=store)["fetch"]
        assert [1, 1] == calls


class TestChangedShapes:
    """Changes that alter outputs without touching a node's own code."""

    def test_a_subflows_output_and_a_loops_condition(self, runner: Runner) -> None:
        @fd.node
        def a() -> int:
            return 1

        @fd.node
        def b() -> int:
            return 2

        child = fd.Flow("child", [a, b])
        store = MemoryStore()
        one = fd.Flow("p", [fd.subflow(child, id="sub", output="a")])
        runner.run(one, store=store, run_id="r")
        two = fd.Flow("p", [fd.subflow(child, id="sub", output="b")])
        with pytest.raises(fd.DefinitionChanged, match="output 'a' -> 'b'"):
            runner.resume(two, "r", store=store)

        @fd.node
        def step(n: int = 0) -> int:
            return n + 1

        body = fd.Flow("body", [step])
        loop_a = fd.loop(body, id="count", while_="step < 3", carry={"n": "step"})
        runner.run(fd.Flow("l", [loop_a]), store=store, run_id="l")
        loop_b = fd.loop(body, id="count", while_="step < 10", carry={"n": "step"})
        with pytest.raises(fd.DefinitionChanged, match="step < 10"):
            runner.resume(fd.Flow("l", [loop_b]), "l", store=store)

    def test_rerun_changed_gives_a_subflow_new_inputs(self, runner: Runner) -> None:
        @fd.node
        def double(x: int) -> int:
            return x * 2

        child = fd.Flow("child", [double])

        @fd.node
        def source() -> int:
            return 1

        sub = fd.subflow(child, id="sub", inputs={"x": "source"})
        store = MemoryStore()
        runner.run(fd.Flow("p", [source, sub]), store=store, run_id="r")

        @fd.node(id="source")
        def source_v2() -> int:
            return 2

        flow = fd.Flow("p", [source_v2, sub])
        result = runner.resume(flow, "r", store=store, on_change="rerun_changed")
        assert 4 == result["sub"]

    def test_rerun_changed_forgets_a_stale_action(self, runner: Runner) -> None:
        @fd.node
        def decide() -> fd.Action[int]:
            return fd.Action("big", 1)

        @fd.node(on=(decide, "big"))
        def big(decide: int) -> str:
            return f"big {decide}"

        store = MemoryStore()
        runner.run(fd.Flow("a", [decide, big]), store=store, run_id="r")

        @fd.node(id="decide")
        def plain() -> fd.Action[int]:
            return fd.Action("small", 1)

        @fd.node(id="big", on=(plain, "big"))
        def big2(decide: int) -> str:
            return f"big {decide}"

        flow = fd.Flow("a", [plain, big2])
        result = runner.resume(flow, "r", store=store, on_change="rerun_changed")
        assert "skipped" == result.node_status["big"]


class TestResumedReports:
    """A resumed run reports what happened before the resume too."""

    def test_a_rescued_node_stays_rescued(self, runner: Runner) -> None:
        broken = [True]

        @fd.node(fallback=lambda error: 0)
        def fetch() -> int:
            raise Boom("down")

        @fd.node
        def use(fetch: int) -> int:
            if broken[0]:
                raise Boom("later")
            return fetch + 1

        flow = fd.Flow("rescue", [fetch, use])
        store = MemoryStore()
        assert "failed" == runner.run(flow, store=store, run_id="r", check=False).status
        broken[0] = False
        result = runner.resume(flow, "r", store=store)
        assert 1 == result["use"]
        assert "rescued" == result.node_status["fetch"]
        (rescued,) = result.rescued
        assert "fetch" == rescued.node_id
        assert str(rescued.exception).endswith("Boom: down")

    def test_items_a_skip_batch_dropped_stay_reported(self, runner: Runner) -> None:
        broken = [True]

        @fd.node
        def items() -> list[int]:
            return [1, 2, 3]

        @fd.batch(input=items, output="out", on_error="skip")
        def work(item: int) -> int:
            if item == 2:
                raise Boom("two")
            return item

        @fd.node
        def total(out: list[int]) -> int:
            if broken[0]:
                raise Boom("later")
            return sum(out)

        flow = fd.Flow("skip", [items, work, total])
        store = MemoryStore()
        runner.run(flow, store=store, run_id="r", check=False)
        broken[0] = False
        result = runner.resume(flow, "r", store=store)
        assert 4 == result["total"]
        ((node, index, text),) = [
            (e.node_id, e.item_index, str(e.exception)) for e in result.errors
        ]
        assert ("work", 1) == (node, index)
        assert text.endswith("Boom: two")


class FlakyStore(MemoryStore):
    """A MemoryStore whose commits fail on demand."""

    def __init__(self, *, lease: float | None = 30.0) -> None:
        super().__init__(lease=lease)
        self.fail_final = 0  # final-status commits to fail
        self.fail_renewals = 0  # bare lease renewals to fail
        self.renewals = 0  # bare lease renewals that went through

    def commit(
        self,
        run_id: str,
        owner: str,
        now: float,
        outcomes: Any = (),
        events: Any = (),
        *,
        status: str | None = None,
        state: bytes | None = None,
    ) -> None:
        if status not in (None, "running") and self.fail_final:
            self.fail_final -= 1
            raise OSError("disk I/O error")
        renewal = not outcomes and not events and status is None
        if renewal and self.fail_renewals:
            self.fail_renewals -= 1
            raise OSError("database is locked")
        self.renewals += renewal
        super().commit(run_id, owner, now, outcomes, events, status=status, state=state)


class TestExits:
    """However a run ends, its store says so and its lease is free."""

    def test_a_failed_attempt_after_a_cancel_is_not_recorded(
        self, runner: Runner
    ) -> None:
        token = fd.CancelToken()

        @fd.node
        def items() -> list[int]:
            return [0, 1]

        @fd.batch(input=items, output="out", on_error="skip")
        def work(item: int, ctx: fd.Context) -> int:
            if item == 0:
                token.cancel()
                if ctx.attempt == 1:
                    raise Boom("fails once, whether cancelled or not")
            return item + 100

        flow = fd.Flow("late", [items, work])
        reference = runner.run(flow, store=MemoryStore())["out"]
        store = MemoryStore()
        first = runner.run(flow, store=store, run_id="r", cancel=token, check=False)
        assert "cancelled" == first.status
        assert [] == [o for o in store.get_run("r").items("work") if o.item_index == 0]
        token = fd.CancelToken()  # the resume is not cancelled
        assert reference == runner.resume(flow, "r", store=store)["out"]

    def test_a_failing_final_commit_still_frees_the_run(self, runner: Runner) -> None:
        @fd.node
        def a() -> int:
            return 1

        flow = fd.Flow("final", [a])
        store = FlakyStore()
        store.fail_final = 1
        with pytest.raises(OSError, match="disk I/O"):
            runner.run(flow, store=store, run_id="r")
        assert "completed" == store.get_run("r").record.status
        assert 1 == runner.resume(flow, "r", store=store)["a"]

    def test_a_failed_reopen_puts_the_run_back(
        self, runner: Runner, tmp_path: Path
    ) -> None:
        import attrs

        from flowdsl.store import JsonSerializer

        @attrs.frozen
        class Point:
            x: int

        @fd.node
        def origin() -> Point:
            return Point(0)

        @fd.node
        def fail(origin: Point) -> int:
            raise Boom("down")

        flow = fd.Flow("reopen", [origin, fail])
        typed = fd.SqliteStore(
            tmp_path / "r.db", serializer=JsonSerializer(types=[Point])
        )
        runner.run(flow, store=typed, run_id="r", check=False)
        plain = fd.SqliteStore(tmp_path / "r.db")
        with pytest.raises(SerializationError):
            runner.resume(flow, "r", store=plain)
        assert "failed" == typed.get_run("r").record.status
        again = runner.resume(flow, "r", store=typed, check=False)  # not locked
        assert "failed" == again.status
        typed.close()
        plain.close()

    def test_a_store_hiccup_does_not_lose_the_lease(self, runner: Runner) -> None:
        @fd.node
        def slow() -> int:
            time.sleep(1.0)  # a renewal every 0.2 s: the first one fails
            return 1

        store = FlakyStore(lease=0.6)
        store.fail_renewals = 1
        result = runner.run(fd.Flow("hiccup", [slow]), store=store, run_id="r")
        assert ("completed", 1) == (result.status, result["slow"])
        assert 0 == store.fail_renewals
        assert store.renewals >= 1  # the keeper went on after the failure

    def test_a_twice_cancelled_task_is_recorded_cancelled(self) -> None:
        @fd.node
        def slow() -> int:
            time.sleep(0.4)
            return 1

        @fd.node
        async def other() -> int:
            await asyncio.sleep(5)
            return 2

        flow = fd.Flow("twice", [slow, other])
        store = MemoryStore()

        async def main() -> None:
            task = asyncio.ensure_future(flow.arun(store=store, run_id="r"))
            await asyncio.sleep(0.1)
            task.cancel()
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(main())
        assert "cancelled" == store.get_run("r").record.status
        time.sleep(0.4)  # the abandoned thread ends

    def test_an_inline_node_raising_on_a_cancel(self, runner: Runner) -> None:
        token = fd.CancelToken()

        @fd.node
        def work(ctx: fd.Context) -> int:
            token.cancel()
            if ctx.cancelled:
                raise RuntimeError("stopped: cancelled")
            return 1

        store = MemoryStore()
        with pytest.raises(fd.FlowCancelled):
            runner.run(fd.Flow("inl", [work]), store=store, run_id="r", cancel=token)
        assert "cancelled" == store.get_run("r").record.status


class TestMessages:
    def test_a_store_in_a_missing_folder(self, tmp_path: Path) -> None:
        with pytest.raises(fd.FlowdslError, match="check that its folder exists"):
            fd.SqliteStore(tmp_path / "missing" / "runs.db")

    def test_run_locked_says_how_long_and_how_to_free_it(self) -> None:
        message = str(fd.RunLocked("r", "1234:abc", time.time() + 12))
        assert "for 12" in message or "for 11" in message
        assert "store.release(run_id, owner)" in message

    @pytest.mark.parametrize("face", ["sync", "async"])
    def test_flowdsl_prints_nothing_unless_logging_is_configured(
        self, face: str
    ) -> None:
        script = (
            "import asyncio, sys, flowdsl as fd\n"
            "@fd.node\n"
            "def f() -> int:\n"
            "    raise ValueError('x')\n"
            "flow = fd.Flow('t', [f])\n"
            "if sys.argv[1] == 'sync':\n"
            "    flow.run(check=False)\n"
            "else:\n"
            "    asyncio.run(flow.arun(check=False))\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", script, face],
            capture_output=True, text=True, cwd=ROOT, timeout=60,
            env={"PYTHONPATH": str(ROOT), "PATH": ""},
        )  # fmt: skip
        assert (0, "", "") == (done.returncode, done.stdout, done.stderr)


class TestCommitPolicy:
    """When to commit is the core's decision; the faces only say if idle."""

    @staticmethod
    def scheduler(**journal_options: Any) -> Any:
        from flowdsl._journal import Journal
        from flowdsl._scheduler import Scheduler

        journal = Journal(MemoryStore().serializer, **journal_options)
        plan = durable_flows.squares_flow._plan
        return Scheduler(plan, {"count": 1}, run_id="r", concurrency=3, journal=journal)

    @staticmethod
    def add(scheduler: Any, count: int, now: float = 0.0) -> None:
        from flowdsl.store import Outcome

        for i in range(count):
            scheduler.journal.add(Outcome("square", i, "completed"), now)

    def test_default_commits_when_idle_or_a_group_is_full(self) -> None:
        core = self.scheduler()
        assert not core.commit_due(0.0)  # nothing waits
        self.add(core, 2)
        assert core.commit_due(0.0, idle=True)
        assert not core.commit_due(0.0, idle=False)
        self.add(core, 1)  # concurrency=3 results wait
        assert core.commit_due(0.0, idle=False)

    def test_rows_and_seconds(self) -> None:
        core = self.scheduler(rows=10, seconds=0.5)
        self.add(core, 9, now=1.0)
        assert not core.commit_due(1.2)
        assert 1.5 == core.next_wakeup
        assert core.commit_due(1.5)
        self.add(core, 1, now=1.2)
        assert core.commit_due(1.2)


class TestCost:
    def test_no_progress_events_are_built_for_a_store_alone(
        self, runner: Runner, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        import flowdsl._events as events

        built: Counter[str] = Counter()
        original = events.Event

        def counting(kind: str, *args: Any) -> Any:
            built[kind] += 1
            return original(kind, *args)

        monkeypatch.setattr(events, "Event", counting)
        flow = durable_flows.squares_flow
        runner.run(flow, {"count": 20}, store=MemoryStore())
        assert 0 == built["batch_progress"]
        assert built["node_finish"] >= 3
        seen: list[str] = []
        runner.run(
            flow,
            {"count": 20},
            store=MemoryStore(),
            on_event=lambda e: seen.append(e.kind),
        )
        assert built["batch_progress"] == seen.count("batch_progress") > 0
