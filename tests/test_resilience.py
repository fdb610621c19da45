"""Retries, timeouts, fallbacks and cancellation, on both faces."""

from __future__ import annotations

import _thread
import asyncio
import hashlib
import os
import random
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import flowdsl as fd
from flowdsl import _scheduler as scheduler_module

from .conftest import Runner

SEED = 20261204


def fails(seed: int, node: str, item: int, attempt: int, rate: float) -> bool:
    """The fault plan: a pure function, the same in every process and run."""
    digest = hashlib.sha256(f"{seed}:{node}:{item}:{attempt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64 < rate


class Flaky(Exception):
    """The planned failure."""


def faulty_batch(rate: float, retries: int, attempts: Counter[int]) -> fd.Flow:
    lock = threading.Lock()

    @fd.node
    def items(count: int) -> list[int]:
        return list(range(count))

    @fd.batch(input=items, output="out", retries=retries, on_error="skip")
    def work(item: int, ctx: fd.Context) -> int:
        with lock:
            attempts[item] += 1
        assert attempts[item] == ctx.attempt
        if fails(SEED, "work", item, ctx.attempt, rate):
            raise Flaky(f"item {item} attempt {ctx.attempt}")
        return item * 3

    return fd.Flow("faults", [items, work])


def predicted(count: int, rate: float, retries: int) -> tuple[int, dict[int, int]]:
    """Total attempts, and the items that exhaust their retries (-> attempts)."""
    total, lost = 0, {}
    for item in range(count):
        for attempt in range(1, retries + 2):
            total += 1
            if not fails(SEED, "work", item, attempt, rate):
                break
        else:
            lost[item] = retries + 1
    return total, lost


class TestRetries:
    """`retries=N` means N extra attempts, for nodes and for each batch item."""

    def test_ten_thousand_items_five_percent_failing(self, runner: Runner) -> None:
        attempts: Counter[int] = Counter()
        flow = faulty_batch(0.05, 3, attempts)
        result = runner.run(flow, {"count": 10_000})
        total, lost = predicted(10_000, 0.05, 3)
        assert {} == lost  # the plan loses nothing at this rate
        assert "completed" == result.status
        assert [i * 3 for i in range(10_000)] == result["out"]
        assert total == sum(attempts.values())
        assert max(attempts.values()) <= 4

    def test_twenty_percent_failing_with_one_retry(self, runner: Runner) -> None:
        attempts: Counter[int] = Counter()
        flow = faulty_batch(0.2, 1, attempts)
        result = runner.run(flow, {"count": 2_000})
        total, lost = predicted(2_000, 0.2, 1)
        assert lost  # the plan does lose items at this rate
        assert total == sum(attempts.values())
        reported = {
            e.item_index: (type(e.exception), str(e.exception), e.attempts)
            for e in result.errors
        }
        assert {item: (Flaky, f"item {item} attempt 2", 2) for item in lost} == reported
        assert [i * 3 for i in range(2_000) if i not in lost] == result["out"]

    def test_twenty_percent_failing_collected_and_checked_is_not_completed(
        self, runner: Runner
    ) -> None:
        """The pattern docs/resilience.md gives for "fail the run on any lost
        item, reporting every one": collect, then check downstream."""

        @fd.node
        def items() -> list[int]:
            return list(range(2_000))

        @fd.batch(input=items, output="out", retries=1, on_error="collect")
        def work(item: int, ctx: fd.Context) -> int:
            if fails(SEED, "work", item, ctx.attempt, 0.2):
                raise Flaky(f"item {item} attempt {ctx.attempt}")
            return item * 3

        @fd.node
        def all_or_nothing(out: list[int | fd.ItemError]) -> list[int]:
            lost = [r.index for r in out if isinstance(r, fd.ItemError)]
            if lost:
                raise ValueError(f"{len(lost)} items failed")
            return out  # type: ignore[return-value]

        flow = fd.Flow("strict", [items, work, all_or_nothing])
        result = runner.run(flow, check=False)
        _, lost = predicted(2_000, 0.2, 1)
        assert "failed" == result.status
        (error,) = result.errors
        assert ("all_or_nothing", f"{len(lost)} items failed") == (
            error.node_id,
            str(error.exception),
        )
        reported = {
            r.index: (type(r.exception), str(r.exception), r.attempts)
            for r in result["out"]
            if isinstance(r, fd.ItemError)
        }
        assert {item: (Flaky, f"item {item} attempt 2", 2) for item in lost} == reported
        kept = [r for r in result["out"] if not isinstance(r, fd.ItemError)]
        assert [i * 3 for i in range(2_000) if i not in lost] == kept

    def test_twenty_percent_failing_is_not_completed_under_raise(
        self, runner: Runner
    ) -> None:
        @fd.node
        def items() -> list[int]:
            return list(range(500))

        @fd.batch(input=items, output="out", retries=1)
        def work(item: int, ctx: fd.Context) -> int:
            if fails(SEED, "work", item, ctx.attempt, 0.2):
                raise Flaky(item)
            return item

        result = runner.run(fd.Flow("strict", [items, work]), check=False)
        assert "failed" == result.status
        (error,) = result.errors
        assert 2 == error.attempts

    def test_node_retries_then_succeeds(self, runner: Runner) -> None:
        calls: list[int] = []

        @fd.node(retries=2)
        def shaky(ctx: fd.Context) -> str:
            calls.append(ctx.attempt)
            if ctx.attempt < 3:
                raise ConnectionError("try again")
            return "ok"

        result = runner.run(fd.Flow("shaky", [shaky]))
        assert "ok" == result["shaky"]
        assert [1, 2, 3] == calls

    def test_exhausted_retries_report_the_attempts(self, runner: Runner) -> None:
        @fd.node(retries=1)
        def broken() -> None:
            raise ConnectionError("down")

        result = runner.run(fd.Flow("broken", [broken]), check=False)
        (error,) = result.errors
        assert (2, ConnectionError) == (error.attempts, type(error.exception))

    def test_retry_on_filters_exception_types(self, runner: Runner) -> None:
        calls: list[int] = []

        @fd.node(retries=3, retry_on=(ConnectionError, TimeoutError))
        def picky() -> None:
            calls.append(1)
            raise ValueError("not worth retrying")

        result = runner.run(fd.Flow("picky", [picky]), check=False)
        assert [1] == calls
        assert 1 == result.errors[0].attempts

    def test_definition_errors_are_never_retried(self, runner: Runner) -> None:
        calls: list[int] = []

        @fd.node(retries=3, retry_on=Exception)
        def misuse() -> None:
            calls.append(1)
            raise fd.DefinitionError("a bug in the flow, not a blip")

        runner.run(fd.Flow("misuse", [misuse]), check=False)
        assert [1] == calls

    def test_backoff_delays_follow_the_policy(self, runner: Runner) -> None:
        events: list[fd.Event] = []

        @fd.node(retries=4, retry_delay=0.02, backoff=2, max_delay=0.05)
        def slow_to_recover(ctx: fd.Context) -> int:
            if ctx.attempt < 5:
                raise ConnectionError("not yet")
            return ctx.attempt

        result = runner.run(
            fd.Flow("backoff", [slow_to_recover]), on_event=events.append
        )
        assert 5 == result["slow_to_recover"]
        retries = [e for e in events if e.kind == "node_retry"]
        assert [0.02, 0.04, 0.05, 0.05] == [e.data["delay"] for e in retries]
        assert [2, 3, 4, 5] == [e.attempt for e in retries]
        starts = [e for e in events if e.kind == "node_start"]
        for retry, start in zip(retries, starts[1:]):
            gap = start.time - retry.time
            assert retry.data["delay"] - 0.005 <= gap <= retry.data["delay"] + 0.25

    def test_jitter_stays_in_its_band(self, runner: Runner) -> None:
        events: list[fd.Event] = []

        @fd.node(retries=6, retry_delay=0.01, jitter=0.02)
        def jittery(ctx: fd.Context) -> int:
            if ctx.attempt < 7:
                raise ConnectionError("again")
            return 0

        runner.run(fd.Flow("jitter", [jittery]), on_event=events.append)
        delays = [e.data["delay"] for e in events if e.kind == "node_retry"]
        assert 6 == len(delays)
        assert all(0.01 <= d <= 0.03 for d in delays)
        assert len(set(delays)) > 1  # the jitter does vary

    @pytest.mark.parametrize(
        ("option", "value"),
        [
            ("retries", -1),
            ("retries", True),
            ("retries", 1.5),
            ("timeout", 0),
            ("timeout", float("nan")),
            ("retry_delay", -0.1),
            ("max_delay", float("inf")),
            ("jitter", -1),
            ("backoff", 0.5),
            ("retry_on", "ValueError"),
            ("retry_on", (ValueError, 3)),
            ("fallback", "use this"),
        ],
    )
    def test_invalid_options_are_rejected_naming_the_node(
        self, option: str, value: Any
    ) -> None:
        def target() -> int:
            return 1

        with pytest.raises(fd.DefinitionError, match=rf"'target'.*{option}"):
            fd.node(**{option: value})(target)


RELEASE = threading.Event()  # lets threads of stubborn nodes end after a test


@fd.node
def stubborn_one(seconds: float) -> None:  # ignores ctx.cancelled on purpose
    RELEASE.wait(seconds)


@fd.node
def stubborn_two(seconds: float) -> None:
    RELEASE.wait(seconds)


def threads_back_to(count: int) -> bool:
    """Whether the thread count returns to `count` within two seconds."""
    deadline = time.monotonic() + 2
    while threading.active_count() > count and time.monotonic() < deadline:
        time.sleep(0.01)
    return threading.active_count() == count


@fd.node(timeout=0.2)
def sleepy_in_a_process(marker: str) -> None:
    Path(marker).write_text(str(os.getpid()))
    time.sleep(10)


class TestTimeouts:
    """Each attempt has its deadline; the scheduler owns it."""

    def test_process_attempt_is_preempted(self, runner: Runner, tmp_path: Path) -> None:
        marker = tmp_path / "pid"
        started = time.perf_counter()
        with pytest.raises(fd.FlowFailed) as info:
            runner.run(
                fd.Flow("preempt", [sleepy_in_a_process]),
                {"marker": str(marker)},
                executor="processes",
            )
        elapsed = time.perf_counter() - started
        assert isinstance(info.value.__cause__, fd.NodeTimeout)
        assert elapsed < 0.2 + 0.3 + 0.3  # plus starting the worker process
        pid = int(marker.read_text())
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # the worker was terminated, not left running

    def test_async_attempt_is_cancelled_at_its_deadline(self, runner: Runner) -> None:
        cancelled = threading.Event()

        @fd.node(timeout=0.2)
        async def hang() -> None:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                cancelled.set()
                raise

        started = time.perf_counter()
        with pytest.raises(fd.FlowFailed) as info:
            runner.run(fd.Flow("hang", [hang]))
        elapsed = time.perf_counter() - started
        assert isinstance(info.value.__cause__, fd.NodeTimeout)
        assert elapsed < 0.2 + 0.3
        assert cancelled.wait(1)

    def test_sync_attempt_is_marked_timed_out_and_its_late_value_discarded(
        self, runner: Runner
    ) -> None:
        release = threading.Event()

        @fd.node(timeout=0.2, retries=1)
        def stuck(ctx: fd.Context) -> str:
            if ctx.attempt == 1:
                release.wait(10)
                return "late"
            return "on time"

        @fd.node
        def neighbour() -> int:  # keeps `stuck` off the scheduler's thread
            return 1

        started = time.perf_counter()
        result = runner.run(fd.Flow("stuck", [stuck, neighbour]))
        elapsed = time.perf_counter() - started
        release.set()
        assert "on time" == result["stuck"]
        assert elapsed < 0.2 + 0.3

    def test_timed_out_batch_items_are_retried(self, runner: Runner) -> None:
        @fd.node
        def items() -> list[int]:
            return [1, 2, 3]

        @fd.batch(input=items, output="out", timeout=0.1, retries=1)
        async def work(item: int, ctx: fd.Context) -> int:
            if item == 2 and ctx.attempt == 1:
                await asyncio.sleep(5)
            return item

        assert [1, 2, 3] == runner.run(fd.Flow("items", [items, work]))["out"]


class TestFallbacks:
    """A fallback's value stands in; the run stays honest about the rest."""

    def test_a_fallback_object_with_an_async_call(self, runner: Runner) -> None:
        class Stand:
            async def __call__(self, error: BaseException) -> str:
                await asyncio.sleep(0)
                return f"stood in for {error}"

        @fd.node(fallback=Stand())
        def broken() -> str:
            raise ValueError("down")

        result = runner.run(fd.Flow("stand", [broken]))
        assert "stood in for down" == result["broken"]

    @pytest.mark.parametrize("executor", ["inline", "threads"])
    def test_a_sync_fallback_on_any_executor(
        self, runner: Runner, executor: str
    ) -> None:
        @fd.node(fallback=lambda error: f"rescued from {error}")
        def broken() -> str:
            raise ValueError("down")

        @fd.node
        def items() -> list[str]:
            return ["a", "b"]

        @fd.batch(input=items, output="out", fallback=lambda error: "?")
        def each(item: str) -> str:
            if item == "b":
                raise ValueError(item)
            return item

        flow = fd.Flow("fb", [broken, items, each])
        result = runner.run(flow, executor=executor)
        assert ("rescued from down", ["a", "?"]) == (result["broken"], result["out"])

    def test_fallback_rescues_a_node(self, runner: Runner) -> None:
        seen: list[BaseException] = []

        def cached(error: BaseException) -> str:
            seen.append(error)
            return "cached"

        @fd.node(retries=1, fallback=cached)
        def fetch() -> str:
            raise ConnectionError("offline")

        @fd.node
        def show(fetch: str) -> str:
            return f"showing {fetch}"

        result = runner.run(fd.Flow("rescue", [fetch, show]))
        assert "completed" == result.status
        assert "showing cached" == result["show"]
        assert "rescued" == result.node_status["fetch"]
        assert () == result.errors
        (rescued,) = result.rescued
        assert ("fetch", 2) == (rescued.node_id, rescued.attempts)
        assert isinstance(seen[0], ConnectionError)

    def test_async_fallback_with_context(self, runner: Runner) -> None:
        async def explain(error: BaseException, ctx: fd.Context) -> str:
            return f"{ctx.node_id}: {error}"

        @fd.node(fallback=explain)
        async def fetch() -> str:
            raise ConnectionError("offline")

        assert "fetch: offline" == runner.run(fd.Flow("explain", [fetch]))["fetch"]

    def test_a_failing_fallback_fails_the_node(self, runner: Runner) -> None:
        def worse(error: BaseException) -> str:
            raise RuntimeError("fallback broke too")

        @fd.node(fallback=worse)
        def fetch() -> str:
            raise ConnectionError("offline")

        with pytest.raises(fd.FlowFailed) as info:
            runner.run(fd.Flow("worse", [fetch]))
        assert "fallback broke too" == str(info.value.__cause__)

    def test_batch_items_are_rescued_one_by_one(self, runner: Runner) -> None:
        @fd.node
        def items() -> list[int]:
            return [1, 0, 2]

        @fd.batch(input=items, output="inverses", fallback=lambda error: 0.0)
        def invert(item: int) -> float:
            return 1 / item

        result = runner.run(fd.Flow("invert", [items, invert]))
        assert [1.0, 0.0, 0.5] == result["inverses"]
        assert [1] == [e.item_index for e in result.rescued]

    def test_a_fallback_anywhere_does_not_hide_a_failure(self, runner: Runner) -> None:
        # Flowcraft reports such a run `completed`; flowdsl does not.
        @fd.node(fallback=lambda error: "fine")
        def rescued() -> str:
            raise ValueError("rescued")

        @fd.node
        def doomed() -> str:
            raise ValueError("not rescued")

        result = runner.run(fd.Flow("honest", [rescued, doomed]), check=False)
        assert "failed" == result.status
        assert ["doomed"] == [e.node_id for e in result.errors]


class TestCancellation:
    """Cancelling stops scheduling, keeps what completed, and leaks nothing."""

    def test_cancel_token_mid_run(self, runner: Runner) -> None:
        token = fd.CancelToken()
        retried: list[int] = []
        threads_before = threading.active_count()

        @fd.node
        def first(ctx: fd.Context) -> int:
            ctx.set("progress", "first done")
            return 1

        stopped_after: list[float] = []

        @fd.node
        def cooperative(first: int, ctx: fd.Context) -> str:
            token.cancel()
            asked = time.monotonic()
            deadline = asked + 5
            while not ctx.cancelled and time.monotonic() < deadline:
                time.sleep(0.005)
            stopped_after.append(time.monotonic() - asked)
            return "stopped early"

        @fd.node
        async def waiting(first: int) -> None:
            await asyncio.sleep(10)

        @fd.node(retries=5, retry_delay=0.01)
        def flaky(first: int, ctx: fd.Context) -> None:
            retried.append(ctx.attempt)
            raise ConnectionError("again")

        @fd.node
        def later(cooperative: str) -> str:
            return cooperative

        flow = fd.Flow("cancel", [first, cooperative, waiting, flaky, later])
        started = time.perf_counter()
        with pytest.raises(fd.FlowCancelled) as info:
            runner.run(flow, cancel=token)
        assert time.perf_counter() - started < 2
        result = info.value.result
        assert "cancelled" == result.status
        assert 1 == result["first"]
        assert "cancelled" == result.node_status["waiting"]
        assert "not_run" == result.node_status["later"]
        assert len(retried) <= 2  # no retry started after the cancel
        assert stopped_after[0] < 0.25  # a cooperative node stops promptly
        # Flowcraft hands back an empty context on cancel; flowdsl keeps it.
        assert {"progress": "first done"} == dict(result.state["context"])
        assert "stopped early" == result["cooperative"]  # and its value is kept
        assert threads_back_to(threads_before)

    def test_a_lone_node_sees_the_cancel_at_once(self, runner: Runner) -> None:
        token = fd.CancelToken()

        @fd.node
        def alone(ctx: fd.Context) -> str:  # may run on the scheduler's thread
            token.cancel()
            deadline = time.monotonic() + 5
            while not ctx.cancelled and time.monotonic() < deadline:
                time.sleep(0.001)
            return "saw it" if ctx.cancelled else "never saw it"

        started = time.perf_counter()
        result = runner.run(fd.Flow("alone", [alone]), cancel=token, check=False)
        assert time.perf_counter() - started < 1
        assert "cancelled" == result.status
        assert "saw it" == result["alone"]  # what it returned is kept

    def test_a_token_cancelled_before_the_run_runs_nothing(
        self, runner: Runner
    ) -> None:
        ran: list[str] = []
        token = fd.CancelToken()
        token.cancel()

        @fd.node
        def first() -> None:
            ran.append("first")

        result = runner.run(fd.Flow("pre", [first]), cancel=token, check=False)
        assert "cancelled" == result.status
        assert [] == ran
        assert "not_run" == result.node_status["first"]

    @pytest.mark.parametrize("executor", ["threads", "processes"])
    def test_the_grace_period_ends_the_run(
        self, runner: Runner, monkeypatch: pytest.MonkeyPatch, executor: str
    ) -> None:
        monkeypatch.setattr(scheduler_module, "GRACE_PERIOD", 0.3)
        RELEASE.clear()
        token = fd.CancelToken()
        timer = threading.Timer(0.2, token.cancel)
        timer.start()
        started = time.perf_counter()
        result = runner.run(
            fd.Flow("stubborn", [stubborn_one, stubborn_two]),
            {"seconds": 3.0},
            cancel=token,
            check=False,
            executor=executor,
        )
        elapsed = time.perf_counter() - started
        timer.join()
        RELEASE.set()  # let the abandoned threads go
        assert "cancelled" == result.status
        assert elapsed < 0.2 + 0.3 + 1.0  # not the 3 s the nodes wanted

    @pytest.mark.parametrize("trial", range(100))
    def test_cancel_at_random_times(self, runner: Runner, trial: int) -> None:
        rng = random.Random(SEED + trial)
        token = fd.CancelToken()
        threads_before = threading.active_count()

        @fd.node
        def items() -> list[int]:
            return list(range(40))

        @fd.batch(input=items, output="fast", concurrency=4)
        async def fast(item: int) -> int:
            await asyncio.sleep(0.0005)
            return item

        @fd.batch(input=items, output="slow", concurrency=2)
        def slow(item: int, ctx: fd.Context) -> int:
            if ctx.cancelled:
                return -1
            time.sleep(0.0005)
            return item

        @fd.node
        def total(fast: list[int], slow: list[int]) -> int:
            return sum(fast) + sum(slow)

        timer = threading.Timer(rng.uniform(0, 0.03), token.cancel)
        timer.start()
        result = runner.run(
            fd.Flow("random", [items, fast, slow, total]), cancel=token, check=False
        )
        timer.join()
        assert result.status in ("cancelled", "completed")
        if result.status == "cancelled":
            assert "total" not in result or result["total"] == 2 * sum(range(40))
        else:
            assert 2 * sum(range(40)) == result["total"]
        if "items" in result:  # a cancel may come before anything ran
            assert list(range(40)) == result["items"]
        assert threads_back_to(threads_before)

    def test_keyboard_interrupt_during_run(self) -> None:
        release = threading.Event()

        @fd.node
        def done_first() -> int:
            return 1

        @fd.node
        def interrupting(done_first: int, ctx: fd.Context) -> None:
            time.sleep(0.05)  # Ctrl-C lands while the run waits, as it would
            os.kill(os.getpid(), signal.SIGINT)
            while not ctx.cancelled:
                time.sleep(0.005)
            release.set()

        @fd.node
        def neighbour(done_first: int) -> int:  # keeps the node on a thread
            return done_first

        flow = fd.Flow("ctrl-c", [done_first, interrupting, neighbour])
        with pytest.raises(KeyboardInterrupt) as info:
            flow.run()
        result = info.value.result  # type: ignore[attr-defined]
        assert "cancelled" == result.status
        assert 1 == result["done_first"]
        assert release.is_set()  # the node saw ctx.cancelled and returned

    def test_keyboard_interrupt_inside_an_inline_node(self) -> None:
        @fd.node
        def done_first() -> int:
            return 1

        @fd.node
        def interrupted(done_first: int) -> None:
            _thread.interrupt_main()
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:  # interrupted here, on this thread
                time.sleep(0.001)

        started = time.perf_counter()
        with pytest.raises(KeyboardInterrupt) as info:
            fd.Flow("ctrl-c-inline", [done_first, interrupted]).run()
        assert time.perf_counter() - started < 2
        result = info.value.result  # type: ignore[attr-defined]
        assert "cancelled" == result.status
        assert "cancelled" == result.node_status["interrupted"]

    def test_cancelling_the_task_awaiting_arun(self) -> None:
        started = threading.Event()

        @fd.node
        def quick() -> int:
            return 1

        @fd.node
        async def endless(quick: int) -> None:
            started.set()
            await asyncio.sleep(10)

        flow = fd.Flow("task", [quick, endless])

        async def main() -> set[asyncio.Task[Any]]:
            task = asyncio.ensure_future(flow.arun())
            while not started.is_set():
                await asyncio.sleep(0.001)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}

        assert set() == asyncio.run(main())
