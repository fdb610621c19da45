"""Run events: kinds, order, custom events, and none built without a listener."""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

import flowdsl as fd
from flowdsl import _events

from .conftest import Runner


class TestEvents:
    """Each run reports what happened, in strictly increasing `seq` order."""

    def test_lifecycle_of_a_small_flow(self, runner: Runner) -> None:
        events: list[fd.Event] = []

        @fd.node
        def items() -> list[int]:
            return [1, 2, 3]

        @fd.batch(input=items, output="out", on_error="skip", chunk_size=3)
        def work(item: int) -> int:
            if item == 2:
                raise ValueError("two")
            return item

        @fd.node
        def gate() -> fd.Action[None]:
            return fd.Action("closed")

        @fd.node(on=(gate, "open"))
        def never() -> int:
            return 0

        runner.run(
            fd.Flow("events", [items, work, gate, never]),
            run_id="e1",
            on_event=events.append,
            executor="inline",
        )
        kinds = [(e.kind, e.node_id, e.item_index) for e in events]
        assert ("run_start", None, None) == kinds[0]
        assert ("run_finish", None, None) == kinds[-1]
        assert {"status": "completed"} == events[-1].data
        assert ("node_error", "work", 1) in kinds
        assert ("node_skipped", "never", None) in kinds
        assert kinds.index(("node_start", "work", None)) < kinds.index(
            ("batch_progress", "work", None)
        )
        assert kinds.index(("batch_progress", "work", None)) < kinds.index(
            ("node_finish", "work", None)
        )
        assert list(range(1, len(events) + 1)) == [e.seq for e in events]
        assert {"e1"} == {e.run_id for e in events}

    def test_custom_events_from_ten_concurrent_nodes(self, runner: Runner) -> None:
        seen: list[int] = []
        lock = threading.Lock()
        bus = fd.EventBus()

        def record(event: fd.Event) -> None:
            with lock:
                seen.append(event.seq)

        bus.subscribe(record, kind="tick")

        def make(i: int) -> Any:
            def emitter(ctx: fd.Context) -> int:
                for n in range(1000):
                    ctx.emit("tick", {"node": i, "n": n})
                return i

            return fd.node(id=f"emitter{i}")(emitter)

        runner.run(fd.Flow("busy", [make(i) for i in range(10)]), on_event=bus)
        assert 10_000 == len(seen)
        assert all(a < b for a, b in zip(seen, seen[1:]))

    def test_no_event_is_built_without_a_listener(
        self, runner: Runner, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        def refuse(*args: Any, **kwargs: Any) -> None:
            raise AssertionError("an event was built with nobody listening")

        monkeypatch.setattr(_events.Event, "__init__", refuse)

        @fd.node
        def talk(ctx: fd.Context) -> int:
            ctx.emit("said", 1)
            return 1

        assert 1 == runner.run(fd.Flow("quiet", [talk]))["talk"]


class TestMiddleware:
    """Middleware wraps every call, in order, and may replace or rescue it."""

    def test_order_observation_replacement_and_rescue(self, runner: Runner) -> None:
        trail: list[str] = []

        class Tracer(fd.Middleware):
            def wrap(self, call: Any, info: fd.CallInfo) -> Any:
                trail.append(f"outer>{info.node_id}")
                value = call()
                trail.append(f"outer<{info.node_id}")
                return value

            async def awrap(self, call: Any, info: fd.CallInfo) -> Any:
                trail.append(f"outer>{info.node_id}")
                value = await call()
                trail.append(f"outer<{info.node_id}")
                return value

        def inner(call: Any, info: fd.CallInfo) -> Any:
            trail.append(f"inner>{info.node_id}")
            try:
                value = call()
            except ZeroDivisionError:
                return "rescued"  # a sync middleware rescuing an error
            return value * 10 if info.node_id == "ten" else value

        async def ainner(call: Any, info: fd.CallInfo) -> Any:
            trail.append(f"ainner>{info.node_id}")
            return f"{await call()}!"

        @fd.node
        def ten() -> int:
            return 1

        @fd.node
        def divide(ten: int) -> Any:  # a middleware may change the type
            return ten / 0

        @fd.node
        async def shout(divide: str) -> str:
            return divide.upper()

        result = runner.run(
            fd.Flow("mw", [ten, divide, shout]),
            middleware=[Tracer(), inner, ainner],
        )
        assert 10 == result["ten"]
        assert "rescued" == result["divide"]
        assert "RESCUED!" == result["shout"]
        assert [
            "outer>ten", "inner>ten", "outer<ten",
            "outer>divide", "inner>divide", "outer<divide",
            "outer>shout", "ainner>shout", "outer<shout",
        ] == trail  # fmt: skip

    def test_batch_items_are_wrapped_one_by_one(self, runner: Runner) -> None:
        seen: list[tuple[Any, Any]] = []

        def note(call: Any, info: fd.CallInfo) -> Any:
            seen.append((info.item_index, info.attempt))
            return call()

        @fd.node
        def items() -> list[int]:
            return [5, 6, 7]

        @fd.batch(input=items, output="out", chunk_size=2)
        def work(item: int) -> int:
            return item

        runner.run(fd.Flow("mw-batch", [items, work]), middleware=[note])
        assert [(0, 1), (1, 1), (2, 1)] == sorted(s for s in seen if s[0] is not None)

    def test_bad_middleware_is_rejected(self, runner: Runner) -> None:
        @fd.node
        def one() -> int:
            return 1

        with pytest.raises(fd.DefinitionError, match="middleware"):
            runner.run(fd.Flow("bad-mw", [one]), middleware=[42])


def progress_flow() -> fd.Flow:
    @fd.node
    def items() -> list[int]:
        return list(range(30))

    @fd.batch(input=items, output="out", concurrency=3)
    async def work(item: int) -> int:
        await asyncio.sleep(0.001)
        return item

    return fd.Flow("progress", [items, work])


class TestProgress:
    """Progress bars go to stderr, only on a terminal unless forced."""

    def test_off_when_stderr_is_not_a_terminal(
        self, runner: Runner, capsys: pytest.CaptureFixture[str]
    ) -> None:
        runner.run(progress_flow(), progress=True)
        assert "" == capsys.readouterr().err

    def test_plain_lines_without_rich(
        self,
        runner: Runner,
        capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        monkeypatch.setitem(sys.modules, "rich.progress", None)  # as if absent
        runner.run(progress_flow(), progress="always")
        err = capsys.readouterr().err
        assert "work: " in err
        assert re.search(r"work: done *\n", err)

    def test_rich_bars_when_installed(
        self, runner: Runner, capsys: pytest.CaptureFixture[str]
    ) -> None:
        pytest.importorskip("rich")
        runner.run(progress_flow(), progress="always")
        err = capsys.readouterr().err
        assert "work" in err
        assert "work: done" not in err  # rich drew it, not the plain fallback


class TestLogging:
    """flowdsl logs through the `flowdsl` logger, and never prints."""

    def test_a_failed_run_is_logged_as_a_warning(
        self, runner: Runner, caplog: pytest.LogCaptureFixture
    ) -> None:
        @fd.node
        def broken() -> None:
            raise ValueError("logged")

        with caplog.at_level(logging.INFO, logger="flowdsl"):
            runner.run(fd.Flow("logs", [broken]), check=False)
        (record,) = [r for r in caplog.records if r.name == "flowdsl"]
        assert logging.WARNING == record.levelno
        assert "'broken'" in record.getMessage()

    def test_no_print_anywhere_in_flowdsl(self) -> None:
        root = Path(fd.__file__).parent
        hits = [
            f"{path.name}:{number}"
            for path in sorted(root.rglob("*.py"))
            for number, line in enumerate(path.read_text().splitlines(), 1)
            if re.search(r"(?<![\w.])print\(", line)
        ]
        assert [] == hits


class TestMiddlewareForms:
    """A sync `wrap` must be sync; an object with `async __call__` is async."""

    def test_an_async_wrap_is_rejected(self, runner: Runner) -> None:
        class Wrong(fd.Middleware):
            async def wrap(self, call: Any, info: fd.CallInfo) -> Any:  # type: ignore[override]
                return call()

        @fd.node
        def one() -> int:
            return 1

        with pytest.raises(fd.DefinitionError, match="awrap"):
            runner.run(fd.Flow("wrong", [one]), middleware=[Wrong()])

    def test_an_async_callable_object_wraps_async_nodes(self, runner: Runner) -> None:
        seen: list[str] = []

        class Around:
            async def __call__(self, call: Any, info: fd.CallInfo) -> Any:
                seen.append(info.node_id)
                return await call()

        @fd.node
        async def fetch() -> int:
            return 2

        @fd.node
        def plain(fetch: int) -> int:
            return fetch

        result = runner.run(fd.Flow("obj-mw", [fetch, plain]), middleware=[Around()])
        assert 2 == result["plain"]
        assert ["fetch"] == seen
