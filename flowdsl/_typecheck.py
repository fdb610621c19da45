"""Type compatibility along edges, checked when a flow is built.

mypy cannot see edges that flowdsl infers from parameter names, so `Flow`
compares each producer's return annotation with its consumer's parameter
annotation itself. The rules are deliberately permissive where static typing
would need more than annotations to decide (type variables, protocols,
unresolved names): only a clear mismatch is an error.

`compatible` answers True, False, or None (cannot tell; treated as fine).
"""

from __future__ import annotations

import collections.abc as cabc
import sys
import types
import typing
from typing import Any, ForwardRef, TypeVar

import typing_extensions as te

__all__ = ["compatible", "describe", "element_type", "value_matches"]

_NoneType = type(None)
_LITERALS = {typing.Literal, te.Literal}
_UNIONS: set[Any] = {typing.Union}
if sys.version_info >= (3, 10):
    _UNIONS.add(types.UnionType)
_CALLABLE: Any = cabc.Callable
# PEP 484's numeric tower: an int is acceptable where a float is expected.
_PROMOTIONS = {float: (int,), complex: (int, float)}


def _normalize(tp: Any) -> Any:
    """Strip what does not change compatibility: Annotated, NewType, None."""
    while True:
        if tp is None:
            return _NoneType
        if te.get_origin(tp) is te.Annotated:
            tp = te.get_args(tp)[0]
            continue
        supertype = getattr(tp, "__supertype__", None)
        if supertype is not None:  # a NewType
            tp = supertype
            continue
        return tp


def _origin(tp: Any) -> Any:
    return te.get_origin(tp)


def _is_union(tp: Any) -> bool:
    return _origin(tp) in _UNIONS


def _is_literal(tp: Any) -> bool:
    return _origin(tp) in _LITERALS


def _combine(results: list[bool | None], *, want_all: bool) -> bool | None:
    if want_all:
        if False in results:
            return False
        return None if None in results else True
    if True in results:
        return True
    return None if None in results else False


def compatible(produced: Any, expected: Any) -> bool | None:
    """Whether a value typed `produced` fits a parameter typed `expected`.

    Returns:
        True if it fits, False if it clearly does not, None if the
        annotations cannot tell.
    """
    p = _normalize(produced)
    e = _normalize(expected)
    if e is Any or e is object or p is Any:
        return True
    if isinstance(p, (TypeVar, ForwardRef, str)) or isinstance(
        e, (TypeVar, ForwardRef, str)
    ):
        return None
    if _is_union(p):  # every member must fit
        members = [compatible(m, e) for m in te.get_args(p)]
        return _combine(members, want_all=True)
    if _is_union(e):  # p must fit some member
        return _combine([compatible(p, m) for m in te.get_args(e)], want_all=False)
    if _is_literal(p):
        values = te.get_args(p)
        if _is_literal(e):
            return set(values) <= set(te.get_args(e))
        return _combine([compatible(type(v), e) for v in values], want_all=True)
    if _is_literal(e):
        # A plain `str` may hold an allowed value; only another type cannot.
        allowed = {type(v) for v in te.get_args(e)}
        return _combine([compatible(p, t) for t in allowed], want_all=False)
    return _compatible_classes(p, e)


def _compatible_classes(p: Any, e: Any) -> bool | None:
    p_class = _origin(p) or p
    e_class = _origin(e) or e
    if not isinstance(p_class, type) or not isinstance(e_class, type):
        return None
    if p_class in _PROMOTIONS.get(e_class, ()):
        return True
    try:
        fits = issubclass(p_class, e_class)
    except TypeError:
        return None
    if not fits:
        if getattr(e_class, "_is_protocol", False):
            return None  # structural: annotations alone cannot decide
        return False
    e_args = te.get_args(e)
    p_args = te.get_args(p)
    if not e_args or not p_args or e_class is _CALLABLE:
        return True
    if issubclass(e_class, tuple):
        return _compatible_tuples(p_args, e_args)
    if issubclass(e_class, cabc.Mapping) and issubclass(p_class, cabc.Mapping):
        return _combine(
            [compatible(a, b) for a, b in zip(p_args, e_args)], want_all=True
        )
    if len(e_args) == 1 and issubclass(e_class, cabc.Iterable):
        return compatible(element_type(p), e_args[0])
    if len(p_args) == len(e_args):
        return _combine(
            [compatible(a, b) for a, b in zip(p_args, e_args)], want_all=True
        )
    return None


