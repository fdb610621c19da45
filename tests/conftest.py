"""Shared fixtures: the `runner` fixture runs every flow test on both faces."""

from __future__ import annotations

import asyncio
from typing import Any, Mapping

import pytest

import flowdsl as fd


class Runner:
    """Runs a flow through one face of the engine: `run()` or `arun()`."""

    def __init__(self, face: str) -> None:
        self.face = face

    def run(
        self, flow: fd.Flow, inputs: Mapping[str, Any] | None = None, **options: Any
    ) -> fd.RunResult:
        if self.face == "sync":
            return flow.run(inputs, **options)
        return asyncio.run(flow.arun(inputs, **options))

    def __repr__(self) -> str:
        return f"Runner({self.face!r})"


@pytest.fixture(params=["sync", "async"])
def runner(request: pytest.FixtureRequest) -> Runner:
    """Each test taking `runner` runs once per face."""
    return Runner(request.param)
