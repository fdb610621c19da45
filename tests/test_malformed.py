"""Malformed definitions: every problem is caught early, named, and nothing runs."""

from __future__ import annotations

from typing import Any, AsyncIterator, Callable, Iterator, Sequence

import pytest
from typing_extensions import Annotated

import flowdsl as fd

from .conftest import Runner

#: Every node body in this module appends to this list; building a flow (or
#: failing to) must never run one, so the list stays empty.
BODY_LOG: list[str] = []


@pytest.fixture(autouse=True)
def _clear_body_log() -> Iterator[None]:
    BODY_LOG.clear()
    yield
    BODY_LOG.clear()


# -- module-level nodes -------------------------------------------------------


@fd.node
def load() -> list[int]:
    BODY_LOG.append("load")
    return [1, 2, 3]


@fd.node
def other() -> int:
    BODY_LOG.append("other")
    return 0


@fd.node
def fetch() -> int:
    BODY_LOG.append("fetch")
    return 1


@fd.node(id="fetch")
def fetch_again() -> int:
    BODY_LOG.append("fetch_again")
    return 2


@fd.node
def ping(pong: int) -> int:
    BODY_LOG.append("ping")
    return pong


@fd.node
def pong(ping: int) -> int:
    BODY_LOG.append("pong")
    return ping


@fd.node
def echo(echo: int) -> int:
    BODY_LOG.append("echo")
    return echo


@fd.node
def reader(value: int = fd.From("nope")) -> int:
    BODY_LOG.append("reader")
    return value


@fd.node
def typo_reader(value: Annotated[list[int], fd.From("laod")]) -> int:
    BODY_LOG.append("typo_reader")
    return len(value)


@fd.batch(input="missing_producer")
def orphan_batch(item: int) -> int:
    BODY_LOG.append("orphan_batch")
    return item


@fd.batch(input="lod")
def typo_batch(item: int) -> int:
    BODY_LOG.append("typo_batch")
    return item


@fd.batch(input=load, output="other")
def clash(item: int) -> int:
    BODY_LOG.append("clash")
    return item


@fd.batch(input=load)
def square(item: int) -> int:
    BODY_LOG.append("square")
    return item * item


@fd.node
def square_scatter() -> int:
    BODY_LOG.append("square_scatter")
    return 0


@fd.node
def slash(value: int, /) -> int:
    BODY_LOG.append("slash")
    return value


@fd.batch(input=load, output="load")
def shadow(item: int) -> int:
    BODY_LOG.append("shadow")
    return item


def countdown() -> Iterator[int]:
    BODY_LOG.append("countdown")
    yield 1


async def drip() -> AsyncIterator[int]:
    BODY_LOG.append("drip")
    yield 1


def item_worker(item: int) -> int:
    BODY_LOG.append("item_worker")
    return item


def nullary() -> int:
    BODY_LOG.append("nullary")
    return 0


def keyword_only(*, item: int) -> int:
    BODY_LOG.append("keyword_only")
    return item


def star_args(*args: int) -> int:
    BODY_LOG.append("star_args")
    return 0


def star_kwargs(**kwargs: int) -> int:
    BODY_LOG.append("star_kwargs")
    return 0


def star_items(*items: int) -> int:
    BODY_LOG.append("star_items")
    return 0


@fd.node
def needs_path(path: str) -> str:
    BODY_LOG.append("needs_path")
    return path


@fd.node
def parse(needs_path: str, path: str, limit: int = 3) -> str:
    BODY_LOG.append("parse")
    return needs_path[:limit]


@fd.node
def needs_token(token: str) -> str:
    BODY_LOG.append("needs_token")
    return token


@fd.node
def independent() -> int:
    BODY_LOG.append("independent")
    return 0


def _blueprint_error(nodes: Sequence[Any], flow_id: Any = "malformed") -> Any:
    """Build a flow that must fail, and return the `BlueprintError` raised."""
    with pytest.raises(fd.BlueprintError) as info:
        fd.Flow(flow_id, nodes)
    assert fd.BlueprintError is type(info.value)
    return info.value


