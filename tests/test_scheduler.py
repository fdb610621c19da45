"""The scheduler core, driven by hand: events in, commands out.

No threads, no event loop, no user code runs: each test feeds the scheduler
the events a face would feed it and checks the commands it answers.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

import flowdsl as fd
from flowdsl._scheduler import Failure, RunItems, RunNode, Scheduler
from flowdsl._validate import compile_flow


@fd.node
def a() -> int:
    return 1


@fd.node
def b(a: int) -> int:
    return a + 1


@fd.node
def c(a: int) -> int:
    return a + 2


@fd.node
def d(b: int, c: int) -> int:
    return b + c


@fd.node
def source() -> list[int]:
    return []


@fd.batch(input=source, output="gathered", concurrency=2)
def work(item: int, offset: int = 0) -> int:
    return item + offset


@fd.batch(input=source, output="collected", on_error="collect", chunk_size=3)
def collecting(item: int) -> int:
    return item


@fd.batch(input=source, output="skipped", on_error="skip")
def skipping(item: int) -> int:
    return item


@fd.node
def after(gathered: list[int]) -> int:
    return sum(gathered)


def scheduler(nodes: list[Any], **options: Any) -> Scheduler:
    plan, _ = compile_flow("test", nodes)
    options.setdefault("sync_slots", 8)
    options.setdefault("inline_alone", True)
    return Scheduler(plan, options.pop("inputs", {}), run_id="r1", **options)


def ids(commands: list[Any]) -> list[str]:
    return [c.node.id for c in commands]


class TestReadiness:
    """A node is commanded once every node it depends on has completed."""

    def test_roots_start_first(self) -> None:
        s = scheduler([a, b, c, d])
        assert ["a"] == ids(s.start(0.0))

    def test_fan_out_then_join(self) -> None:
        s = scheduler([a, b, c, d])
        (cmd_a,) = s.start(0.0)
        fan = s.node_done(cmd_a, 1, 1.0)
        assert ["b", "c"] == ids(fan)
        assert {"a": 1} == fan[0].kwargs
        assert [] == s.node_done(fan[0], 2, 2.0)  # d still waits for c
        (cmd_d,) = s.node_done(fan[1], 3, 3.0)
        assert {"b": 2, "c": 3} == cmd_d.kwargs
        assert [] == s.node_done(cmd_d, 5, 4.0)
        assert s.finished
        result = s.result(4.0)
        assert "completed" == result.status
        assert {"a": 1, "b": 2, "c": 3, "d": 5} == dict(result.outputs)
        assert 1.0 == result.timings["d"]  # started at 3.0, finished at 4.0

    def test_only_work_in_flight_runs_inline(self) -> None:
        s = scheduler([a, b, c, d])
        (cmd_a,) = s.start(0.0)
        assert cmd_a.inline  # nothing else could run meanwhile
        fan = s.node_done(cmd_a, 1, 1.0)
        assert [False, False] == [cmd.inline for cmd in fan]

    def test_inline_executor_runs_every_sync_command_inline(self) -> None:
        s = scheduler([a, b, c, d], inline_sync=True)
        (cmd_a,) = s.start(0.0)
        assert all(cmd.inline for cmd in s.node_done(cmd_a, 1, 1.0))

    def test_flow_inputs_are_passed_and_defaults_left_to_python(self) -> None:
        @fd.node
        def greet(name: str, punctuation: str = "!") -> str:
            return name + punctuation

        s = scheduler([greet], inputs={"name": "Ada"})
        (cmd,) = s.start(0.0)
        assert {"name": "Ada"} == cmd.kwargs


class TestConcurrency:
    """Limits hold: run-wide `concurrency` and the executor's slots."""

    def test_run_wide_limit_holds_back_ready_nodes(self) -> None:
        s = scheduler([a, b, c, d], concurrency=1)
        (cmd_a,) = s.start(0.0)
        (first,) = s.node_done(cmd_a, 1, 1.0)
        assert "b" == first.node.id
        (second,) = s.node_done(first, 2, 2.0)
        assert "c" == second.node.id

    def test_sync_slots_bound_executor_commands(self) -> None:
        s = scheduler([a, b, c, d], sync_slots=1)
        (cmd_a,) = s.start(0.0)
        assert ["b"] == ids(s.node_done(cmd_a, 1, 1.0))


