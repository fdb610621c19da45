"""Running flows: every behaviour of DESIGN §1, on both faces."""

from __future__ import annotations

import asyncio
import functools
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from typing_extensions import Annotated

import flowdsl as fd

from .conftest import Runner

# -- module-level nodes (process pools import them by reference) -------------


@fd.node
def numbers() -> list[int]:
    return [1, 2, 3, 4]


@fd.batch(input=numbers, output="squares")
def square(item: int) -> int:
    return item * item


@fd.node
def total_of_squares(squares: list[int]) -> int:
    return sum(squares)


@fd.batch(input=numbers, output="worker_pid")
def worker_pid(item: int) -> int:
    return os.getpid()


class TestDSL:
    """Decorated functions stay plain callables."""

    def test_sync_node_is_callable_unchanged(self) -> None:
        @fd.node
        def total(values: list[int]) -> int:
            return sum(values)

        assert 3 == total([1, 2])
        assert "total" == total.id
        assert "total" == total.__name__

    def test_async_node_returns_a_coroutine(self) -> None:
        @fd.node
        async def fetch(x: int) -> int:
            return x + 1

        coroutine = fetch(1)
        assert asyncio.iscoroutine(coroutine)
        assert 2 == asyncio.run(coroutine)

    def test_options_form_sets_id(self) -> None:
        @fd.node(id="loader")
        def load() -> int:
            return 1

        assert "loader" == load.id
        assert 1 == load()

    def test_batch_worker_is_callable_on_one_item(self) -> None:
        assert 9 == square(3)
        assert "squares" == square.key
        assert "square" == square.id


class TestInference:
    """Parameters are resolved: Context, From, producer name, flow input."""

    def test_edges_inferred_from_parameter_names(self, runner: Runner) -> None:
        @fd.node
        def start() -> int:
            return 2

        @fd.node
        def double(start: int) -> int:
            return start * 2

        @fd.node
        def add(start: int, double: int) -> int:
            return start + double

        result = runner.run(fd.Flow("infer", [add, double, start]))
        assert 6 == result[add]
        assert 4 == result["double"]

    def test_explicit_sources_with_annotated_and_default(self, runner: Runner) -> None:
        @fd.node
        def load() -> int:
            return 5

        @fd.node
        def first(x: Annotated[int, fd.From("load")]) -> int:
            return x + 1

        @fd.node
        def second(
            y: int = fd.From(load), z: Annotated[int, fd.From(first)] = 0
        ) -> int:
            return y * z

        result = runner.run(fd.Flow("explicit", [load, first, second]))
        assert 30 == result[second]

    def test_from_a_batch_id_reads_its_output(self, runner: Runner) -> None:
        @fd.node
        def summed(values: Annotated[list[int], fd.From("square")]) -> int:
            return sum(values)

        result = runner.run(fd.Flow("alias", [numbers, square, summed]))
        assert 30 == result[summed]

    def test_flow_inputs_and_defaults(self, runner: Runner) -> None:
        @fd.node
        def greet(name: str, punctuation: str = "!") -> str:
            return f"hello {name}{punctuation}"

        flow = fd.Flow("inputs", [greet])
        assert {"name": True, "punctuation": False} == dict(flow.inputs)
        assert "hello Ada!" == runner.run(flow, {"name": "Ada"})[greet]
        assert (
            "hello Ada?" == runner.run(flow, {"name": "Ada", "punctuation": "?"})[greet]
        )

    def test_missing_input_fails_before_any_node_runs(self, runner: Runner) -> None:
        ran: list[str] = []

        @fd.node
        def first() -> int:
            ran.append("first")
            return 1

        @fd.node
        def needs(first: int, threshold: int) -> int:
            ran.append("needs")
            return first + threshold

        with pytest.raises(fd.MissingInputError, match=r"'threshold'.*'needs'"):
            runner.run(fd.Flow("missing", [first, needs]))
        assert [] == ran

    def test_context_is_injected_and_shared(self, runner: Runner) -> None:
        @fd.node
        def writer(ctx: fd.Context) -> str:
            ctx.set("greeting", "hi")
            return ctx.node_id

        @fd.node
        def reader(writer: str, ctx: fd.Context) -> str:
            assert ctx.has("greeting")
            return f"{ctx.get('greeting')} from {writer} in {ctx.run_id}"

        result = runner.run(fd.Flow("ctx", [writer, reader]), run_id="run-7")
        assert "hi from writer in run-7" == result[reader]

    def test_batch_items_see_their_index_in_context(self, runner: Runner) -> None:
        @fd.batch(input=numbers, output="keys")
        def key(item: int, ctx: fd.Context) -> str:
            return ctx.idempotency_key

        result = runner.run(fd.Flow("keys", [numbers, key]), run_id="r")
        assert ["r:key:0", "r:key:1", "r:key:2", "r:key:3"] == result[key]