class TestBlueprintErrors:
    """Building a flow reports each problem, naming the nodes involved."""

    @pytest.mark.parametrize(
        ("nodes", "names"),
        [
            pytest.param(
                [fetch, fetch_again],
                ["duplicate", "'fetch'", ":fetch", ":fetch_again"],
                id="duplicate-ids",
            ),
            pytest.param(
                [ping, pong],
                ["cycle", "'ping' -> 'pong'", "'pong' -> 'ping'"],
                id="two-node-cycle",
            ),
            pytest.param(
                [echo], ["cycle", "'echo' -> 'echo'"], id="self-loop-param-named-own-id"
            ),
            pytest.param(
                [load, reader], ["'reader'", "'value'", "'nope'"], id="from-unknown"
            ),
            pytest.param(
                [load, orphan_batch],
                ["'orphan_batch'", "'missing_producer'"],
                id="batch-input-unproduced",
            ),
            pytest.param(
                [load, other, clash],
                ["'other'", "'clash'"],
                id="batch-output-is-node-id",
            ),
            pytest.param(
                [load, square, square_scatter],
                ["'square_scatter'", "'square'"],
                id="name-is-batch-scatter-id",
            ),
            pytest.param([load, 42], ["item 1", "42", "not callable"], id="int"),
            pytest.param(
                [load, "not_a_node"],
                ["item 1", "'not_a_node'", "not callable"],
                id="string",
            ),
            pytest.param(
                [load, countdown],
                ["item 1", "'countdown'", "a generator"],
                id="plain-generator",
            ),
            pytest.param(
                [load, drip],
                ["item 1", "'drip'", "an async generator"],
                id="plain-async-generator",
            ),
            pytest.param(
                [load, lambda: BODY_LOG.append("lambda")],
                ["item 1", "lambda", "id="],
                id="plain-lambda",
            ),
            pytest.param([], ["at least one node"], id="empty"),
            pytest.param(
                [slash], ["'slash'", "'value'", "positional-only"], id="positional-only"
            ),
        ],
    )
    def test_one_problem_is_named(self, nodes: list[Any], names: list[str]) -> None:
        err = _blueprint_error(nodes)

        assert 1 == len(err.problems)
        for name in names:
            assert name in err.problems[0]
            assert name in str(err)
        assert [] == BODY_LOG

    def test_from_unknown_source_has_no_suggestion_without_close_match(self) -> None:
        err = _blueprint_error([load, reader])

        assert "Did you mean" not in str(err)

    @pytest.mark.parametrize(
        ("nodes", "offender", "missing", "suggestion"),
        [
            pytest.param(
                [load, typo_reader], "'typo_reader'", "'laod'", "'load'", id="from"
            ),
            pytest.param(
                [load, typo_batch], "'typo_batch'", "'lod'", "'load'", id="batch-input"
            ),
        ],
    )
    def test_unknown_source_suggests_close_match(
        self, nodes: list[Any], offender: str, missing: str, suggestion: str
    ) -> None:
        err = _blueprint_error(nodes)

        assert 1 == len(err.problems)
        assert offender in err.problems[0]
        assert missing in err.problems[0]
        assert f"Did you mean {suggestion}?" in err.problems[0]
        assert [] == BODY_LOG

    def test_three_node_cycle_shows_the_path(self) -> None:
        @fd.node
        def x(z: int) -> int:
            return z

        @fd.node
        def y(x: int) -> int:
            return x

        @fd.node
        def z(y: int) -> int:
            return y

        with pytest.raises(fd.BlueprintError) as info:
            fd.Flow("three", [x, y, z])
        problems = info.value.problems

        assert 1 == len(problems)
        # Each node waits for the next: x reads z, z reads y, y reads x.
        rotations = [
            "'x' -> 'z' -> 'y' -> 'x'",
            "'z' -> 'y' -> 'x' -> 'z'",
            "'y' -> 'x' -> 'z' -> 'y'",
        ]
        assert any(path in problems[0] for path in rotations), problems[0]

    def test_three_problems_in_one_error(self) -> None:
        err = _blueprint_error([fetch, fetch_again, ping, pong, 42])

        assert 3 == len(err.problems)
        expected = [
            ["duplicate", "'fetch'"],
            ["cycle", "'ping'", "'pong'"],
            ["item 4", "42"],
        ]
        for names in expected:
            matching = [p for p in err.problems if all(n in p for n in names)]
            assert 1 == len(matching), (names, err.problems)
        assert "has 3 problems" in str(err)
        assert [] == BODY_LOG

    def test_unusable_callables_are_each_reported(self) -> None:
        err = _blueprint_error(
            [load, countdown, drip, lambda: BODY_LOG.append("lambda")]
        )

        assert 3 == len(err.problems)
        assert "'countdown'" in err.problems[0]
        assert "'drip'" in err.problems[1]
        assert "lambda" in err.problems[2]
        assert [] == BODY_LOG

    def test_batch_output_shadowing_its_input_is_reported(self) -> None:
        err = _blueprint_error([load, shadow])

        clashes = [p for p in err.problems if "'load'" in p and "'shadow'" in p]
        assert 1 == len(clashes), err.problems
        assert [] == BODY_LOG

    @pytest.mark.parametrize("flow_id", [42, None, b"flow", ""], ids=repr)
    def test_flow_id_must_be_a_non_empty_string(self, flow_id: Any) -> None:
        err = _blueprint_error([load], flow_id=flow_id)

        assert 1 == len(err.problems)
        assert "flow id" in err.problems[0]
        assert repr(flow_id) in err.problems[0]
        assert [] == BODY_LOG

    @pytest.mark.parametrize(
        "nodes",
        [
            pytest.param(42, id="int"),
            pytest.param(None, id="none"),
            pytest.param("load", id="str"),
        ],
    )
    def test_nodes_must_be_a_list(self, nodes: Any) -> None:
        err = _blueprint_error(nodes)

        assert 1 == len(err.problems)
        assert type(nodes).__name__ in err.problems[0]


