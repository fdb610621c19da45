"""Subflows, batches of subflows and loops, on both faces."""

from __future__ import annotations

import asyncio
import importlib
import sys
from typing import Any, Mapping

import pytest

import flowdsl as fd

from .conftest import Runner


@fd.node
def increment(count: int) -> int:
    return count + 1


class TestLoops:
    """A loop repeats its body while its condition holds, up to its cap."""

    def test_counting_to_five(self, runner: Runner) -> None:
        counter = fd.loop(
            [increment],
            id="counter",
            carry={"count": increment},
            while_="increment < 5",
        )

        @fd.node
        def report(counter: int) -> str:
            return f"counted to {counter}"

        result = runner.run(fd.Flow("count", [counter, report]), {"count": 0})
        assert "counted to 5" == result["report"]
        assert {"increment": 5} == dict(result.children["counter"].outputs)

    def test_body_is_a_two_node_flow(self, runner: Runner) -> None:
        @fd.node
        def doubled(value: int) -> int:
            return value * 2

        @fd.node
        def plus_one(doubled: int) -> int:
            return doubled + 1

        body = fd.Flow("body", [doubled, plus_one])
        iterations: list[int] = []

        def under_100(values: Mapping[str, Any], ctx: fd.Context) -> bool:
            iterations.append(values["iteration"])
            return bool(values["plus_one"] < 100)

        grow = fd.loop(body, id="grow", carry={"value": "plus_one"}, while_=under_100)

        @fd.node
        def seed() -> int:
            return 1

        result = runner.run(fd.Flow("grow-flow", [seed, grow]), {"value": 1})
        # 1 -> 3 -> 7 -> 15 -> 31 -> 63 -> 127
        assert 127 == result["grow"]
        assert [1, 2, 3, 4, 5, 6] == iterations

    def test_inputs_mapping_feeds_the_first_iteration(self, runner: Runner) -> None:
        @fd.node
        def start() -> int:
            return 10

        counter = fd.loop(
            [increment],
            id="counter",
            inputs={"count": start},
            carry={"count": "increment"},
            while_="increment < 13",
        )
        result = runner.run(fd.Flow("mapped", [start, counter]))
        assert 13 == result["counter"]

    def test_exceeding_the_cap_fails(self, runner: Runner) -> None:
        forever = fd.loop(
            [increment],
            id="forever",
            carry={"count": "increment"},
            while_="True",
            max_iterations=7,
        )
        with pytest.raises(fd.FlowFailed) as info:
            runner.run(fd.Flow("cap", [forever]), {"count": 0})
        cause = info.value.__cause__
        assert isinstance(cause, fd.LoopLimitExceeded)
        assert "'forever'" in str(cause)
        assert 7 == info.value.result.children["forever"]["increment"]

    def test_false_after_the_first_iteration_runs_once(self, runner: Runner) -> None:
        runs: list[int] = []

        @fd.node
        def body_step(count: int) -> int:
            runs.append(count)
            return count + 1

        once = fd.loop(
            [body_step],
            id="once",
            carry={"count": body_step},
            while_="body_step < 0",
        )
        result = runner.run(fd.Flow("once-flow", [once]), {"count": 41})
        assert 42 == result["once"]
        assert [41] == runs

    def test_loop_in_the_blueprint_and_diagram(self) -> None:
        counter = fd.loop(
            [increment],
            id="counter",
            carry={"count": "increment"},
            while_="increment < 5",
        )
        flow = fd.Flow("drawn", [counter])
        spec = flow.blueprint.node("counter")
        assert "loop-controller" == spec.uses
        assert "increment < 5" == spec.params["while"]
        assert {"count": "increment"} == dict(spec.params["carry"])
        assert 'counter -- "while increment < 5" --> counter' in flow.to_mermaid()

    def test_carry_from_a_skipped_node_fails_clearly(self, runner: Runner) -> None:
        @fd.node
        def step(count: int) -> fd.Action[int]:
            return fd.Action("small" if count < 2 else "big", count + 1)

        @fd.node(on=(step, "big"))
        def big(step: int) -> int:
            return step

        body = fd.Flow("branchy", [step, big])
        stepper = fd.loop(body, id="stepper", carry={"count": big}, while_="True")
        with pytest.raises(fd.FlowFailed, match="skipped 'big'"):
            runner.run(fd.Flow("carry", [stepper]), {"count": 0})

    def test_while_names_are_checked_when_the_loop_is_built(self) -> None:
        with pytest.raises(fd.DefinitionError, match="'incremnt'"):
            fd.loop(
                [increment],
                id="typo",
                carry={"count": increment},
                while_="incremnt < 3",
            )

    @pytest.mark.parametrize(
        ("options", "fragment"),
        [
            ({"carry": {"nope": "increment"}}, "'nope'"),
            ({"carry": {"count": "ghost"}}, "'ghost'"),
            ({"max_iterations": 0}, "max_iterations"),
            ({"while_": "increment +"}, "increment"),
        ],
    )
    def test_bad_loops_are_rejected(
        self, options: dict[str, Any], fragment: str
    ) -> None:
        arguments: dict[str, Any] = {"while_": "increment < 5", **options}
        with pytest.raises(fd.DefinitionError, match=fragment):
            fd.loop([increment], id="bad", **arguments)


@fd.node
def add(a: int, b: int) -> int:
    return a + b


@fd.node
def square(add: int) -> int:
    return add * add


adder = fd.Flow("adder", [add, square])