class TestRunning:
    """Sync and async nodes run together; independent nodes overlap."""

    def test_mixed_sync_and_async_nodes(self, runner: Runner) -> None:
        @fd.node
        def start() -> int:
            return 3

        @fd.node
        async def fetch(start: int) -> int:
            await asyncio.sleep(0)
            return start * 10

        @fd.node
        def combine(start: int, fetch: int) -> int:
            return start + fetch

        result = runner.run(fd.Flow("mixed", [start, fetch, combine]))
        assert 33 == result[combine]
        assert "completed" == result.status
        assert {"start", "fetch", "combine"} == set(result.timings)

    def test_independent_sync_nodes_overlap(self, runner: Runner) -> None:
        # Each waits at the barrier for the other: only concurrent runs pass.
        barrier = threading.Barrier(2, timeout=10)

        @fd.node
        def left() -> int:
            barrier.wait()
            return 1

        @fd.node
        def right() -> int:
            barrier.wait()
            return 2

        result = runner.run(fd.Flow("overlap", [left, right]))
        assert (result[left], result[right]) == (1, 2)

    def test_independent_async_and_sync_nodes_overlap(self, runner: Runner) -> None:
        sync_started = threading.Event()
        async_started = threading.Event()

        @fd.node
        def blocking() -> str:
            sync_started.set()
            assert async_started.wait(10), "the async node never ran alongside"
            return "sync"

        @fd.node
        async def waiting() -> str:
            async_started.set()
            deadline = time.monotonic() + 10
            while not sync_started.is_set():
                assert time.monotonic() < deadline, "the sync node never ran alongside"
                await asyncio.sleep(0.001)
            return "async"

        result = runner.run(fd.Flow("overlap2", [blocking, waiting]))
        assert (result[blocking], result[waiting]) == ("sync", "async")

    def test_run_inside_a_running_event_loop(self) -> None:
        @fd.node
        async def inner() -> int:
            await asyncio.sleep(0)
            return 7

        flow = fd.Flow("nested-loop", [inner])

        async def caller() -> int:
            return flow.run()[inner]  # a blocking call from async code

        assert 7 == asyncio.run(caller())

    @pytest.mark.parametrize(
        "executor", ["inline", "threads", "processes", "custom"], ids=str
    )
    def test_executors(self, runner: Runner, executor: str) -> None:
        flow = fd.Flow("squares", [numbers, square, total_of_squares])
        if executor == "custom":
            with ThreadPoolExecutor(2) as pool:
                result = runner.run(flow, executor=pool)
        else:
            result = runner.run(flow, executor=executor)
        assert 30 == result[total_of_squares]
        assert [1, 4, 9, 16] == result[square]

    def test_processes_run_work_in_other_processes(self, runner: Runner) -> None:
        flow = fd.Flow("pids", [numbers, worker_pid])
        pids = runner.run(flow, executor="processes")["worker_pid"]
        assert 4 == len(pids)
        assert os.getpid() not in pids

    def test_arun_keeps_the_event_loop_responsive(self) -> None:
        @fd.node
        def blocking() -> str:
            time.sleep(0.3)
            return "done"

        async def main() -> int:
            ticks = 0

            async def ticker() -> None:
                nonlocal ticks
                while True:
                    ticks += 1
                    await asyncio.sleep(0.01)

            task = asyncio.ensure_future(ticker())
            await fd.Flow("blocking", [blocking]).arun()
            task.cancel()
            return ticks

        assert asyncio.run(main()) >= 10  # the sync node ran off the loop

    def test_stop_iteration_from_a_node_fails_it_cleanly(self, runner: Runner) -> None:
        @fd.node
        def exhausted() -> int:
            raise StopIteration

        with pytest.raises(fd.FlowFailed) as info:
            runner.run(fd.Flow("stop", [exhausted]), executor="threads")
        assert isinstance(info.value.__cause__, RuntimeError)

    def test_an_object_with_async_call_is_an_async_node(self, runner: Runner) -> None:
        class Fetcher:
            __name__ = "fetcher"

            async def __call__(self, url: str) -> str:
                await asyncio.sleep(0)
                return url.upper()

        fetcher = fd.node(id="fetcher")(Fetcher())
        assert isinstance(fetcher, fd.AsyncNode)
        assert "U" == runner.run(fd.Flow("obj", [fetcher]), {"url": "u"})["fetcher"]

    def test_a_partial_with_an_id_is_a_node(self, runner: Runner) -> None:
        def scale(x: int, factor: int) -> int:
            return x * factor

        triple = fd.node(id="triple")(functools.partial(scale, factor=3))
        assert 6 == runner.run(fd.Flow("partial", [triple]), {"x": 2})["triple"]

    def test_unknown_executor_is_rejected(self, runner: Runner) -> None:
        with pytest.raises(fd.DefinitionError, match="executor must be"):
            runner.run(fd.Flow("squares", [numbers, square]), executor="gpu")

    @pytest.mark.parametrize("bad", [0, -1, True, 1.5])
    def test_bad_concurrency_is_rejected(self, runner: Runner, bad: Any) -> None:
        with pytest.raises(fd.DefinitionError, match="concurrency"):
            runner.run(fd.Flow("squares", [numbers, square]), concurrency=bad)


