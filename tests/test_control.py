"""Control flow: routing by action, conditions, skips and joins, on both faces."""

from __future__ import annotations

import threading
from typing import Any, Mapping

import pytest

import flowdsl as fd

from .conftest import Runner


def routed_flow(ran: list[str]) -> fd.Flow:
    @fd.node
    def classify(amount: int) -> fd.Action:
        return fd.Action("big" if amount > 100 else "small", amount)

    @fd.node(on=(classify, "big"))
    def review(classify: int) -> str:
        ran.append("review")
        return f"review {classify}"

    @fd.node(on=(classify, "small"))
    def approve(classify: int) -> str:
        ran.append("approve")
        return f"approve {classify}"

    @fd.node
    def notify(review: str) -> str:  # one level below a routed node
        ran.append("notify")
        return f"notified: {review}"

    @fd.node
    def archive(notify: str) -> str:  # two levels below
        ran.append("archive")
        return notify

    @fd.node
    def report(review: str | None = None, approve: str | None = None) -> str:
        ran.append("report")
        return review or approve or "nothing"

    return fd.Flow("routing", [classify, review, approve, notify, archive, report])


class TestRouting:
    """Actions pick the branch; nodes on branches not taken are skipped."""

    def test_taken_and_not_taken_branches(self, runner: Runner) -> None:
        ran: list[str] = []
        result = runner.run(routed_flow(ran), {"amount": 500})
        assert "completed" == result.status
        assert 500 == result["classify"]  # consumers see the action's value
        assert "review 500" == result["review"]
        assert "skipped" == result.node_status["approve"]
        assert "approve" not in result
        assert {"review", "notify", "archive", "report"} == set(ran)
        assert ran.index("review") < ran.index("notify") < ran.index("archive")

    def test_skip_propagates_two_levels(self, runner: Runner) -> None:
        ran: list[str] = []
        result = runner.run(routed_flow(ran), {"amount": 5})
        assert {
            "classify": "completed",
            "review": "skipped",
            "approve": "completed",
            "notify": "skipped",
            "archive": "skipped",
            "report": "completed",
        } == dict(result.node_status)
        assert ["approve", "report"] == ran  # report waits for approve

    def test_join_after_a_branch_runs_with_the_taken_side(self, runner: Runner) -> None:
        result = runner.run(routed_flow([]), {"amount": 5})
        assert "approve 5" == result["report"]
        assert "completed" == result.status

    def test_no_route_taken_skips_every_branch(self, runner: Runner) -> None:
        @fd.node
        def decide() -> fd.Action:
            return fd.Action("neither")

        @fd.node(on=(decide, "yes"))
        def yes() -> int:
            return 1

        @fd.node(on=(decide, "no"))
        def no() -> int:
            return 0

        @fd.node
        def after(yes: int = -1, no: int = -1) -> int:
            return yes + no

        result = runner.run(fd.Flow("none", [decide, yes, no, after]))
        assert "skipped" == result.node_status["after"]  # every predecessor skipped
        assert "completed" == result.status

    def test_a_long_skipped_chain_does_not_recurse(self, runner: Runner) -> None:
        @fd.node
        def gate() -> fd.Action[int]:
            return fd.Action("closed", 0)

        def make_link(i: int) -> Any:
            def link(previous: int = fd.From(f"link{i - 1}")) -> int:
                return previous + 1

            return fd.node(id=f"link{i}")(link)

        @fd.node(id="link0", on=(gate, "open"))
        def first(gate: int) -> int:
            return gate

        links = [make_link(i) for i in range(1, 3000)]
        result = runner.run(fd.Flow("chain", [gate, first, *links]))
        assert "skipped" == result.node_status["link2999"]
        assert "completed" == result.status


