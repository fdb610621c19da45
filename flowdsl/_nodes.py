"""Node objects and the `@node` / `@batch` decorators.

A decorated function stays a plain callable: calling the node calls the
function, unchanged. What the decorator adds is data (an id, options, the
batch's input and output keys) that `Flow` reads to build its blueprint.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import sys
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Coroutine,
    Generic,
    Iterable,
    Literal,
    Mapping,
    Sequence,
    TypeVar,
    Union,
    overload,
)

import attrs
from typing_extensions import Concatenate, ParamSpec, final

from ._policy import RetryOn, RetryPolicy, make_policy
from .exceptions import DefinitionError

__all__ = [
    "AsyncBatchNode",
    "AsyncNode",
    "BaseNode",
    "BatchNode",
    "From",
    "Node",
    "batch",
    "node",
]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

OnError = Literal["raise", "skip", "collect"]
_ON_ERROR_MODES = ("raise", "skip", "collect")
Join = Literal["all", "any"]
#: A node or the id of one.
NodeRef = Union["BaseNode", str]
#: A `when=` condition: an expression string, or `(values, ctx) -> bool`.
Condition = Union[str, Callable[[Mapping[str, Any], Any], bool]]


@attrs.frozen
class NodeOptions:
    """The scheduling options every node and batch accepts.

    Attributes:
        inline: Always run a sync node on the scheduler's thread.
        on: `(producer id, action)`: run only when the producer returned
            `fd.Action(action, ...)`.
        when: A condition (an `Expression` or a callable) the node runs under.
        join: `"all"` waits for every predecessor; `"any"` runs on the first.
        after: Ids of nodes this one waits for without reading their value.
        policy: Retries and timeout.
        fallback: Called with the final error when every attempt failed.
        cache: Reuse a stored output when code and inputs are unchanged.
        cache_key: Computes the inputs' part of the cache key from the
            node's keyword arguments (None: all of them, serialized).
    """

    inline: bool = False
    on: tuple[str, str] | None = None
    when: Any = None
    join: Join = "all"
    after: tuple[str, ...] = ()
    policy: RetryPolicy = attrs.field(factory=RetryPolicy)
    fallback: Callable[..., Any] | None = None
    cache: bool = False
    cache_key: Callable[..., str] | None = None


def make_options(
    name: str,
    *,
    inline: bool = False,
    on: tuple[NodeRef, str] | None = None,
    when: Condition | None = None,
    join: Join = "all",
    after: Sequence[NodeRef] = (),
    fallback: Callable[..., Any] | None = None,
    cache: bool = False,
    cache_key: Callable[..., str] | None = None,
    **policy: Any,
) -> NodeOptions:
    """Check the options of node `name` and gather them.

    Raises:
        DefinitionError: An option has a wrong type or value.
    """
    if not isinstance(inline, bool):
        raise DefinitionError(
            f"node {name!r}: inline must be True or False, got {inline!r}."
        )
    route = None
    if on is not None:
        if (
            not isinstance(on, tuple)
            or len(on) != 2
            or not isinstance(on[1], str)
            or not on[1]
        ):
            raise DefinitionError(
                f"node {name!r}: on must be (producer, 'action'), got {on!r}; "
                "e.g. on=(classify, 'approved')."
            )
        route = (_ref(name, "on", on[0]), on[1])
    condition: Any = None
    if isinstance(when, str):
        from ._expr import parse_expression

        condition = parse_expression(when)
    elif callable(when):
        condition = when
    elif when is not None:
        raise DefinitionError(
            f"node {name!r}: when must be an expression string or a callable "
            f"(values, ctx) -> bool, got {when!r}."
        )
    if join not in ("all", "any"):
        raise DefinitionError(
            f"node {name!r}: join must be 'all' or 'any', got {join!r}."
        )
    if isinstance(after, (str, BaseNode)) or not isinstance(after, Iterable):
        raise DefinitionError(
            f"node {name!r}: after must be a list of nodes or ids, got {after!r}."
        )
    if fallback is not None and not callable(fallback):
        raise DefinitionError(
            f"node {name!r}: fallback must be a callable taking the error, got "
            f"{fallback!r}."
        )
    if not isinstance(cache, bool):
        raise DefinitionError(
            f"node {name!r}: cache must be True or False, got {cache!r}."
        )
    if cache_key is not None and not callable(cache_key):
        raise DefinitionError(
            f"node {name!r}: cache_key must be a callable taking the node's "
            f"arguments by keyword and returning a str, got {cache_key!r}."
        )
    return NodeOptions(
        inline=inline,
        on=route,
        when=condition,
        join=join,
        after=tuple(_ref(name, "after", a) for a in after),
        policy=make_policy(name, **policy),
        fallback=fallback,
        cache=cache or cache_key is not None,
        cache_key=cache_key,
    )


def _ref(name: str, option: str, value: Any) -> str:
    if isinstance(value, BaseNode):
        return value.id
    if isinstance(value, str) and value:
        return value
    raise DefinitionError(
        f"node {name!r}: {option} names nodes by node object or id, got {value!r}."
    )


class BaseNode:
    """What every node shares: the wrapped function and its options.

    Calling a node calls the wrapped function with the same arguments and
    returns what it returns (a coroutine for an async function).

    Attributes:
        fn: The wrapped function.
        id: The node's id in a flow; defaults to the function's `__name__`.
        key: The name downstream parameters use to read this node's value:
            the id for a node, the `output` key for a batch.
        is_async: Whether `fn` is a coroutine function.
        options: Its scheduling options.
    """

    __test__ = False  # keep pytest from collecting nodes named test_*

    fn: Callable[..., Any]
    id: str
    is_async: bool
    options: NodeOptions
    signature: inspect.Signature
    #: Local names where the node was defined inside a function, for
    #: resolving string annotations (`from __future__ import annotations`).
    localns: Mapping[str, Any]

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        id: str | None,
        options: Mapping[str, Any],
        localns: Mapping[str, Any] | None = None,
    ) -> None:
        _check_function(fn, id)
        if id is not None and (not isinstance(id, str) or not id):
            raise DefinitionError(
                f"node id must be a non-empty string, got {id!r} for {_describe(fn)}; "
                "pass id='some_name' or leave it out to use the function's name."
            )
        self.fn = fn
        self.id = id if id is not None else fn.__name__
        self.is_async = _is_async(fn)
        self.options = make_options(self.id, **options)
        self.signature = _signature(fn, self.id)
        self.localns = localns or {}
        functools.update_wrapper(self, fn)

    @property
    def key(self) -> str:
        return self.id

    @property
    def inline(self) -> bool:
        return self.options.inline

    @property
    def reference(self) -> str:
        """The stable `module:qualname` reference of the wrapped function."""
        fn = self.fn
        while isinstance(fn, functools.partial):
            fn = fn.func
        module = getattr(fn, "__module__", None) or "<unknown>"
        return f"{module}:{getattr(fn, '__qualname__', self.id)}"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id!r} ({self.reference})>"

    def __reduce__(self) -> str | tuple[Any, ...]:
        # Nodes travel to worker processes by import reference, like functions.
        if "<locals>" in getattr(self.fn, "__qualname__", "<locals>"):
            raise TypeError(
                f"node {self.id!r} is defined inside a function and cannot be "
                "sent to another process; define it at module level."
            )
        return (_load_node, (self.fn.__module__, self.fn.__qualname__))


def _load_node(module: str, qualname: str) -> BaseNode:
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    if not isinstance(obj, BaseNode):
        raise TypeError(f"{module}:{qualname} is no longer a flowdsl node")
    return obj


@final
class Node(BaseNode, Generic[P, R]):
    """A synchronous function marked with `@node`."""

    if TYPE_CHECKING:

        def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R: ...


@final
class AsyncNode(BaseNode, Generic[P, R]):
    """An async function marked with `@node`; calling it returns a coroutine."""

    if TYPE_CHECKING:

        def __call__(
            self, *args: P.args, **kwargs: P.kwargs
        ) -> Coroutine[Any, Any, R]: ...


class _BatchBase(BaseNode):
    """A worker applied to every item of another node's value."""

    input: str
    output: str
    concurrency: int | None
    chunk_size: int
    on_error: OnError

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        input: str | BaseNode,
        output: str | None,
        id: str | None,
        options: Mapping[str, Any],
        concurrency: int | None,
        chunk_size: int,
        on_error: OnError,
        localns: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(fn, id=id, options=options, localns=localns)
        name = self.id
        if isinstance(input, BaseNode):
            self.input = input.key
        elif isinstance(input, str) and input:
            self.input = input
        else:
            raise DefinitionError(
                f"batch {name!r}: input must be a node or a node id (str), got "
                f"{input!r}; pass input='producer' or input=producer_node."
            )
        if output is not None and (not isinstance(output, str) or not output):
            raise DefinitionError(
                f"batch {name!r}: output must be a non-empty string, got {output!r}."
            )
        self.output = output if output is not None else name
        self.concurrency = _positive_int_or_none(name, "concurrency", concurrency)
        checked = _positive_int_or_none(name, "chunk_size", chunk_size)
        if checked is None:
            raise DefinitionError(
                f"batch {name!r}: chunk_size must be a positive integer, got None."
            )
        self.chunk_size = checked
        if on_error not in _ON_ERROR_MODES:
            raise DefinitionError(
                f"batch {name!r}: on_error must be one of "
                f"{', '.join(map(repr, _ON_ERROR_MODES))}, got {on_error!r}."
            )
        self.on_error = on_error
        params = list(self.signature.parameters.values())
        if not params or params[0].kind not in (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        ):
            found = f"starts with {params[0]}" if params else "has no parameters"
            raise DefinitionError(
                f"batch {name!r}: the worker's first parameter receives each item, "
                f"so it must be positional, but {_describe(fn)} {found}; e.g. "
                f"def {fn.__name__}(item, ...)."
            )

    @property
    def key(self) -> str:
        return self.output

    @property
    def item_parameter(self) -> str:
        """The name of the worker parameter that receives each item."""
        return next(iter(self.signature.parameters))