class TestSubflows:
    """A flow used as a node: inputs in, one output out, errors with a path."""

    def test_inputs_and_output_mapping(self, runner: Runner) -> None:
        @fd.node
        def two() -> int:
            return 2

        @fd.node
        def three() -> int:
            return 3

        inner = fd.subflow(
            adder, id="inner", inputs={"a": two, "b": "three"}, output="add"
        )

        @fd.node
        def outer(inner: int) -> int:
            return inner * 10

        result = runner.run(fd.Flow("parent", [two, three, inner, outer]))
        assert 50 == result["outer"]
        assert {"add": 5, "square": 25} == dict(result.children["inner"].outputs)

    def test_default_output_is_the_single_terminal(self, runner: Runner) -> None:
        inner = fd.subflow(adder, id="inner")
        result = runner.run(fd.Flow("parent", [inner]), {"a": 1, "b": 2})
        assert 9 == result["inner"]

    def test_a_skipped_child_output_is_none(self, runner: Runner) -> None:
        @fd.node
        def gate() -> fd.Action[int]:
            return fd.Action("closed", 0)

        @fd.node(on=(gate, "open"))
        def answer() -> int:
            return 42

        child = fd.Flow("maybe", [gate, answer])
        result = runner.run(fd.Flow("parent", [fd.subflow(child, id="maybe")]))
        assert result["maybe"] is None
        assert "completed" == result.status

    def test_subflow_is_callable_like_a_function(self) -> None:
        inner = fd.subflow(adder, id="inner")
        assert 49 == inner(a=3, b=4)

    def test_a_failing_child_node_surfaces_with_its_path(self, runner: Runner) -> None:
        @fd.node
        def fragile(x: int) -> int:
            raise ValueError(f"cannot take {x}")

        child = fd.Flow("child", [fragile])
        middle = fd.Flow("middle", [fd.subflow(child, id="inner")])
        outer = fd.subflow(middle, id="outer")
        with pytest.raises(fd.FlowFailed) as info:
            runner.run(fd.Flow("top", [outer]), {"x": 3})
        (error,) = info.value.result.errors
        assert ("fragile", ("outer", "inner")) == (error.node_id, error.path)
        assert isinstance(info.value.__cause__, ValueError)
        assert "failed" == info.value.result.node_status["outer"]

    def test_nested_batches_ten_by_ten_in_order(self, runner: Runner) -> None:
        @fd.node
        def columns(row: int) -> list[int]:
            return list(range(10))

        @fd.batch(input=columns, output="cells")
        async def cell(column: int, row: int) -> int:
            await asyncio.sleep(0.001 * ((row * 7 + column * 3) % 5))
            return row * 10 + column

        row_flow = fd.Flow("row", [columns, cell])

        @fd.node
        def rows() -> list[int]:
            return list(range(10))

        grid = fd.subflow(row_flow, id="grid", over=rows, item="row", output="cell")
        result = runner.run(fd.Flow("grid-flow", [rows, grid]))
        assert [[r * 10 + c for c in range(10)] for r in range(10)] == result["grid"]

    def test_subflow_blueprint_embeds_the_child(self) -> None:
        flow = fd.Flow("parent", [fd.subflow(adder, id="inner", output="add")])
        spec = flow.blueprint.node("inner")
        assert "subflow" == spec.uses
        assert "adder" == spec.params["blueprintId"]
        assert (
            adder.blueprint.to_dict()
            == fd.Blueprint.from_dict(spec.params["blueprint"]).to_dict()
        )

    def test_direct_self_inclusion_is_rejected(self) -> None:
        sys.modules.pop("tests.recursive_self", None)
        with pytest.raises(fd.BlueprintError, match="contains itself") as info:
            importlib.import_module("tests.recursive_self")
        assert (
            "tests.recursive_self:flow -> tests.recursive_self:flow"
            in info.value.problems[0]
        )

    def test_a_reference_to_a_missing_module(self) -> None:
        with pytest.raises(fd.DefinitionError, match="cannot import 'no_such_mod'"):
            fd.subflow("no_such_mod:flow", id="x")

    def test_indirect_self_inclusion_is_rejected(self) -> None:
        for name in ("tests.recursive_a", "tests.recursive_b"):
            sys.modules.pop(name, None)
        with pytest.raises(fd.BlueprintError) as info:
            importlib.import_module("tests.recursive_a")
        assert (
            "tests.recursive_a:flow -> tests.recursive_b:flow -> tests.recursive_a:flow"
            in info.value.problems[0]
        )

    @pytest.mark.parametrize(
        ("options", "fragment"),
        [
            ({"inputs": {"zzz": "x"}}, "'zzz'"),
            ({"output": "ghost"}, "'ghost'"),
            ({"item": "a"}, "item= needs over="),
            ({"over": "rows"}, "over= needs item="),
            ({"over": "rows", "item": "nope"}, "'nope'"),
        ],
    )
    def test_bad_subflows_are_rejected(
        self, options: dict[str, Any], fragment: str
    ) -> None:
        with pytest.raises(fd.DefinitionError, match=fragment):
            fd.subflow(adder, id="bad", **options)


class TestContext:
    """Context state is shared across the run, and concurrent writes survive."""

    def test_eight_concurrent_nodes_lose_no_writes(self, runner: Runner) -> None:
        def make(i: int) -> Any:
            def bump(ctx: fd.Context) -> int:
                for _ in range(500):
                    ctx.set(f"key{i}", ctx.get(f"key{i}", 0) + 1)
                    ctx.set("shared", ctx.get("shared", 0))
                return i

            return fd.node(id=f"bump{i}")(bump)

        bumps = [make(i) for i in range(8)]

        @fd.node(after=bumps)
        def total(ctx: fd.Context) -> list[int]:
            return [ctx.get(f"key{i}") for i in range(8)]

        result = runner.run(fd.Flow("ctx", [*bumps, total]))
        assert [500] * 8 == result["total"]