class TestBatch:
    """A batch is one unit with counters; items are pulled lazily, in order."""

    def start_batch(self, s: Scheduler, items: Any) -> list[Any]:
        (cmd,) = s.start(0.0)
        return s.node_done(cmd, items, 1.0)

    def test_items_pulled_only_up_to_the_batch_limit(self) -> None:
        s = scheduler([source, work, after])
        pulled: list[int] = []

        def items() -> Any:
            for i in range(1_000_000):
                pulled.append(i)
                yield i

        commands = self.start_batch(s, items())
        assert [0, 1] == [c.start for c in commands]
        assert 2 == len(pulled)  # lazily: nothing beyond concurrency=2

    def test_results_gathered_in_input_order_whatever_the_finish_order(self) -> None:
        s = scheduler([source, work, after])
        first, second = self.start_batch(s, [10, 20, 30])
        (third,) = s.items_done(second, [21], 2.0)  # item 1 finishes first
        assert 2 == third.start
        assert [] == s.items_done(third, [31], 3.0)
        (cmd_after,) = s.items_done(first, [11], 4.0)
        assert {"gathered": [11, 21, 31]} == cmd_after.kwargs

    def test_shared_parameters_resolved_once(self) -> None:
        s = scheduler([source, work, after], inputs={"offset": 5})
        commands = self.start_batch(s, [1, 2])
        assert all(c.kwargs is commands[0].kwargs for c in commands)
        assert {"offset": 5} == commands[0].kwargs

    def test_empty_input_gives_empty_list_and_downstream_runs(self) -> None:
        s = scheduler([source, work, after])
        (cmd_after,) = self.start_batch(s, [])
        assert {"gathered": []} == cmd_after.kwargs

    @pytest.mark.parametrize("bad", [None, 5, "abc", b"abc", {"k": 1}])
    def test_bad_input_fails_the_batch_naming_it_and_its_producer(
        self, bad: Any
    ) -> None:
        s = scheduler([source, work, after])
        assert [] == self.start_batch(s, bad)
        assert s.finished
        result = s.result(1.0)
        assert "failed" == result.status
        (error,) = result.errors
        assert isinstance(error.exception, fd.BatchInputError)
        assert "'work'" in str(error.exception)
        assert "'source'" in str(error.exception)
        assert "not_run" == result.node_status["after"]

    def test_chunks_hold_up_to_chunk_size_items(self) -> None:
        s = scheduler([source, collecting])
        commands = self.start_batch(s, range(7))
        assert [[0, 1, 2], [3, 4, 5], [6]] == [c.items for c in commands]

    def test_collect_puts_item_errors_in_their_slots(self) -> None:
        s = scheduler([source, collecting])
        (chunk,) = self.start_batch(s, [1, 2, 3])
        boom = ValueError("boom")
        assert [] == s.items_done(chunk, [1, Failure(boom), 3], 2.0)
        result = s.result(2.0)
        assert "completed" == result.status
        assert [1, fd.ItemError(1, boom), 3] == result.outputs["collected"]

    def test_skip_leaves_failed_items_out_and_reports_them(self) -> None:
        s = scheduler([source, skipping])
        one, two, three = self.start_batch(s, [1, 2, 3])
        boom = ValueError("boom")
        s.items_done(one, [1], 2.0)
        s.items_done(two, [Failure(boom)], 2.0)
        s.items_done(three, [3], 2.0)
        result = s.result(2.0)
        assert "completed" == result.status
        assert [1, 3] == result.outputs["skipped"]
        assert [fd.RunError("skipping", 1, 1, boom)] == list(result.errors)

    def test_raise_stops_pulling_and_fails_the_run(self) -> None:
        s = scheduler([source, work, after])
        first, second = self.start_batch(s, iter(range(100)))
        boom = ValueError("boom")
        assert [] == s.items_done(first, [Failure(boom)], 2.0)
        assert not s.finished  # item 1 is still in flight
        assert [] == s.items_done(second, [1], 3.0)
        assert s.finished
        result = s.result(3.0)
        assert "failed" == result.status
        assert [fd.RunError("work", 0, 1, boom)] == list(result.errors)
        assert "gathered" not in result.outputs
        assert {"source": "completed", "work": "failed", "after": "not_run"} == dict(
            result.node_status
        )