class TestDefinitionErrors:
    """A decorator rejects what cannot be a node when it is applied."""

    @pytest.mark.parametrize(
        ("make", "names"),
        [
            pytest.param(
                lambda: fd.node(countdown),
                ["'countdown'", "a generator"],
                id="generator",
            ),
            pytest.param(
                lambda: fd.node(drip), ["'drip'", "an async generator"], id="async-gen"
            ),
            pytest.param(
                lambda: fd.node(id="drops")(drip),
                ["'drip'", "an async generator"],
                id="async-generator-with-options",
            ),
            pytest.param(
                lambda: fd.batch(input="load")(countdown),
                ["'countdown'", "a generator"],
                id="generator-batch-worker",
            ),
            pytest.param(
                lambda: fd.node(lambda: BODY_LOG.append("lambda")),
                ["lambda", "id="],
                id="lambda-without-id",
            ),
            pytest.param(lambda: fd.node(42), ["42", "not callable"], id="int"),
            pytest.param(
                lambda: fd.batch(input="load", concurrency=0)(item_worker),
                ["'item_worker'", "concurrency", "got 0"],
                id="concurrency-0",
            ),
            pytest.param(
                lambda: fd.batch(input="load", concurrency=-2)(item_worker),
                ["'item_worker'", "concurrency", "got -2"],
                id="concurrency-negative",
            ),
            pytest.param(
                lambda: fd.batch(input="load", concurrency=True)(item_worker),
                ["'item_worker'", "concurrency", "got True"],
                id="concurrency-bool",
            ),
            pytest.param(
                lambda: fd.batch(input="load", concurrency=1.5)(item_worker),
                ["'item_worker'", "concurrency", "got 1.5"],
                id="concurrency-float",
            ),
            pytest.param(
                lambda: fd.batch(input="load", chunk_size=True)(item_worker),
                ["'item_worker'", "chunk_size", "got True"],
                id="chunk-size-bool",
            ),
            pytest.param(
                lambda: fd.batch(input="load", chunk_size=0)(item_worker),
                ["'item_worker'", "chunk_size", "got 0"],
                id="chunk-size-0",
            ),
            pytest.param(
                lambda: fd.batch(input="load", chunk_size=None)(item_worker),
                ["'item_worker'", "chunk_size", "got None"],
                id="chunk-size-none",
            ),
            pytest.param(
                lambda: fd.batch(input="load", on_error="nope")(item_worker),
                ["'item_worker'", "on_error", "'nope'", "'skip'"],
                id="on-error",
            ),
            pytest.param(
                lambda: fd.batch(input=123)(item_worker),
                ["'item_worker'", "input", "123"],
                id="input-int",
            ),
            pytest.param(
                lambda: fd.batch(input="")(item_worker),
                ["'item_worker'", "input", "''"],
                id="input-empty",
            ),
            pytest.param(
                lambda: fd.batch(input="load", output=5)(item_worker),
                ["'item_worker'", "output", "5"],
                id="output-int",
            ),
            pytest.param(
                lambda: fd.batch(input="load")(nullary),
                ["'nullary'", "first parameter"],
                id="worker-without-parameters",
            ),
            pytest.param(
                lambda: fd.batch(input="load")(keyword_only),
                ["'keyword_only'", "first parameter"],
                id="worker-keyword-only-item",
            ),
            pytest.param(
                lambda: fd.node(star_args), ["'star_args'", "*args"], id="star-args"
            ),
            pytest.param(
                lambda: fd.node(star_kwargs),
                ["'star_kwargs'", "**kwargs"],
                id="star-kwargs",
            ),
            pytest.param(
                lambda: fd.batch(input="load")(star_items),
                ["'star_items'", "*items"],
                id="star-items-batch-worker",
            ),
            pytest.param(
                lambda: fd.node(id=5)(item_worker),
                ["'item_worker'", "id", "5"],
                id="id-int",
            ),
            pytest.param(
                lambda: fd.node(id="")(item_worker),
                ["'item_worker'", "id", "''"],
                id="id-empty",
            ),
            pytest.param(
                lambda: fd.node(inline="yes")(item_worker),
                ["'item_worker'", "inline", "'yes'"],
                id="inline-not-bool",
            ),
            pytest.param(
                lambda: fd.node(fd.node(item_worker)),
                ["'item_worker'", "already a node"],
                id="decorated-twice",
            ),
            pytest.param(
                lambda: fd.batch(input="load")(fd.node(item_worker)),
                ["'item_worker'", "already a node"],
                id="node-as-batch-worker",
            ),
            pytest.param(lambda: fd.From(5), ["From()", "5"], id="from-int"),
        ],
    )
    def test_rejected_when_applied(
        self, make: Callable[[], Any], names: list[str]
    ) -> None:
        with pytest.raises(fd.DefinitionError) as info:
            make()

        assert fd.DefinitionError is type(info.value)
        for name in names:
            assert name in str(info.value)
        assert [] == BODY_LOG