class TestBatch:
    """Scatter, process, gather: order, emptiness, bad input, limits, errors."""

    def test_the_design_example(self, runner: Runner) -> None:
        @fd.node
        def start() -> list[int]:
            return [10, 20, 30]

        @fd.batch(input="start", output="doubled")
        async def double(item: int) -> int:
            return item * 2

        @fd.node
        def total(doubled: list[int]) -> int:
            return sum(doubled)

        result = runner.run(fd.Flow("batch-workflow", [start, double, total]))
        assert 120 == result["total"]
        assert 120 == result[total]
        assert [20, 40, 60] == result[double] == result["doubled"] == result["double"]

    @pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
    def test_gather_order_under_shuffled_completion(
        self, runner: Runner, is_async: bool
    ) -> None:
        delays = [random.Random(7).uniform(0, 0.02) for _ in range(20)]
        random.Random(3).shuffle(delays)

        @fd.node
        def items() -> list[int]:
            return list(range(20))

        if is_async:

            @fd.batch(input=items, output="out")
            async def work(item: int) -> int:
                await asyncio.sleep(delays[item])
                return item * 10

        else:

            @fd.batch(input=items, output="out")
            def work(item: int) -> int:
                time.sleep(delays[item])
                return item * 10

        result = runner.run(fd.Flow("order", [items, work]))
        assert [i * 10 for i in range(20)] == result["out"]

    def test_empty_batch_gives_empty_list_and_downstream_runs(
        self, runner: Runner
    ) -> None:
        @fd.node
        def nothing() -> list[int]:
            return []

        @fd.batch(input=nothing, output="out")
        def work(item: int) -> int:
            raise AssertionError("no item to work on")

        @fd.node
        def count(out: list[int]) -> int:
            return len(out)

        result = runner.run(fd.Flow("empty", [nothing, work, count]))
        assert [] == result["out"]
        assert 0 == result[count]

    @pytest.mark.parametrize(
        "bad",
        [None, 42, "text", b"bytes", {"a": 1}],
        ids=["None", "int", "str", "bytes", "dict"],
    )
    def test_bad_batch_input_names_batch_and_producer(
        self, runner: Runner, bad: Any
    ) -> None:
        @fd.node
        def produce() -> Any:
            return bad

        @fd.batch(input=produce, output="out")
        def work(item: Any) -> Any:
            return item

        with pytest.raises(fd.FlowFailed) as info:
            runner.run(fd.Flow("bad-input", [produce, work]))
        cause = info.value.__cause__
        assert isinstance(cause, fd.BatchInputError)
        assert isinstance(cause, TypeError)
        assert "'work'" in str(cause)
        assert "'produce'" in str(cause)
        assert {"produce": bad} == dict(info.value.result.outputs)

    @pytest.mark.parametrize(
        ("is_async", "limit", "run_limit"),
        [(False, 3, None), (True, 3, None), (False, None, 2), (True, None, 2)],
        ids=["sync-batch", "async-batch", "sync-run", "async-run"],
    )
    def test_concurrency_bound_never_exceeded(
        self, runner: Runner, is_async: bool, limit: int | None, run_limit: int | None
    ) -> None:
        lock = threading.Lock()
        in_flight = [0]
        peak = [0]
        bound = limit or run_limit
        assert bound is not None

        def enter() -> None:
            with lock:
                in_flight[0] += 1
                peak[0] = max(peak[0], in_flight[0])

        def full() -> bool:  # hold the first items until the bound is reached
            return peak[0] >= bound

        def leave() -> None:
            with lock:
                in_flight[0] -= 1

        @fd.node
        def items() -> list[int]:
            return list(range(24))

        if is_async:

            @fd.batch(input=items, output="out", concurrency=limit)
            async def work(item: int) -> int:
                enter()
                deadline = time.monotonic() + 5
                while not full() and time.monotonic() < deadline:
                    await asyncio.sleep(0.001)
                leave()
                return item

        else:

            @fd.batch(input=items, output="out", concurrency=limit)
            def work(item: int) -> int:
                enter()
                deadline = time.monotonic() + 5
                while not full() and time.monotonic() < deadline:
                    time.sleep(0.001)
                leave()
                return item

        result = runner.run(fd.Flow("bound", [items, work]), concurrency=run_limit)
        assert list(range(24)) == result["out"]
        assert bound == peak[0]  # reached, never exceeded

    def test_huge_batch_is_pulled_lazily(self, runner: Runner) -> None:
        pulled = [0]
        peak_ahead = [0]
        done = [0]

        @fd.node
        def items() -> Any:
            def generate() -> Any:
                for i in range(1_000_000):
                    pulled[0] += 1
                    peak_ahead[0] = max(peak_ahead[0], pulled[0] - done[0])
                    yield i

            return generate()

        @fd.batch(input=items, output="out", concurrency=4, inline=True)
        def work(item: int) -> None:
            done[0] += 1

        @fd.node
        def count(out: list[None]) -> int:
            return len(out)

        result = runner.run(fd.Flow("lazy", [items, work, count]))
        assert 1_000_000 == result[count]
        assert peak_ahead[0] <= 4

    def test_extra_worker_parameters_are_shared(self, runner: Runner) -> None:
        calls: list[int] = []

        @fd.node
        def factor() -> int:
            calls.append(1)
            return 3

        @fd.batch(input=numbers, output="scaled")
        def scale(item: int, factor: int, offset: int = 0) -> int:
            return item * factor + offset

        result = runner.run(fd.Flow("shared", [numbers, factor, scale]), {"offset": 1})
        assert [4, 7, 10, 13] == result["scaled"]
        assert [1] == calls

    @pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
    def test_on_error_raise(self, runner: Runner, is_async: bool) -> None:
        started: list[int] = []

        @fd.node
        def items() -> list[int]:
            return list(range(50))

        def body(item: int) -> int:
            started.append(item)
            if item == 2:
                raise ValueError(f"bad item {item}")
            return item

        if is_async:

            @fd.batch(input=items, output="out", concurrency=1)
            async def work(item: int) -> int:
                return body(item)

        else:

            @fd.batch(input=items, output="out", concurrency=1)
            def work(item: int) -> int:
                return body(item)

        with pytest.raises(fd.FlowFailed, match="item 2") as info:
            runner.run(fd.Flow("raise", [items, work]))
        result = info.value.result
        assert "failed" == result.status
        assert [0, 1, 2] == started  # items not yet started were not started
        (error,) = result.errors
        assert (error.node_id, error.item_index, error.attempts) == ("work", 2, 1)
        assert isinstance(info.value.__cause__, ValueError)
        assert list(range(50)) == result["items"]

    @pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
    def test_on_error_skip(self, runner: Runner, is_async: bool) -> None:
        def body(item: int) -> int:
            if item % 3 == 0:
                raise ValueError(item)
            return item

        if is_async:

            @fd.batch(input="items", output="out", on_error="skip")
            async def work(item: int) -> int:
                return body(item)

        else:

            @fd.batch(input="items", output="out", on_error="skip")
            def work(item: int) -> int:
                return body(item)

        @fd.node
        def items() -> list[int]:
            return list(range(10))

        result = runner.run(fd.Flow("skip", [items, work]))
        assert "completed" == result.status
        assert [1, 2, 4, 5, 7, 8] == result["out"]
        assert [0, 3, 6, 9] == sorted(e.item_index for e in result.errors)
        assert all(isinstance(e.exception, ValueError) for e in result.errors)

    def test_on_error_collect(self, runner: Runner) -> None:
        @fd.node
        def items() -> list[int]:
            return [1, 0, 2]

        @fd.batch(input=items, output="out", on_error="collect", chunk_size=2)
        def invert(item: int) -> float:
            return 1 / item

        result = runner.run(fd.Flow("collect", [items, invert]))
        assert "completed" == result.status
        first, error, last = result["out"]
        assert (first, last) == (1.0, 0.5)
        assert isinstance(error, fd.ItemError)
        assert 1 == error.index
        assert isinstance(error.exception, ZeroDivisionError)