class TestConditions:
    """`when=` gates a node on upstream outputs and flow inputs."""

    def test_callable_condition(self, runner: Runner) -> None:
        seen: list[Mapping[str, Any]] = []

        @fd.node
        def score() -> float:
            return 0.9

        def confident(values: Mapping[str, Any], ctx: fd.Context) -> bool:
            seen.append(dict(values))
            assert "publish" == ctx.node_id
            return bool(values["score"] > values["threshold"])

        @fd.node(when=confident)
        def publish(score: float) -> str:
            return f"published {score}"

        flow = fd.Flow("cond", [score, publish])
        assert "published 0.9" == runner.run(flow, {"threshold": 0.5})["publish"]
        skipped = runner.run(flow, {"threshold": 0.95})
        assert "skipped" == skipped.node_status["publish"]
        assert {"score": 0.9, "threshold": 0.5} == seen[0]

    def test_string_condition_over_outputs_and_inputs(self, runner: Runner) -> None:
        @fd.node
        def score(text: str) -> dict[str, Any]:
            return {"value": len(text) / 10, "flags": ["checked"]}

        @fd.node(when="score.value >= threshold and 'checked' in score['flags']")
        def publish(text: str) -> str:
            return f"published {text}"

        flow = fd.Flow("string-cond", [score, publish])
        assert (
            "score.value >= threshold" in flow.blueprint.node("publish").config["when"]
        )
        assert "publish" in flow.blueprint.to_json()
        assert ("score", "publish") in [
            (e.source, e.target) for e in flow.blueprint.edges
        ]
        done = runner.run(flow, {"text": "hello world", "threshold": 0.5})
        assert "published hello world" == done["publish"]
        skipped = runner.run(flow, {"text": "hi", "threshold": 0.5})
        assert "skipped" == skipped.node_status["publish"]
        with pytest.raises(fd.MissingInputError, match="'threshold'"):
            runner.run(flow, {"text": "hi"})

    def test_condition_values_are_read_only(self, runner: Runner) -> None:
        @fd.node
        def start() -> int:
            return 1

        def meddle(values: Mapping[str, Any], ctx: fd.Context) -> bool:
            values["start"] = 2  # type: ignore[index]
            return True

        @fd.node(when=meddle)
        def after(start: int) -> int:
            return start

        with pytest.raises(fd.FlowFailed) as info:
            runner.run(fd.Flow("ro", [start, after]))
        assert isinstance(info.value.__cause__, TypeError)
        assert "failed" == info.value.result.node_status["after"]

    def test_a_raising_condition_fails_its_node(self, runner: Runner) -> None:
        def broken(values: Mapping[str, Any], ctx: fd.Context) -> bool:
            raise RuntimeError("condition broke")

        @fd.node(when=broken)
        def guarded() -> int:
            return 1

        result = runner.run(fd.Flow("broken", [guarded]), check=False)
        assert "failed" == result.status
        (error,) = result.errors
        assert ("guarded", "condition broke") == (error.node_id, str(error.exception))