@final
class BatchNode(_BatchBase, Generic[T, P, R]):
    """A synchronous batch worker marked with `@batch`."""

    if TYPE_CHECKING:

        def __call__(self, item: T, /, *args: P.args, **kwargs: P.kwargs) -> R: ...


@final
class AsyncBatchNode(_BatchBase, Generic[T, P, R]):
    """An async batch worker marked with `@batch`."""

    if TYPE_CHECKING:

        def __call__(
            self, item: T, /, *args: P.args, **kwargs: P.kwargs
        ) -> Coroutine[Any, Any, R]: ...


if TYPE_CHECKING:
    # Subscripting with `...` fails at runtime on Python 3.8.
    AnyNode = Union[
        Node[..., Any],
        AsyncNode[..., Any],
        BatchNode[Any, ..., Any],
        AsyncBatchNode[Any, ..., Any],
    ]


@final
class _NodeDecorator:
    """The decorator `@node(...)` returns when given options."""

    def __init__(self, id: str | None, options: dict[str, Any]) -> None:
        self._id = id
        self._options = options

    @overload
    def __call__(  # type: ignore[overload-overlap]
        self, fn: Callable[P, Coroutine[Any, Any, R]], /
    ) -> AsyncNode[P, R]: ...

    @overload
    def __call__(self, fn: Callable[P, R], /) -> Node[P, R]: ...

    def __call__(self, fn: Callable[..., Any], /) -> Any:
        return _make_node(fn, self._id, self._options, _caller_locals())