class TestChunkedRaise:
    """A worker that stops at a failure reports only the items it started."""

    def test_short_outcomes_release_the_whole_chunk(self) -> None:
        @fd.batch(input=source, output="chunked", chunk_size=3)
        def chunked(item: int) -> int:
            return item

        s = scheduler([source, chunked])
        (cmd,) = s.start(0.0)
        (chunk, rest) = s.node_done(cmd, [1, 2, 3, 4], 1.0)
        assert [1, 2, 3] == chunk.items
        boom = ValueError("boom")
        assert [] == s.items_done(chunk, [1, Failure(boom)], 2.0)
        assert not s.finished
        assert [] == s.items_done(rest, [4], 3.0)
        assert s.finished
        assert [fd.RunError("chunked", 1, 1, boom)] == list(s.result(3.0).errors)


class TestFailure:
    """A failed node stops new work; work in flight finishes and is kept."""

    def test_fail_fast_keeps_completed_outputs(self) -> None:
        s = scheduler([a, b, c, d])
        (cmd_a,) = s.start(0.0)
        cmd_b, cmd_c = s.node_done(cmd_a, 1, 1.0)
        boom = RuntimeError("boom")
        assert [] == s.node_failed(cmd_b, boom, 2.0)
        assert not s.finished
        assert [] == s.node_done(cmd_c, 3, 3.0)
        assert s.finished
        result = s.result(3.0)
        assert {"a": 1, "c": 3} == dict(result.outputs)
        assert {"a": "completed", "b": "failed", "c": "completed", "d": "not_run"} == (
            dict(result.node_status)
        )


class TestCancel:
    """A cancel stops new work; sync work still running after the grace is let go."""

    def test_grace_period_abandons_running_sync_work(self) -> None:
        from flowdsl._scheduler import GRACE_PERIOD, CancelTasks

        s = scheduler([a, b, c, d])
        (cmd_a,) = s.start(0.0)
        cmd_b, cmd_c = s.node_done(cmd_a, 1, 1.0)
        assert [] == s.cancel(2.0)  # nothing async to cancel
        assert not s.finished
        assert 2.0 + GRACE_PERIOD == s.next_wakeup
        assert [] == s.tick(2.0 + GRACE_PERIOD / 2)
        (stop,) = s.tick(2.0 + GRACE_PERIOD)
        assert CancelTasks((cmd_b.token, cmd_c.token)) == stop
        assert s.finished
        assert [] == s.node_done(cmd_b, 2, 9.0)  # a late result is ignored
        result = s.result(9.0)
        assert "cancelled" == result.status
        assert {"a": 1} == dict(result.outputs)
        assert "cancelled" == result.node_status["b"]


class TestPurity:
    """The core imports nothing that does I/O, keeps time or runs concurrently."""

    def test_scheduler_imports_no_io_clock_or_concurrency(self) -> None:
        import flowdsl._scheduler as module

        tree = ast.parse(Path(module.__file__ or "").read_text())
        imported: set[str] = set()
        for stmt in ast.walk(tree):
            if isinstance(stmt, ast.Import):
                imported.update(alias.name.split(".")[0] for alias in stmt.names)
            elif isinstance(stmt, ast.ImportFrom) and stmt.module and not stmt.level:
                imported.add(stmt.module.split(".")[0])
        forbidden = {
            "asyncio", "threading", "concurrent", "time", "datetime", "os",
            "socket", "subprocess", "multiprocessing", "queue", "random",
        }  # fmt: skip
        assert set() == imported & forbidden

    def test_commands_are_plain_data(self) -> None:
        assert issubclass(RunNode, tuple)
        assert issubclass(RunItems, tuple)
