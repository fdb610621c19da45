"""How one command becomes calls of user code, on any executor.

Module-level functions, so a process pool can pickle them; each turns the
outcome of every item into a value or a `Failure`, and wraps calls in the
run's middleware.
"""

from __future__ import annotations

import functools
import itertools
from typing import Any, Iterable, Mapping

import attrs

from ._middleware import AsyncLayer, CallInfo, SyncLayer, wrap_async, wrap_sync
from ._nodes import BaseNode
from ._scheduler import Failure

__all__ = ["run_async_item", "run_async_node", "run_chunk", "run_node"]


def run_node(
    node: BaseNode,
    kwargs: Mapping[str, Any],
    layers: tuple[SyncLayer, ...] = (),
    info: CallInfo | None = None,
) -> Any:
    """Call a sync node (module-level, so process pools can pickle it)."""
    try:
        if layers and info is not None:
            return wrap_sync(lambda: node.fn(**kwargs), layers, info)
        return node.fn(**kwargs)
    except StopIteration as exc:  # a future cannot hold one: asyncio would hang
        raise RuntimeError(f"node {node.id!r} raised StopIteration") from exc


def run_chunk(
    node: BaseNode,
    items: Iterable[Any],
    kwargs: Mapping[str, Any] | list[Any],
    stop_on_error: bool,
    layers: tuple[SyncLayer, ...] = (),
    info: CallInfo | None = None,
) -> list[Any]:
    """Call a sync batch worker on each item; a raised exception becomes a Failure.

    `kwargs` is shared by every item, or a list with one mapping per item.
    With `stop_on_error`, the items after a failure are not started, and the
    outcomes end at the failure. `info` describes the first item.
    """
    fn = node.fn
    outcomes: list[Any] = []
    append = outcomes.append
    per_item = kwargs if isinstance(kwargs, list) else itertools.repeat(kwargs)
    for offset, (item, item_kwargs) in enumerate(zip(items, per_item)):
        try:
            if layers and info is not None:
                index = (info.item_index or 0) + offset
                item_info = attrs.evolve(info, item_index=index)
                call = functools.partial(fn, item, **item_kwargs)
                append(wrap_sync(call, layers, item_info))
            else:
                append(fn(item, **item_kwargs))
        except StopIteration as exc:
            error = RuntimeError(f"batch {node.id!r} raised StopIteration")
            error.__cause__ = exc
            append(Failure(error))
            if stop_on_error:
                break
        except Exception as exc:
            append(Failure(exc))
            if stop_on_error:
                break
    return outcomes


async def run_async_item(
    node: BaseNode,
    item: Any,
    kwargs: Mapping[str, Any],
    layers: tuple[AsyncLayer, ...],
    info: CallInfo | None,
) -> list[Any]:
    try:
        if layers and info is not None:
            return [await wrap_async(lambda: node.fn(item, **kwargs), layers, info)]
        return [await node.fn(item, **kwargs)]
    except Exception as exc:
        return [Failure(exc)]


async def run_async_node(
    node: BaseNode,
    kwargs: Mapping[str, Any],
    layers: tuple[AsyncLayer, ...],
    info: CallInfo | None,
) -> Any:
    assert info is not None
    return await wrap_async(lambda: node.fn(**kwargs), layers, info)