class TestRunInputErrors:
    """run() checks its inputs before any node runs, naming what is wrong."""

    def test_missing_required_input(self, runner: Runner) -> None:
        flow = fd.Flow("inputs", [independent, needs_path, parse])

        with pytest.raises(fd.MissingInputError) as info:
            runner.run(flow)

        err = info.value
        assert fd.MissingInputError is type(err)
        assert {"path": ("needs_path", "parse")} == err.missing
        for name in ("'path'", "'needs_path'", "'parse'"):
            assert name in str(err)
        assert "'limit'" not in str(err)
        assert [] == BODY_LOG

    def test_every_missing_input_is_named(self, runner: Runner) -> None:
        flow = fd.Flow("inputs", [needs_path, needs_token])

        with pytest.raises(fd.MissingInputError) as info:
            runner.run(flow, {})

        assert {"path": ("needs_path",), "token": ("needs_token",)} == (
            info.value.missing
        )
        for name in ("'path'", "'token'", "'needs_path'", "'needs_token'"):
            assert name in str(info.value)
        assert [] == BODY_LOG

    @pytest.mark.parametrize(
        ("inputs", "hint"),
        [
            pytest.param({"pth": "a"}, "'pth' (did you mean 'path'?)", id="path"),
            pytest.param(
                {"path": "a", "limt": 1}, "'limt' (did you mean 'limit'?)", id="limit"
            ),
        ],
    )
    def test_unknown_input_suggests_close_match(
        self, runner: Runner, inputs: dict[str, Any], hint: str
    ) -> None:
        flow = fd.Flow("inputs", [needs_path, parse])

        with pytest.raises(fd.DefinitionError) as info:
            runner.run(flow, inputs)

        assert fd.DefinitionError is type(info.value)
        assert hint in str(info.value)
        assert "'limit', 'path'" in str(info.value)
        assert [] == BODY_LOG

    def test_node_output_passed_as_input(self, runner: Runner) -> None:
        flow = fd.Flow("inputs", [needs_path, parse])

        with pytest.raises(fd.DefinitionError) as info:
            runner.run(flow, {"path": "a", "needs_path": "b"})

        assert fd.DefinitionError is type(info.value)
        assert "'needs_path' (a node's output, not an input)" in str(info.value)
        assert [] == BODY_LOG