@overload
def node(  # type: ignore[overload-overlap]
    fn: Callable[P, Coroutine[Any, Any, R]], /
) -> AsyncNode[P, R]: ...


@overload
def node(fn: Callable[P, R], /) -> Node[P, R]: ...


@overload
def node(
    *,
    id: str | None = None,
    inline: bool = False,
    on: tuple[NodeRef, str] | None = None,
    when: Condition | None = None,
    join: Join = "all",
    after: Sequence[NodeRef] = (),
    retries: int = 0,
    retry_delay: float = 0.0,
    backoff: float = 1.0,
    max_delay: float | None = None,
    jitter: float = 0.0,
    retry_on: RetryOn = (Exception,),
    timeout: float | None = None,
    fallback: Callable[..., Any] | None = None,
    cache: bool = False,
    cache_key: Callable[..., str] | None = None,
) -> _NodeDecorator: ...


def node(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    id: str | None = None,
    inline: bool = False,
    on: tuple[NodeRef, str] | None = None,
    when: Condition | None = None,
    join: Join = "all",
    after: Sequence[NodeRef] = (),
    retries: int = 0,
    retry_delay: float = 0.0,
    backoff: float = 1.0,
    max_delay: float | None = None,
    jitter: float = 0.0,
    retry_on: RetryOn = (Exception,),
    timeout: float | None = None,
    fallback: Callable[..., Any] | None = None,
    cache: bool = False,
    cache_key: Callable[..., str] | None = None,
) -> Any:
    """Mark a function as a flow node.

    Usable bare (`@node`) or with options (`@node(id="load")`). The function
    stays callable exactly as before. In a flow, each parameter is resolved in
    this order: annotated `fd.Context` (injected); `Annotated[T,
    fd.From(...)]` or a `fd.From(...)` default (explicit edge); named after
    another node's id or a batch's output key (inferred edge); otherwise a flow
    input, taken from `run(inputs=...)` or the parameter's default.

    Args:
        fn: The function, when used bare.
        id: The node's id; defaults to the function's `__name__`. Required for
            a lambda.
        inline: Always run this sync node on the scheduler's own thread (for
            cheap pure functions: no thread hop).
        on: `(producer, "action")`: run only when `producer` returns
            `fd.Action("action", value)`; otherwise the node is skipped.
        when: A condition: an expression string over upstream outputs and
            flow inputs (`"score > 0.5"`), or a callable `(values, ctx) ->
            bool`. When false, the node is skipped.
        join: `"all"` (wait for every predecessor that is not skipped) or
            `"any"` (run once, on the first predecessor to finish).
        after: Nodes (or ids) to wait for without reading their values.
        retries: Extra attempts after a failure (0: none).
        retry_delay: Seconds before the first retry.
        backoff: Multiplies the delay after each retry.
        max_delay: Caps each delay, in seconds.
        jitter: Adds up to this many seconds to each delay.
        retry_on: Only these exception types are retried.
        timeout: Seconds each attempt may take. An async node is cancelled
            at its deadline; a sync node on a thread cannot be stopped, so
            the attempt is marked timed out and its late result discarded.
        fallback: Called with the final error (and an `fd.Context`, if it
            declares one) when every attempt failed; its value replaces the
            output and the node is reported `rescued`.
        cache: With a `store=`, reuse the output stored for the same code and
            the same inputs, across runs, instead of calling the node.
        cache_key: A callable given the node's arguments by keyword that
            returns the inputs' part of the cache key (implies `cache`).

    Returns:
        A `Node` (or `AsyncNode`) wrapping `fn`, or a decorator that makes one.

    Raises:
        DefinitionError: `fn` cannot be a node (a generator, a lambda without
            an id, not callable) or an option is invalid.
    """
    options = {
        "inline": inline,
        "on": on,
        "when": when,
        "join": join,
        "after": after,
        "retries": retries,
        "retry_delay": retry_delay,
        "backoff": backoff,
        "max_delay": max_delay,
        "jitter": jitter,
        "retry_on": retry_on,
        "timeout": timeout,
        "fallback": fallback,
        "cache": cache,
        "cache_key": cache_key,
    }
    if fn is None:
        return _NodeDecorator(id, options)
    return _make_node(fn, id, options, _caller_locals())


