"""Class nodes: `prep` → `exec` → `post`, for stateful or injected logic.

Only `exec` is retried: `prep` runs once per node (or batch item) and its
result is kept for every attempt of `exec`; a failing `prep` or `post` fails
the node at once. `recover` runs whenever a phase failed; `fallback`, when
defined, stands in after the last attempt, as the `fallback=` option does.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from ._context import Context
from ._nodes import _is_async
from .exceptions import DefinitionError, FlowdslError

__all__ = ["NodeClass", "PhaseFailed", "class_node_function"]

_CONTEXT = "flowdsl_context"  # the engine function's own Context parameter


class PhaseFailed(FlowdslError):
    """A class node's `prep` or `post` failed (never retried; see `__cause__`)."""


class NodeClass:
    """Base class for nodes written as classes.

    Define `exec`, and optionally `prep`, `post`, `fallback` and `recover`.
    The node's parameters are those of `prep` (or of `exec` when there is no
    `prep`), resolved like any node's. Pass an instance to `fd.Flow`, or to
    `fd.node(...)` for options such as `retries`. Any method may be async.
    """

    def prep(self, *args: Any, **kwargs: Any) -> Any:
        """Gather what `exec` needs; runs once, whatever the retries."""
        raise NotImplementedError  # replaced below when not overridden

    def exec(self, prepared: Any) -> Any:
        """Do the work; the only phase that is retried."""
        raise NotImplementedError(f"{type(self).__name__} must define an exec method")

    def post(self, result: Any) -> Any:
        """Turn `exec`'s result into the node's output (default: unchanged)."""
        return result

    def recover(self, error: BaseException) -> None:
        """Called whenever a phase failed, before the failure goes on."""

    def fallback(self, error: BaseException) -> Any:
        """Stand in for the output after the last attempt failed (if defined)."""
        raise error


def _overrides(obj: NodeClass, name: str) -> bool:
    return getattr(type(obj), name) is not getattr(NodeClass, name)


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


def class_node_function(obj: NodeClass) -> tuple[Callable[..., Any], Any]:
    """The engine function of a class node, and its fallback (or None).

    The function takes the node's parameters plus a `Context`, through
    which the run keeps the prepared value of each node (or item) across
    attempts.
    """
    if not _overrides(obj, "exec"):
        raise DefinitionError(
            f"class node {type(obj).__name__!r} must define an exec method; it is the "
            "phase that does the work."
        )
    has_prep = _overrides(obj, "prep")
    entry = obj.prep if has_prep else obj.exec
    signature = inspect.signature(entry)
    phases = [obj.prep, obj.exec, obj.post, obj.recover]
    is_async = any(_is_async(p) for p in phases)

    def failed(phase: str, exc: BaseException) -> BaseException:
        if phase == "exec":
            return exc
        error = PhaseFailed(f"{type(obj).__name__}.{phase}() raised {exc!r}")
        error.__cause__ = exc
        return error

    if is_async:

        async def run(**kwargs: Any) -> Any:
            ctx: Context = kwargs.pop(_CONTEXT)
            prepared, key = _prepared(ctx)
            phase = "prep"
            try:
                if has_prep and key not in prepared:
                    prepared[key] = await _maybe_await(obj.prep(**kwargs))
                phase = "exec"
                if has_prep:
                    result = await _maybe_await(obj.exec(prepared[key]))
                else:
                    result = await _maybe_await(obj.exec(**kwargs))
                phase = "post"
                output = await _maybe_await(obj.post(result))
            except Exception as exc:
                recover: Callable[..., Any] = obj.recover  # sync or async
                await _maybe_await(recover(exc))
                raise failed(phase, exc) from exc
            prepared.pop(key, None)
            return output

        engine: Callable[..., Any] = run
    else:

        def run_sync(**kwargs: Any) -> Any:
            ctx: Context = kwargs.pop(_CONTEXT)
            prepared, key = _prepared(ctx)
            phase = "prep"
            try:
                if has_prep and key not in prepared:
                    prepared[key] = obj.prep(**kwargs)
                phase = "exec"
                result = obj.exec(prepared[key]) if has_prep else obj.exec(**kwargs)
                phase = "post"
                output = obj.post(result)
            except Exception as exc:
                obj.recover(exc)
                raise failed(phase, exc) from exc
            prepared.pop(key, None)
            return output

        engine = run_sync
    params = [
        *signature.parameters.values(),
        inspect.Parameter(_CONTEXT, inspect.Parameter.KEYWORD_ONLY, annotation=Context),
    ]
    engine.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    annotations = dict(getattr(entry, "__annotations__", {}))
    annotations[_CONTEXT] = Context
    if _overrides(obj, "post"):
        annotations["return"] = getattr(obj.post, "__annotations__", {}).get(
            "return", Any
        )
    if "return" not in annotations:
        returned = getattr(obj.exec, "__annotations__", {}).get("return")
        if returned is not None:
            annotations["return"] = returned
    engine.__annotations__ = annotations
    engine.__name__ = engine.__qualname__ = _snake(type(obj).__name__)
    engine.__module__ = type(obj).__module__
    fallback: Any = None
    if _overrides(obj, "fallback"):
        fallback = obj.fallback  # a bound method: sync or async, as written
    return engine, fallback


def _prepared(
    ctx: Context,
) -> tuple[dict[tuple[str, int | None], Any], tuple[str, int | None]]:
    """The run's prepared values, and this node's (or item's) key in them:
    they live as long as the run, so concurrent runs never share them."""
    return ctx._state.prepared, (ctx.node_id, ctx.item_index)


def _snake(name: str) -> str:
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i and not name[i - 1].isupper():
            out.append("_")
        out.append(ch.lower())
    return "".join(out)