class TestJoins:
    """`join="all"` waits for every live predecessor; `"any"` runs exactly once."""

    def test_join_any_runs_exactly_once_when_three_finish(self, runner: Runner) -> None:
        calls: list[dict[str, Any]] = []
        release = threading.Event()

        @fd.node
        def fast() -> str:
            return "fast"

        @fd.node
        def slow_one() -> str:
            assert release.wait(10)
            return "slow one"

        @fd.node
        def slow_two() -> str:
            assert release.wait(10)
            return "slow two"

        @fd.node(join="any")
        def first(
            fast: str | None = None,
            slow_one: str | None = None,
            slow_two: str | None = None,
        ) -> str:
            calls.append({"fast": fast, "slow_one": slow_one, "slow_two": slow_two})
            release.set()
            return fast or slow_one or slow_two or ""

        result = runner.run(fd.Flow("any", [fast, slow_one, slow_two, first]))
        assert [{"fast": "fast", "slow_one": None, "slow_two": None}] == calls
        assert "fast" == result["first"]
        assert {"slow one", "slow two"} == {result["slow_one"], result["slow_two"]}

    def test_join_any_needs_defaults(self) -> None:
        @fd.node
        def a() -> int:
            return 1

        @fd.node(join="any")
        def b(a: int) -> int:
            return a

        with pytest.raises(fd.BlueprintError, match=r"join='any'.*'a'"):
            fd.Flow("any-defaults", [a, b])

    def test_join_any_with_every_predecessor_skipped_is_skipped(
        self, runner: Runner
    ) -> None:
        @fd.node
        def gate() -> fd.Action:
            return fd.Action("closed")

        @fd.node(on=(gate, "open"))
        def left() -> int:
            return 1

        @fd.node(on=(gate, "open"))
        def right() -> int:
            return 2

        @fd.node(join="any")
        def either(left: int = 0, right: int = 0) -> int:
            return left + right

        result = runner.run(fd.Flow("any-skip", [gate, left, right, either]))
        assert "skipped" == result.node_status["either"]
        assert "completed" == result.status

    def test_join_any_with_a_route_is_rejected(self) -> None:
        @fd.node
        def router() -> fd.Action[int]:
            return fd.Action("go", 1)

        @fd.node
        def other() -> int:
            return 2

        @fd.node(join="any", on=(router, "go"))
        def either(router: int = 0, other: int = 0) -> int:
            return router + other

        with pytest.raises(fd.BlueprintError, match="join='any' and on="):
            fd.Flow("any-on", [router, other, either])

    def test_a_condition_name_close_to_a_node_warns(self) -> None:
        @fd.node
        def score() -> float:
            return 1.0

        @fd.node(when="scroe > 0.5")
        def publish() -> int:
            return 1

        with pytest.warns(fd.FlowWarning, match="Did you mean 'score'"):
            fd.Flow("typo", [score, publish])

    def test_a_condition_on_a_skipped_node_skips(self, runner: Runner) -> None:
        @fd.node
        def gate() -> fd.Action[int]:
            return fd.Action("closed", 0)

        @fd.node(on=(gate, "open"))
        def measured() -> int:
            return 5

        @fd.node(when="measured > 3")
        def react() -> str:
            return "reacted"

        result = runner.run(fd.Flow("cond-skip", [gate, measured, react]))
        assert "skipped" == result.node_status["react"]
        assert "completed" == result.status

    def test_a_batch_whose_input_was_skipped_is_skipped(self, runner: Runner) -> None:
        @fd.node
        def flag() -> fd.Action[int]:
            return fd.Action("no", 1)

        @fd.node(on=(flag, "yes"))
        def items() -> list[int]:
            return [1]

        @fd.node
        def other() -> int:
            return 1

        @fd.batch(input=items, output="out", after=[other])
        def work(item: int) -> int:
            return item

        result = runner.run(fd.Flow("skip-batch", [flag, items, other, work]))
        assert "skipped" == result.node_status["work"]

    def test_after_orders_without_passing_values(self, runner: Runner) -> None:
        order: list[str] = []

        @fd.node
        def setup() -> None:
            order.append("setup")

        @fd.node(after=[setup])
        def work() -> int:
            order.append("work")
            return 1

        runner.run(fd.Flow("after", [work, setup]), executor="threads")
        assert ["setup", "work"] == order


class TestFlowcraftTraps:
    """Where Flowcraft goes wrong with branches and joins, flowdsl does not."""

    def test_a_join_never_silently_fails_to_run(self, runner: Runner) -> None:
        # Flowcraft leaves a join behind a skipped branch pending forever and
        # reports the run completed; here every node ends completed or skipped.
        result = runner.run(routed_flow([]), {"amount": 5})
        assert set(result.node_status.values()) <= {"completed", "skipped"}
        assert "completed" == result.node_status["report"]

    def test_a_required_input_from_a_skipped_branch_skips_the_consumer(
        self, runner: Runner
    ) -> None:
        @fd.node
        def gate() -> fd.Action:
            return fd.Action("closed", 0)

        @fd.node(on=(gate, "open"))
        def produce() -> int:
            return 1

        @fd.node
        def consume(produce: int, gate: int) -> int:
            return produce + gate

        result = runner.run(fd.Flow("required", [gate, produce, consume]))
        assert "skipped" == result.node_status["consume"]

    def test_bad_routes_are_reported_at_build(self) -> None:
        @fd.node(on=("nobody", "x"), after=["ghost"])
        def orphan() -> int:
            return 1

        with pytest.raises(fd.BlueprintError) as info:
            fd.Flow("routes", [orphan])
        assert 2 == len(info.value.problems)
        assert "'nobody'" in info.value.problems[0]
        assert "'ghost'" in info.value.problems[1]

    @pytest.mark.parametrize(
        ("option", "value"),
        [("on", "classify"), ("on", ("classify",)), ("join", "some"), ("when", 3)],
    )
    def test_bad_options_are_rejected_at_decoration(
        self, option: str, value: Any
    ) -> None:
        def target() -> int:
            return 1

        with pytest.raises(fd.DefinitionError, match=option):
            fd.node(**{option: value})(target)
