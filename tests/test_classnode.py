"""Class nodes: prep once, exec retried, post, fallback and recover."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import flowdsl as fd

from .conftest import Runner


class Summarize(fd.NodeClass):
    """Counts words, failing the first two `exec` attempts."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def prep(self, text: str) -> list[str]:
        self.calls.append("prep")
        return text.split()

    def exec(self, words: list[str]) -> int:
        self.calls.append("exec")
        if self.calls.count("exec") < 3:
            raise ConnectionError("model busy")
        return len(words)

    def post(self, count: int) -> str:
        self.calls.append("post")
        return f"{count} words"

    def recover(self, error: BaseException) -> None:
        self.calls.append(f"recover:{type(error).__name__}")


class TestLifecycle:
    """Only exec is retried; recover runs whenever a phase failed."""

    def test_prep_once_exec_retried_post_once(self, runner: Runner) -> None:
        summarize = Summarize()
        node = fd.node(retries=2)(summarize)
        assert "summarize" == node.id
        result = runner.run(fd.Flow("words", [node]), {"text": "a b c"})
        assert "3 words" == result["summarize"]
        assert [
            "prep",
            "exec",
            "recover:ConnectionError",
            "exec",
            "recover:ConnectionError",
            "exec",
            "post",
        ] == summarize.calls

    def test_a_failing_prep_is_not_retried(self, runner: Runner) -> None:
        class Broken(fd.NodeClass):
            def __init__(self) -> None:
                self.preps = 0

            def prep(self, x: int) -> int:
                self.preps += 1
                raise ValueError("bad input")

            def exec(self, prepared: int) -> int:
                return prepared

        broken = Broken()
        result = runner.run(
            fd.Flow("broken", [fd.node(retries=3)(broken)]), {"x": 1}, check=False
        )
        assert 1 == broken.preps
        (error,) = result.errors
        assert isinstance(error.exception, fd.FlowdslError)
        assert isinstance(error.exception.__cause__, ValueError)

    def test_fallback_method_stands_in(self, runner: Runner) -> None:
        class Guarded(fd.NodeClass):
            async def exec(self, x: int) -> int:
                await asyncio.sleep(0)
                raise TimeoutError("slow service")

            def fallback(self, error: BaseException) -> int:
                return -1

        result = runner.run(fd.Flow("guarded", [Guarded()]), {"x": 1})
        assert -1 == result["guarded"]
        assert "rescued" == result.node_status["guarded"]

    def test_class_nodes_read_upstream_values_by_name(self, runner: Runner) -> None:
        @fd.node
        def text() -> str:
            return "one two"

        class Upper(fd.NodeClass):
            def exec(self, text: str) -> str:
                return text.upper()

        assert "ONE TWO" == runner.run(fd.Flow("up", [text, Upper()]))["upper"]

    def test_exec_is_required(self) -> None:
        class Empty(fd.NodeClass):
            pass

        with pytest.raises(fd.DefinitionError, match="must define an exec method"):
            fd.node(Empty())  # type: ignore[call-overload]

    def test_types_flow_from_the_methods(self) -> None:
        class Length(fd.NodeClass):
            def exec(self, text: str) -> int:
                return len(text)

        @fd.node
        def shout(length: str) -> Any:
            return length

        with pytest.raises(fd.BlueprintError, match="'length' returns int"):
            fd.Flow("typed", [Length(), shout])


class TestEdges:
    """Class nodes in odd places fail clearly or work as written."""

    def test_an_async_fallback_method_is_awaited(self, runner: Runner) -> None:
        class Flaky(fd.NodeClass):
            def exec(self, x: int) -> int:
                raise ConnectionError("down")

            async def fallback(self, error: BaseException) -> int:
                await asyncio.sleep(0)
                return 7

        result = runner.run(fd.Flow("afb", [Flaky()]), {"x": 1})
        assert 7 == result["flaky"]

    def test_overlapping_runs_keep_their_own_prepared_values(
        self, runner: Runner
    ) -> None:
        import threading

        barrier = threading.Barrier(2, timeout=5)

        class Slow(fd.NodeClass):
            def __init__(self) -> None:
                self.preps: list[str] = []
                self.failed: set[str] = set()

            def prep(self, text: str) -> str:
                self.preps.append(text)
                return text

            def exec(self, text: str) -> str:
                if text not in self.failed:  # each run's first attempt fails,
                    self.failed.add(text)
                    barrier.wait()  # once both runs have prepared
                    raise ConnectionError("busy")
                return text.upper()

        slow = Slow()
        flow = fd.Flow("slow", [fd.node(id="shout", retries=1)(slow)])
        outputs: dict[str, str] = {}

        def one(text: str) -> None:
            outputs[text] = runner.run(flow, {"text": text})["shout"]

        threads = [threading.Thread(target=one, args=(t,)) for t in ("a", "b")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert {"a": "A", "b": "B"} == outputs
        assert ["a", "b"] == sorted(slow.preps)  # prep ran once per run

    def test_a_class_node_cannot_be_a_batch_worker(self) -> None:
        class Worker(fd.NodeClass):
            def exec(self, item: int) -> int:
                return item

        with pytest.raises(fd.DefinitionError, match="cannot be a batch worker"):
            fd.batch(input="items")(Worker())  # type: ignore[arg-type]

    def test_class_nodes_stay_out_of_processes(self, runner: Runner) -> None:
        class Local(fd.NodeClass):
            def exec(self, x: int) -> int:
                return x

        with pytest.raises(fd.DefinitionError, match="is a class node"):
            runner.run(fd.Flow("proc", [Local()]), {"x": 1}, executor="processes")