def _make_node(
    fn: Callable[..., Any],
    id: str | None,
    options: Mapping[str, Any],
    localns: Mapping[str, Any] | None = None,
) -> BaseNode:
    if isinstance(fn, BaseNode):
        raise DefinitionError(f"{fn!r} is already a node; decorate it only once.")
    from ._classnode import NodeClass, class_node_function

    if isinstance(fn, NodeClass):
        engine, fallback = class_node_function(fn)
        if options.get("fallback") is None and fallback is not None:
            options = {**options, "fallback": fallback}
        # The class's annotations name things in the class's own module.
        module = sys.modules.get(type(fn).__module__)
        localns = {**vars(module), **(localns or {})} if module else localns
        engine.__flowdsl_code__ = type(fn)  # hashed: the class, not this wrapper
        fn = engine
    cls = AsyncNode if _is_async(fn) else Node
    return cls(fn, id=id, options=options, localns=localns)


def _caller_locals() -> Mapping[str, Any] | None:
    """The local names of the function that applied the decorator, if any.

    A node defined inside a function may annotate with names local to it;
    with `from __future__ import annotations` those annotations are strings
    that only the defining scope can resolve, so a snapshot is kept.
    """
    frame = sys._getframe(2)
    if frame.f_locals is frame.f_globals:
        return None  # module level: the function's own globals suffice
    return dict(frame.f_locals)


