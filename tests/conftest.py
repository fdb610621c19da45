"""Shared fixtures: the `runner` fixture runs every flow test on both faces."""

from __future__ import annotations

import asyncio
import sys
from typing import Any, Iterator, Mapping

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

    def resume(self, flow: fd.Flow, state: Any, **options: Any) -> fd.RunResult:
        if self.face == "sync":
            return flow.resume(state, **options)
        return asyncio.run(flow.aresume(state, **options))

    def __repr__(self) -> str:
        return f"Runner({self.face!r})"


@pytest.fixture(params=["sync", "async"])
def runner(request: pytest.FixtureRequest) -> Runner:
    """Each test taking `runner` runs once per face."""
    return Runner(request.param)


@pytest.fixture(autouse=True, scope="session")
def _every_blueprint_round_trips() -> Iterator[None]:
    """Every flow any test builds must survive the JSON round trip unchanged."""
    original = fd.Flow.__init__

    def checked(self: fd.Flow, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self._module = sys._getframe(1).f_globals.get("__name__")  # not this wrapper
        blueprint = self.blueprint
        assert blueprint == fd.Blueprint.from_dict(blueprint.to_dict())
        assert blueprint == fd.Blueprint.from_json(blueprint.to_json())

    fd.Flow.__init__ = checked  # type: ignore[method-assign]
    try:
        yield
    finally:
        fd.Flow.__init__ = original  # type: ignore[method-assign]
