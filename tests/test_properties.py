"""Random flows agree with a tiny serial reference interpreter, on both faces."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any, Callable, Mapping

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st

import flowdsl as fd


def flat_sum(value: Any) -> int:
    return sum(value) if isinstance(value, list) else int(value)


@attrs.frozen
class Spec:
    """One generated node: what it reads and how it computes."""

    index: int
    deps: tuple[int, ...]  # producers read as parameters
    batch_of: int | None  # for a batch: the list producer it scatters
    as_list: bool  # a plain node returning a list
    is_async: bool
    chunk_size: int

    @property
    def key(self) -> str:
        return f"n{self.index}"

    def compute(self, values: Mapping[str, Any]) -> Any:
        total = (self.index + sum(flat_sum(values[f"n{d}"]) for d in self.deps)) % 97
        return [*range(total % 6), total] if self.as_list else total

    def work(self, item: int, values: Mapping[str, Any]) -> int:
        shared = sum(flat_sum(values[f"n{d}"]) for d in self.deps)
        return item * (self.index + 1) + shared


@st.composite
def flows(draw: st.DrawFn) -> list[Spec]:
    specs: list[Spec] = []
    for index in range(draw(st.integers(1, 15))):
        earlier = list(range(index))
        deps = (
            tuple(sorted(draw(st.sets(st.sampled_from(earlier), max_size=3))))
            if earlier
            else ()
        )
        lists = [s.index for s in specs if s.as_list or s.batch_of is not None]
        batch_of = (
            draw(st.sampled_from(lists)) if lists and draw(st.booleans()) else None
        )
        specs.append(
            Spec(
                index=index,
                deps=tuple(d for d in deps if d != batch_of),
                batch_of=batch_of,
                as_list=batch_of is None and draw(st.booleans()),
                is_async=draw(st.booleans()),
                chunk_size=draw(st.integers(1, 3)),
            )
        )
    return specs


def reference(specs: list[Spec]) -> dict[str, Any]:
    """The serial meaning of a generated flow: each node once, in order."""
    values: dict[str, Any] = {}
    for spec in specs:
        if spec.batch_of is None:
            values[spec.key] = spec.compute(values)
        else:
            values[spec.key] = [
                spec.work(x, values) for x in values[f"n{spec.batch_of}"]
            ]
    return values


def build(specs: list[Spec]) -> fd.Flow:
    nodes: list[Any] = []
    for spec in specs:
        names = [f"n{d}" for d in spec.deps]
        if spec.batch_of is None:
            fn = _plain(spec)
            params = [
                inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD)
                for n in names
            ]
            fn.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
            nodes.append(fd.node(id=spec.key)(fn))
        else:
            fn = _worker(spec)
            params = [
                inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD)
                for n in ["item", *names]
            ]
            fn.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
            decorate = fd.batch(
                input=f"n{spec.batch_of}", id=spec.key, chunk_size=spec.chunk_size
            )
            nodes.append(decorate(fn))
    return fd.Flow("random", nodes[::-1])  # order given must not matter


def _plain(spec: Spec) -> Callable[..., Any]:
    if spec.is_async:

        async def plain_async(**values: Any) -> Any:
            await asyncio.sleep(0)
            return spec.compute(values)

        return plain_async

    def plain(**values: Any) -> Any:
        return spec.compute(values)

    return plain


def _worker(spec: Spec) -> Callable[..., Any]:
    if spec.is_async:

        async def worker_async(item: int, **values: Any) -> int:
            await asyncio.sleep(0)
            return spec.work(item, values)

        return worker_async

    def worker(item: int, **values: Any) -> int:
        return spec.work(item, values)

    return worker


class TestAgainstReference:
    """Both faces compute what the serial reference interpreter computes."""

    @settings(max_examples=60, deadline=None)
    @given(
        specs=flows(),
        executor=st.sampled_from([None, "inline"]),
        concurrency=st.sampled_from([None, 1, 3]),
    )
    def test_random_dags(
        self, specs: list[Spec], executor: Any, concurrency: int | None
    ) -> None:
        flow = build(specs)
        expected = reference(specs)
        sync = flow.run(executor=executor, concurrency=concurrency)
        assert expected == dict(sync.outputs)
        async_ = asyncio.run(flow.arun(executor=executor, concurrency=concurrency))
        assert expected == dict(async_.outputs)
        assert fd.Blueprint.from_dict(flow.blueprint.to_dict()) == flow.blueprint