@final
class _BatchDecorator:
    """The decorator `@batch(...)` returns."""

    def __init__(self, **options: Any) -> None:
        self._options = options

    @overload
    def __call__(  # type: ignore[overload-overlap]
        self, fn: Callable[Concatenate[T, P], Coroutine[Any, Any, R]], /
    ) -> AsyncBatchNode[T, P, R]: ...

    @overload
    def __call__(self, fn: Callable[Concatenate[T, P], R], /) -> BatchNode[T, P, R]: ...

    def __call__(self, fn: Callable[..., Any], /) -> Any:
        from ._classnode import NodeClass

        if isinstance(fn, BaseNode):
            raise DefinitionError(
                f"{fn!r} is already a node; a batch worker must be a plain function."
            )
        if isinstance(fn, NodeClass):
            raise DefinitionError(
                f"{type(fn).__name__!r} is a class node, which cannot be a batch "
                "worker; write the worker as a function that calls it."
            )
        cls = AsyncBatchNode if _is_async(fn) else BatchNode
        return cls(fn, localns=_caller_locals(), **self._options)


def batch(
    *,
    input: NodeRef,
    output: str | None = None,
    id: str | None = None,
    concurrency: int | None = None,
    chunk_size: int = 1,
    on_error: OnError = "raise",
    inline: bool = False,
    on: tuple[NodeRef, str] | None = None,
    when: Condition | None = None,
    join: Join = "all",
    after: Sequence[NodeRef] = (),
    retries: int = 0,
    retry_delay: float = 0.0,
    backoff: float = 1.0,
    max_delay: float | None = None,
    jitter: float = 0.0,
    retry_on: RetryOn = (Exception,),
    timeout: float | None = None,
    fallback: Callable[..., Any] | None = None,
    cache: bool = False,
    cache_key: Callable[..., str] | None = None,
) -> _BatchDecorator:
    """Mark a function as a batch worker: scatter, process each item, gather.

    The worker's first parameter receives one item of `input`'s value; its
    other parameters are resolved like a node's and are the same for every
    item. Results are gathered in input order under `output`.

    Args:
        input: The node (or its id / output key) whose value is scattered.
        output: The key the gathered list is published under; defaults to the
            function's name.
        id: The batch's id; defaults to the function's name.
        concurrency: At most this many items of this batch in flight.
        chunk_size: Items sent to an executor per call.
        on_error: `"raise"` (the batch fails; items not started are not
            started), `"skip"` (failed items are left out and reported), or
            `"collect"` (a failed item's slot holds an `fd.ItemError`).
        inline: Run a sync worker on the scheduler's thread.
        on: Run only on this `(producer, "action")` (see `node`).
        when: Run only when this condition holds (see `node`).
        join: `"all"` or `"any"` (see `node`).
        after: Nodes to wait for without reading their values.
        retries: Extra attempts for each failed item.
        retry_delay: Seconds before an item's first retry.
        backoff: Multiplies the delay after each retry.
        max_delay: Caps each delay, in seconds.
        jitter: Adds up to this many seconds to each delay.
        retry_on: Only these exception types are retried.
        timeout: Seconds each item's attempt may take (see `node`).
        fallback: Called with an item's final error; its value fills the
            item's slot.
        cache: With a `store=`, reuse the gathered output stored for the same
            code, input and arguments (see `node`).
        cache_key: Computes the inputs' part of the cache key (see `node`).

    Returns:
        A decorator that turns the worker into a `BatchNode`.

    Raises:
        DefinitionError: An option is invalid or the worker takes no item.
    """
    return _BatchDecorator(
        input=input,
        output=output,
        id=id,
        concurrency=concurrency,
        chunk_size=chunk_size,
        on_error=on_error,
        options={
            "inline": inline,
            "on": on,
            "when": when,
            "join": join,
            "after": after,
            "retries": retries,
            "retry_delay": retry_delay,
            "backoff": backoff,
            "max_delay": max_delay,
            "jitter": jitter,
            "retry_on": retry_on,
            "timeout": timeout,
            "fallback": fallback,
            "cache": cache,
            "cache_key": cache_key,
        },
    )


@attrs.frozen
class Source:
    """An explicit edge: the parameter reads `key`'s value."""

    key: str


