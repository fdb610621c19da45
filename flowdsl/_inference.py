"""From signatures and annotations to dependencies.

Each parameter of a node is resolved, in this order: annotated `Context`
(injected); an explicit `From(...)` source (in `Annotated` metadata or as the
default); a name equal to a producer's key in the flow (an inferred edge);
otherwise a flow input.
"""

from __future__ import annotations

import ast
import sys
import types
import typing
from typing import Any, Callable, Collection, Literal, Mapping

import attrs
import typing_extensions

from ._context import Context
from ._nodes import BaseNode, Source, _BatchBase

__all__ = ["Binding", "bind_parameters", "resolve_hints"]

BindingKind = Literal["context", "source", "input"]


@attrs.frozen
class Binding:
    """How one parameter of a node gets its value.

    Attributes:
        param: The parameter's name.
        kind: `"context"` (injected), `"source"` (a producer's value) or
            `"input"` (a flow input).
        key: The producer's key for a source; the input's name for an input.
        explicit: Whether the source was named with `From(...)`.
        required: Whether the parameter has no default.
        annotation: The resolved annotation, or `Any` if there is none.
    """

    param: str
    kind: BindingKind
    key: str
    explicit: bool = False
    required: bool = True
    annotation: Any = Any


# On Python 3.8, `list[int]` in a string annotation (common with
# `from __future__ import annotations`) cannot be evaluated; reading the
# builtins as their typing aliases gives the same meaning.
_LOCALNS: Mapping[str, Any] = (
    {
        "list": typing.List,
        "dict": typing.Dict,
        "set": typing.Set,
        "frozenset": typing.FrozenSet,
        "tuple": typing.Tuple,
        "type": typing.Type,
    }
    if sys.version_info < (3, 9)
    else {}
)


# On Python 3.8 and 3.9, `int | None` in a string annotation cannot be
# evaluated either; it is rewritten to `Union[int, None]` first.
_UNION_NAME = "__flowdsl_Union__"
if sys.version_info < (3, 10):
    _LOCALNS = {**_LOCALNS, _UNION_NAME: typing.Union}


class _Unsupported(Exception):
    pass


def _unparse(node: ast.AST) -> str:
    """Source text of an annotation expression, with `a | b` as a Union."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return f"{_UNION_NAME}[{_unparse(node.left)}, {_unparse(node.right)}]"
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_unparse(node.value)}.{node.attr}"
    if isinstance(node, ast.Subscript):
        inner: ast.AST = node.slice
        if type(inner).__name__ == "Index":  # Python 3.8 wraps subscripts
            inner = inner.value  # type: ignore[attr-defined]
        return f"{_unparse(node.value)}[{_unparse(inner)}]"
    if isinstance(node, ast.Tuple):
        return ", ".join(_unparse(e) for e in node.elts)
    if isinstance(node, ast.List):
        return "[" + ", ".join(_unparse(e) for e in node.elts) + "]"
    if isinstance(node, ast.Constant):
        return "..." if node.value is Ellipsis else repr(node.value)
    raise _Unsupported(type(node).__name__)


def _modernize(annotation: Any) -> Any:
    """`X | Y` spelled for the running Python, when it cannot evaluate it."""
    if sys.version_info >= (3, 10) or not isinstance(annotation, str):
        return annotation
    if "|" not in annotation:
        return annotation
    try:
        return _unparse(ast.parse(annotation, mode="eval").body)
    except (SyntaxError, _Unsupported):
        return annotation


def _probe_template() -> None:  # its code object evaluates annotations elsewhere
    pass


def resolve_hints(
    fn: Callable[..., Any], localns: Mapping[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, str]]:
    """Resolve each annotation of `fn` on its own.

    One unresolvable annotation must not hide the others, so each is
    evaluated separately in the function's module namespace, plus `localns`
    (the names local to where it was defined).

    Returns:
        The resolved annotations by parameter name (and `"return"`), and for
        each annotation that could not be resolved, why.
    """
    raw: Mapping[str, Any] = getattr(fn, "__annotations__", None) or {}
    globalns = getattr(fn, "__globals__", None) or {}
    hints: dict[str, Any] = {}
    failures: dict[str, str] = {}
    names = {**_LOCALNS, **(localns or {})}
    for name, annotation in raw.items():
        probe = types.FunctionType(_probe_template.__code__, globalns)
        probe.__annotations__ = {name: _modernize(annotation)}
        try:
            resolved = typing_extensions.get_type_hints(
                probe, localns=names, include_extras=True
            )
        except Exception as exc:  # any failure means "unresolvable", not a crash
            failures[name] = f"{annotation!r} ({type(exc).__name__}: {exc})"
        else:
            hints[name] = resolved[name]
    return hints, failures


def _strip_annotated(hint: Any) -> tuple[Any, tuple[Any, ...]]:
    if typing_extensions.get_origin(hint) is typing_extensions.Annotated:
        args = typing_extensions.get_args(hint)
        return args[0], tuple(args[1:])
    return hint, ()


def bind_parameters(
    n: BaseNode,
    hints: Mapping[str, Any],
    producers: Collection[str],
    aliases: Mapping[str, str],
) -> tuple[list[Binding], list[str]]:
    """Decide where each parameter of `n` gets its value.

    Args:
        n: The node.
        hints: Its resolved annotations.
        producers: Every key some node of the flow publishes.
        aliases: Node id to key, for batches whose output key differs from
            their id (so `From("batch_id")` finds the batch's output).

    Returns:
        The bindings, and problems (one sentence each).
    """
    bindings: list[Binding] = []
    problems: list[str] = []
    params = list(n.signature.parameters.values())
    if isinstance(n, _BatchBase):
        params = params[1:]  # the first receives each item
    for param in params:
        hint, metadata = _strip_annotated(hints.get(param.name, Any))
        required = param.default is param.empty
        if hint is Context:
            bindings.append(Binding(param.name, "context", param.name, annotation=hint))
            continue
        if param.kind is param.POSITIONAL_ONLY:
            problems.append(
                f"node {n.id!r}: parameter {param.name!r} is positional-only and "
                "cannot be bound by name; remove the '/' from its signature."
            )
            continue
        source = next((m for m in metadata if isinstance(m, Source)), None)
        if isinstance(param.default, Source):
            source = param.default
            required = True
        if source is not None:
            key = aliases.get(source.key, source.key)
            bindings.append(
                Binding(
                    param.name,
                    "source",
                    key,
                    explicit=True,
                    required=required,
                    annotation=hint,
                )
            )
        elif param.name in producers:
            bindings.append(
                Binding(
                    param.name, "source", param.name, required=required, annotation=hint
                )
            )
        else:
            bindings.append(
                Binding(
                    param.name, "input", param.name, required=required, annotation=hint
                )
            )
    return bindings, problems
