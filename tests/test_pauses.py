"""Pauses: waiting for an outside event, sleeping, and resuming from state."""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

import pytest

import flowdsl as fd

from .conftest import Runner


def approval_flow(ran: list[str]) -> fd.Flow:
    """A fresh flow object each call, built from the same code."""

    @fd.node
    def draft(topic: str) -> str:
        ran.append("draft")
        return f"draft about {topic}"

    approval = fd.wait_for("approval", after=[draft])

    @fd.node
    def publish(draft: str, approval: dict[str, Any]) -> str:
        ran.append("publish")
        return f"{draft}, approved by {approval['by']}"

    @fd.node
    def index(draft: str) -> int:  # does not wait for the approval
        ran.append("index")
        return len(draft)

    return fd.Flow("approval-flow", [draft, approval, publish, index])


def resume(runner: Runner, flow: fd.Flow, state: Any, **options: Any) -> fd.RunResult:
    if runner.face == "sync":
        return flow.resume(state, **options)
    return asyncio.run(flow.aresume(state, **options))


class TestWaitFor:
    """A run pauses at a wait node and resumes with the event's payload."""

    def test_pause_serialize_resume_on_a_new_flow(self, runner: Runner) -> None:
        ran: list[str] = []
        paused = runner.run(approval_flow(ran), {"topic": "owls"}, run_id="r-1")
        assert "awaiting" == paused.status
        assert ("approval",) == paused.waiting_for
        assert "waiting" == paused.node_status["approval"]
        assert "pending" == paused.node_status["publish"]
        assert 16 == paused["index"]  # independent work went on
        assert ["draft", "index"] == sorted(ran)

        text = json.dumps(paused.state)
        state = json.loads(text)
        done = resume(
            runner, approval_flow(ran), state, events={"approval": {"by": "Ada"}}
        )
        assert "completed" == done.status
        assert "r-1" == done.run_id
        assert "draft about owls, approved by Ada" == done["publish"]
        assert {"by": "Ada"} == done["approval"]
        assert ["draft", "index", "publish"] == sorted(ran)  # nothing ran twice

    def test_resume_without_the_event_stays_awaiting(self, runner: Runner) -> None:
        flow = approval_flow([])
        paused = runner.run(flow, {"topic": "owls"})
        again = resume(runner, flow, paused.state)
        assert "awaiting" == again.status
        assert ("approval",) == again.waiting_for

    def test_a_misspelled_event_is_rejected(self, runner: Runner) -> None:
        flow = approval_flow([])
        paused = runner.run(flow, {"topic": "owls"})
        with pytest.raises(fd.DefinitionError, match="Did you mean 'approval'"):
            resume(runner, flow, paused.state, events={"aproval": {"by": "Ada"}})

    @pytest.mark.parametrize(
        ("corrupt", "fragment"),
        [
            ({"version": 7}, "version"),
            ({"status": ["draft"]}, "'status' must be a mapping"),
            ({"outputs": {}}, "output of completed node 'draft' is missing"),
            ({"status": {"ghost": "completed"}}, "'ghost'"),
            ({"status": {"draft": "running"}}, "'running'"),
            ({"inputs": None}, "'inputs' must be a mapping"),
            ({"wakes": {"draft": "soon"}}, "not a number"),
            ({"run_id": 5}, "'run_id'"),
        ],
    )
    def test_a_corrupted_state_is_rejected_clearly(
        self, runner: Runner, corrupt: dict[str, Any], fragment: str
    ) -> None:
        flow = approval_flow([])
        paused = runner.run(flow, {"topic": "owls"})
        state = {**json.loads(json.dumps(paused.state)), **corrupt}
        with pytest.raises(fd.DefinitionError, match=re.escape(fragment)):
            resume(runner, flow, state)

    def test_context_survives_the_pause(self, runner: Runner) -> None:
        @fd.node
        def remember(ctx: fd.Context) -> None:
            ctx.set("note", "kept")

        gate = fd.wait_for("go", after=[remember])

        @fd.node
        def recall(go: Any, ctx: fd.Context) -> str:
            return f"{ctx.get('note')} {go}"

        flow = fd.Flow("ctx-pause", [remember, gate, recall])
        paused = runner.run(flow)
        state = json.loads(json.dumps(paused.state))
        assert "kept now" == resume(runner, flow, state, events={"go": "now"})["recall"]

    def test_state_of_another_flow_is_rejected(self, runner: Runner) -> None:
        paused = runner.run(approval_flow([]), {"topic": "owls"})

        @fd.node
        def other() -> int:
            return 1

        with pytest.raises(fd.DefinitionError, match="approval-flow"):
            resume(runner, fd.Flow("other", [other]), paused.state)
        with pytest.raises(fd.DefinitionError, match="state"):
            resume(runner, approval_flow([]), {"not": "a state"})


class TestSleep:
    """Live sleeps wait in the run; durable sleeps pause it until wake time."""

    def test_live_sleep_waits_in_the_run(self, runner: Runner) -> None:
        nap = fd.sleep(0.05, id="nap")

        @fd.node(after=[nap])
        def woke() -> float:
            return time.perf_counter()

        started = time.perf_counter()
        result = runner.run(fd.Flow("nap-flow", [nap, woke]))
        assert "completed" == result.status
        assert result["woke"] - started >= 0.05

    def test_durable_sleep_before_and_after_wake_time(self, runner: Runner) -> None:
        nap = fd.sleep(0.2, id="nap", durable=True)

        @fd.node(after=[nap])
        def woke() -> str:
            return "awake"

        flow = fd.Flow("durable-nap", [nap, woke])
        before = time.time()
        paused = runner.run(flow)
        assert "awaiting" == paused.status
        assert paused.wake_at is not None
        assert before + 0.2 <= paused.wake_at <= time.time() + 0.2
        early = resume(runner, flow, json.loads(json.dumps(paused.state)))
        assert "awaiting" == early.status
        assert paused.wake_at == early.wake_at
        time.sleep(max(0.0, paused.wake_at - time.time()) + 0.01)
        late = resume(runner, flow, early.state)
        assert "completed" == late.status
        assert "awake" == late["woke"]

    @pytest.mark.parametrize("seconds", [-1, float("nan"), float("inf"), "1", True])
    def test_bad_durations_are_rejected(self, seconds: Any) -> None:
        with pytest.raises(fd.DefinitionError, match="seconds"):
            fd.sleep(seconds)