def From(source: str | BaseNode) -> Any:
    """Name the producer of a parameter explicitly.

    Use it as metadata, `x: Annotated[int, fd.From("load")]`, or as the
    default, `x: int = fd.From(load)`.

    Args:
        source: A node, a node id, or a batch's output key.

    Returns:
        A marker flowdsl reads when building the flow (typed `Any` so that it
        fits any parameter's default).

    Raises:
        DefinitionError: `source` is neither a node nor a non-empty string.
    """
    if isinstance(source, BaseNode):
        return Source(source.key)
    if isinstance(source, str) and source:
        return Source(source)
    raise DefinitionError(
        f"From() takes a node or a node id, got {source!r}; "
        "write fd.From(producer) or fd.From('producer_id')."
    )


def _is_async(fn: Any) -> bool:
    """Whether calling `fn` returns a coroutine (also for `async __call__`)."""
    if inspect.iscoroutinefunction(fn):
        return True
    call = inspect.getattr_static(fn, "__call__", None)  # `async def __call__`
    return not inspect.isfunction(fn) and inspect.iscoroutinefunction(call)


def _check_function(fn: Any, id: str | None) -> None:
    if not callable(fn):
        raise DefinitionError(
            f"{fn!r} is not callable and cannot be a node; pass a function."
        )
    name = getattr(fn, "__name__", None)
    if not isinstance(name, str) and id is None:
        raise DefinitionError(
            f"{fn!r} has no __name__ to use as its node id; pass id='...'."
        )
    if name == "<lambda>" and id is None:
        raise DefinitionError(
            "a lambda has no name to use as its node id; pass id='...', "
            "e.g. fd.node(id='double')(lambda x: x * 2)."
        )
    if inspect.isasyncgenfunction(fn) or inspect.isgeneratorfunction(fn):
        kind = "an async generator" if inspect.isasyncgenfunction(fn) else "a generator"
        raise DefinitionError(
            f"{_describe(fn)} is {kind} and cannot be a node: a node returns one "
            "value. Return a list instead (and scatter it with @fd.batch)."
        )


def _signature(fn: Callable[..., Any], node_id: str) -> inspect.Signature:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise DefinitionError(
            f"node {node_id!r}: cannot read the signature of {fn!r} ({exc}); "
            "wrap it in a def with named parameters."
        ) from None
    for param in sig.parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            star = "*" if param.kind is param.VAR_POSITIONAL else "**"
            raise DefinitionError(
                f"node {node_id!r}: parameter {star}{param.name} cannot be bound "
                "by name; give each input its own named parameter."
            )
    return sig


def _positive_int_or_none(node_id: str, option: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DefinitionError(
            f"batch {node_id!r}: {option} must be a positive integer, got {value!r}."
        )
    return value


def _describe(fn: Any) -> str:
    name = getattr(fn, "__qualname__", None) or repr(fn)
    return f"function {name!r}"


def node_options(n: BaseNode) -> dict[str, Any]:
    """The options of `n` that differ from their defaults, as blueprint data."""
    options = n.options
    data: dict[str, Any] = {}
    if options.inline:
        data["inline"] = True
    if options.on is not None:
        data["on"] = {"source": options.on[0], "action": options.on[1]}
    if options.when is not None:
        source = getattr(options.when, "source", None)
        if source is not None:
            data["when"] = source
        else:
            fn = options.when
            data["whenUses"] = f"{fn.__module__}:{getattr(fn, '__qualname__', fn)}"
    if options.join != "all":
        data["joinStrategy"] = options.join
    if options.after:
        data["after"] = list(options.after)
    policy = options.policy
    defaults = RetryPolicy()
    for field, key in (
        ("retries", "retries"),
        ("retry_delay", "retryDelay"),
        ("backoff", "backoff"),
        ("max_delay", "maxDelay"),
        ("jitter", "jitter"),
        ("timeout", "timeout"),
    ):
        value = getattr(policy, field)
        if value != getattr(defaults, field):
            data[key] = value
    if policy.retry_on != defaults.retry_on:
        data["retryOn"] = [f"{t.__module__}:{t.__qualname__}" for t in policy.retry_on]
    if options.fallback is not None:
        fallback = options.fallback
        data["fallbackUses"] = (
            f"{fallback.__module__}:{getattr(fallback, '__qualname__', fallback)}"
        )
    return data