def _compatible_tuples(p_args: tuple[Any, ...], e_args: tuple[Any, ...]) -> bool | None:
    if len(e_args) == 2 and e_args[1] is Ellipsis:
        items = p_args[:1] if len(p_args) == 2 and p_args[1] is Ellipsis else p_args
        return _combine([compatible(a, e_args[0]) for a in items], want_all=True)
    if len(p_args) == 2 and p_args[1] is Ellipsis:
        return None  # a tuple of unknown length into a fixed shape
    if len(p_args) != len(e_args):
        return False
    return _combine([compatible(a, b) for a, b in zip(p_args, e_args)], want_all=True)


def element_type(tp: Any) -> Any:
    """The type of one item of an iterable typed `tp` (Any when unknown)."""
    tp = _normalize(tp)
    args = te.get_args(tp)
    cls = _origin(tp) or tp
    if not args or not isinstance(cls, type):
        return Any
    if issubclass(cls, tuple):
        if len(args) == 2 and args[1] is Ellipsis:
            return args[0]
        return typing.Union[args] if len(args) > 1 else args[0]
    return args[0]


def scatter_problem(tp: Any) -> str | None:
    """Why a value typed `tp` cannot be a batch's input, or None if it can."""
    tp = _normalize(tp)
    if tp is Any or tp is object:
        return None
    if _is_union(tp):
        for member in te.get_args(tp):
            reason = scatter_problem(member)
            if reason is not None:
                return reason
        return None
    cls = _origin(tp) or tp
    if cls is _NoneType:
        return "it may be None"
    if not isinstance(cls, type):
        return None
    if issubclass(cls, (str, bytes, bytearray)):
        return f"a {cls.__name__} is scattered character by character"
    if issubclass(cls, cabc.Mapping):
        return "a mapping is not a sequence of items"
    if not issubclass(cls, cabc.Iterable) and not getattr(cls, "_is_protocol", False):
        return f"a {cls.__name__} is not iterable"
    return None


def describe(tp: Any) -> str:
    """A short, readable name for a type, spelled the same on every Python.

    `typing.List[int]` and `list[int]` both read `list[int]`; unions read
    `int | None`.
    """
    tp = _normalize(tp)
    if tp is _NoneType:
        return "None"
    if tp is Any:
        return "Any"
    if tp is Ellipsis:
        return "..."
    args = te.get_args(tp)
    if _is_union(tp):
        return " | ".join(describe(a) for a in args)
    if _is_literal(tp):
        return f"Literal[{', '.join(repr(a) for a in args)}]"
    origin = _origin(tp)
    if origin is not None and args and origin is not _CALLABLE:
        inner = ", ".join(
            "[" + ", ".join(map(describe, a)) + "]"
            if isinstance(a, list)
            else describe(a)
            for a in args
        )
        return f"{describe(origin)}[{inner}]"
    if isinstance(tp, type):
        return tp.__qualname__ if tp.__module__ == "builtins" else tp.__name__
    text = repr(tp)
    for prefix in ("typing_extensions.", "typing.", "collections.abc."):
        text = text.replace(prefix, "")
    return text


def value_matches(value: Any, tp: Any, *, depth: int = 2) -> bool | None:
    """Whether a run-time `value` fits the annotation `tp` (a shallow check).

    Containers are checked by their type and their first few items only.

    Returns:
        True, False, or None when the annotation cannot be checked.
    """
    tp = _normalize(tp)
    if tp is Any or tp is object:
        return True
    if _is_union(tp):
        return _combine(
            [value_matches(value, m, depth=depth) for m in te.get_args(tp)],
            want_all=False,
        )
    if _is_literal(tp):
        return value in te.get_args(tp)
    cls = _origin(tp) or tp
    if not isinstance(cls, type):
        return None
    if type(value) in _PROMOTIONS.get(cls, ()):
        return True
    try:
        if not isinstance(value, cls):
            return False
    except TypeError:
        return None
    args = te.get_args(tp)
    if not args or depth == 0 or cls is _CALLABLE:
        return True
    if isinstance(value, cabc.Mapping) and len(args) == 2:
        pairs = list(value.items())[:3]
        return _combine(
            [value_matches(k, args[0], depth=depth - 1) for k, _ in pairs]
            + [value_matches(v, args[1], depth=depth - 1) for _, v in pairs],
            want_all=True,
        )
    if isinstance(value, (list, tuple, set, frozenset)):
        item = element_type(tp)
        sample = list(value)[:3]
        return _combine(
            [value_matches(v, item, depth=depth - 1) for v in sample], want_all=True
        )
    return True