class TestFailure:
    """A failed run reports every output that completed."""

    def test_flow_failed_carries_completed_outputs(self, runner: Runner) -> None:
        @fd.node
        def ok() -> int:
            return 1

        @fd.node
        def broken(ok: int) -> int:
            raise KeyError("missing thing")

        @fd.node
        def downstream(broken: int) -> int:
            return broken

        flow = fd.Flow("fails", [ok, broken, downstream])
        with pytest.raises(fd.FlowFailed, match="'broken'") as info:
            runner.run(flow)
        result = info.value.result
        assert {"ok": 1} == dict(result.outputs)
        assert isinstance(info.value.__cause__, KeyError)
        assert {"ok": "completed", "broken": "failed", "downstream": "not_run"} == dict(
            result.node_status
        )
        with pytest.raises(KeyError, match=r"'downstream'.*not_run"):
            result[downstream]

    def test_check_false_returns_the_failed_result(self, runner: Runner) -> None:
        @fd.node
        def broken() -> int:
            raise ValueError("no")

        result = runner.run(fd.Flow("fails", [broken]), check=False)
        assert "failed" == result.status
        assert not result.ok
        (error,) = result.errors
        assert (error.node_id, error.item_index) == ("broken", None)
        assert isinstance(error.exception, ValueError)

    def test_unknown_result_key_is_a_clear_error(self, runner: Runner) -> None:
        result = runner.run(fd.Flow("squares", [numbers, square]))
        with pytest.raises(KeyError, match="no node or output 'nope'"):
            result["nope"]


class TestFromModule:
    """A flow can be collected from every node a module defines."""

    def test_from_module(self, runner: Runner) -> None:
        from . import sample_pipeline

        flow = fd.Flow.from_module(sample_pipeline)
        assert "tests.sample_pipeline" == flow.id
        assert ["a", "b"] == [n.id for n in flow.nodes]
        assert 10 == runner.run(flow)["b"]


class TestChunks:
    """Chunked items behave like single items, whatever the executor."""

    @pytest.mark.parametrize("executor", ["inline", "threads"])
    def test_raise_stops_inside_a_chunk(self, runner: Runner, executor: str) -> None:
        started: list[int] = []

        @fd.node
        def items() -> list[int]:
            return list(range(10))

        @fd.batch(input=items, output="out", chunk_size=5, concurrency=5)
        def work(item: int) -> int:
            started.append(item)
            if item == 1:
                raise ValueError("stop here")
            return item

        with pytest.raises(fd.FlowFailed, match="item 1"):
            runner.run(fd.Flow("chunk", [items, work]), executor=executor)
        assert [0, 1] == started
