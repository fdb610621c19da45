"""Middleware: wrappers around every node call, for both kinds of node.

A middleware receives `call` (run the rest of the chain: later middleware,
then the node) and a `CallInfo`; it may observe, replace the result, or
rescue an error by catching it. The first middleware given is the
outermost. Scheduling is untouched: retries, timeouts and fallbacks wrap the
whole chain.
"""

from __future__ import annotations

import inspect
from typing import Any, Awaitable, Callable, Sequence

import attrs

from ._nodes import _is_async
from .exceptions import DefinitionError

__all__ = ["CallInfo", "Middleware", "split_middleware", "wrap_async", "wrap_sync"]


@attrs.frozen
class CallInfo:
    """Which call a middleware wraps.

    Attributes:
        run_id: The run's id.
        node_id: The node being called.
        item_index: The batch item, or None.
        attempt: The attempt number, from 1.
    """

    run_id: str
    node_id: str
    item_index: int | None
    attempt: int


class Middleware:
    """Base class for middleware that wraps sync and async nodes alike.

    Override `wrap` for sync calls and `awrap` for async ones; each passes
    the call through unchanged by default. A plain function works too: a
    `def` wraps sync nodes, an `async def` wraps async nodes.
    """

    def wrap(self, call: Callable[[], Any], info: CallInfo) -> Any:
        """Wrap a sync call: return `call()`, or something in its place."""
        return call()

    async def awrap(self, call: Callable[[], Awaitable[Any]], info: CallInfo) -> Any:
        """Wrap an async call: return `await call()`, or something in its place."""
        return await call()


SyncLayer = Callable[[Callable[[], Any], CallInfo], Any]
AsyncLayer = Callable[[Callable[[], Awaitable[Any]], CallInfo], Awaitable[Any]]


def split_middleware(
    middleware: Sequence[Any] | None,
) -> tuple[tuple[SyncLayer, ...], tuple[AsyncLayer, ...]]:
    """The layers for sync calls and for async calls, outermost first.

    Raises:
        DefinitionError: An entry is neither a `Middleware` nor a callable.
    """
    sync: list[SyncLayer] = []
    async_: list[AsyncLayer] = []
    for entry in middleware or ():
        if isinstance(entry, Middleware):
            if inspect.iscoroutinefunction(entry.wrap):
                raise DefinitionError(
                    f"middleware {entry!r}: wrap() wraps sync calls and must be a "
                    "plain def; put async code in awrap()."
                )
            sync.append(entry.wrap)
            async_.append(entry.awrap)
        elif _is_async(entry):
            async_.append(entry)
        elif callable(entry):
            sync.append(entry)
        else:
            raise DefinitionError(
                f"middleware must be callables (call, info) -> value or "
                f"fd.Middleware instances, got {entry!r}."
            )
    return tuple(sync), tuple(async_)


def wrap_sync(
    fn: Callable[[], Any], layers: Sequence[SyncLayer], info: CallInfo
) -> Any:
    """Call `fn` through `layers`."""
    call = fn
    for layer in reversed(layers):
        call = _bind(layer, call, info)
    return call()


def _bind(
    layer: SyncLayer, call: Callable[[], Any], info: CallInfo
) -> Callable[[], Any]:
    return lambda: layer(call, info)


async def wrap_async(
    fn: Callable[[], Awaitable[Any]], layers: Sequence[AsyncLayer], info: CallInfo
) -> Any:
    """Await `fn()` through `layers`."""
    call = fn
    for layer in reversed(layers):
        call = _abind(layer, call, info)
    return await call()


def _abind(
    layer: AsyncLayer, call: Callable[[], Awaitable[Any]], info: CallInfo
) -> Callable[[], Awaitable[Any]]:
    return lambda: layer(call, info)
