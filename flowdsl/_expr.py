"""The condition language: small, safe expressions over named values.

A condition such as ``"score > 0.5 and label in ['a', 'b']"`` is parsed with
`ast` in ``"eval"`` mode, checked node by node against an allow-list, and then
run by the small interpreter in this module. No text is ever turned into
code: there is no code object, no builtins and no way to call anything, so
reading values and comparing them is all an expression can do.

What is allowed:

- names (looked up in the values passed to `Expression.evaluate`), and the
  constants ``True``, ``False`` and ``None``;
- attribute access ``a.b`` (a key lookup on a mapping, `getattr` otherwise);
- subscripts ``a[0]``, ``a["k"]``, ``a[-1]`` and simple slices ``a[1:3:2]``;
- str, bytes, int and float literals, and tuple, list, set and dict displays;
- comparisons (``==``, ``!=``, ``<``, ``<=``, ``>``, ``>=``, ``in``,
  ``not in``, ``is``, ``is not``, chained as in Python);
- ``and``, ``or``, ``not``, unary ``-`` and ``+`` on numbers;
- conditional expressions ``a if test else b`` (they read values and
  short-circuit like ``and``/``or``, so they add no new power).

Everything else is rejected when the expression is parsed: calls, lambdas,
comprehensions, arithmetic and bitwise operators, f-strings, ``:=``,
starred and ``**`` unpacking, ``await``/``yield``, ``...``, complex numbers,
and every name or attribute that starts with an underscore.

Hostile input is bounded before and while parsing: at most 1,000 characters
of source, 200 expression nodes, 32 levels of nesting, 256 characters per
string or bytes constant and 64 digits per integer.
"""

from __future__ import annotations

import ast
import collections.abc
import difflib
import numbers
import operator
import sys
from typing import Any, Callable, Iterator, Mapping, NoReturn, final

from .exceptions import ExpressionError, FlowdslError

__all__ = ["Expression", "ExpressionEvalError", "parse_expression"]

_MAX_SOURCE_LENGTH = 1_000
_MAX_NODES = 200
_MAX_DEPTH = 32
_MAX_CONSTANT_LENGTH = 256
_MAX_INT_DIGITS = 64
_INT_LIMIT = 10**_MAX_INT_DIGITS

# Attributes without a leading underscore that still reach interpreter
# internals (frames, code objects, globals). Calls are impossible, but reading
# a frame's globals would leak whatever the process holds, so they are
# refused like dunders (Jinja2's sandbox keeps a similar list).
_UNSAFE_ATTRIBUTES = frozenset(
    {
        "ag_await",
        "ag_code",
        "ag_frame",
        "co_code",
        "cr_await",
        "cr_code",
        "cr_frame",
        "f_back",
        "f_builtins",
        "f_code",
        "f_globals",
        "f_locals",
        "gi_code",
        "gi_frame",
        "gi_yieldfrom",
        "mro",
        "tb_frame",
        "tb_next",
    }
)

_NO_COMPUTING = "compute the value in a node and compare its result instead"

_BINARY_OPERATORS: dict[type[ast.operator], tuple[str, str]] = {
    ast.Add: ("+", "arithmetic"),
    ast.Sub: ("-", "arithmetic"),
    ast.Mult: ("*", "arithmetic"),
    ast.MatMult: ("@", "arithmetic"),
    ast.Div: ("/", "arithmetic"),
    ast.FloorDiv: ("//", "arithmetic"),
    ast.Mod: ("%", "arithmetic"),
    ast.Pow: ("**", "arithmetic"),
    ast.LShift: ("<<", "bitwise"),
    ast.RShift: (">>", "bitwise"),
    ast.BitOr: ("|", "bitwise"),
    ast.BitXor: ("^", "bitwise"),
    ast.BitAnd: ("&", "bitwise"),
}

# Constructs that are always refused, with what to do instead.
_REFUSED: dict[type[ast.AST], str] = {
    ast.Call: f"a function call; expressions cannot call anything, {_NO_COMPUTING}",
    ast.Lambda: f"a lambda; expressions cannot define functions, {_NO_COMPUTING}",
    ast.ListComp: f"a list comprehension; {_NO_COMPUTING}",
    ast.SetComp: f"a set comprehension; {_NO_COMPUTING}",
    ast.DictComp: f"a dict comprehension; {_NO_COMPUTING}",
    ast.GeneratorExp: f"a generator expression; {_NO_COMPUTING}",
    ast.JoinedStr: "an f-string; compare the parts, or build the string in a node",
    ast.NamedExpr: "an assignment expression (:=); expressions cannot assign",
    ast.Starred: "a starred expression (*x); list the items explicitly",
    ast.Await: "an await; expressions are not coroutines",
    ast.Yield: "a yield; expressions are not generators",
    ast.YieldFrom: "a yield from; expressions are not generators",
}

# Allowed nodes with nothing to check beyond their children.
_PLAIN = (
    ast.Compare,
    ast.BoolOp,
    ast.UnaryOp,
    ast.IfExp,
    ast.Tuple,
    ast.List,
    ast.Set,
)

# Nodes that only label their parent (operators and load/store contexts).
_LABELS = (ast.expr_context, ast.operator, ast.boolop, ast.cmpop, ast.unaryop)


def _contains(item: Any, container: Any) -> bool:
    return item in container


def _not_contains(item: Any, container: Any) -> bool:
    return item not in container


_COMPARISONS: dict[type[ast.cmpop], tuple[str, Callable[[Any, Any], Any]]] = {
    ast.Eq: ("==", operator.eq),
    ast.NotEq: ("!=", operator.ne),
    ast.Lt: ("<", operator.lt),
    ast.LtE: ("<=", operator.le),
    ast.Gt: (">", operator.gt),
    ast.GtE: (">=", operator.ge),
    ast.In: ("in", _contains),
    ast.NotIn: ("not in", _not_contains),
    ast.Is: ("is", operator.is_),
    ast.IsNot: ("is not", operator.is_not),
}


class ExpressionEvalError(FlowdslError):
    """A valid expression could not be evaluated over the values given.

    Raised by `Expression.evaluate` for an unknown name, a missing key or
    attribute, an index out of range, or an operation the values do not
    support (such as ``"a" < 1``). The underlying exception, if any, is
    chained as ``__cause__``.

    Args:
        source: The expression's source text.
        problem: What went wrong, in one sentence.
    """

    def __init__(self, source: str, problem: str) -> None:
        self.source = source
        self.problem = problem
        super().__init__(f"expression {source!r} could not be evaluated: {problem}")


def _type_name(value: Any) -> str:
    return type(value).__name__


def _short_repr(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _label_children(node: ast.AST) -> Iterator[ast.expr]:
    """The expressions directly below `node`, looking through non-expr nodes."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.expr):
            yield child
        elif not isinstance(child, _LABELS):
            # comprehension, keyword, arguments: they only wrap expressions.
            yield from _label_children(child)


class _Checker:
    """Walks a parsed tree once, collecting every problem and every free name."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.problems: list[str] = []
        self.names: set[str] = set()
        self.too_deep = False

    def refuse(self, node: ast.AST, what: str) -> None:
        segment = ast.get_source_segment(self.text, node)
        column = getattr(node, "col_offset", None)
        if segment is None or column is None:  # pragma: no cover - 3.8 slices
            self.problems.append(f"it uses {what}")
            return
        where = _short_repr(segment, 40)
        self.problems.append(f"{where} at column {column + 1} is {what}")

    def over_depth(self, depth: int) -> bool:
        if depth <= _MAX_DEPTH:
            return False
        if not self.too_deep:
            self.too_deep = True
            self.problems.append(
                f"it nests more than {_MAX_DEPTH} levels deep; "
                "split it into simpler conditions"
            )
        return True

    def check(self, node: ast.AST, depth: int) -> None:
        if self.over_depth(depth):
            return
        if isinstance(node, ast.Constant):
            self.check_constant(node)
        elif isinstance(node, ast.Name):
            if node.id.startswith("_"):
                self.refuse(
                    node,
                    "a name starting with an underscore; rename the value "
                    "without the leading '_'",
                )
            else:
                self.names.add(node.id)
        elif isinstance(node, ast.Attribute):
            self.check_attribute(node)
            self.check(node.value, depth + 1)
        elif isinstance(node, ast.Subscript):
            self.check(node.value, depth + 1)
            self.check_index(node.slice, depth + 1)
        elif isinstance(node, ast.Slice):
            self.refuse(node, "a slice outside of a plain subscript; use a[i:j]")
            self.check_children(node, depth)
        elif isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if key is None:
                    self.refuse(value, "a ** unpacking; list the items explicitly")
                else:
                    self.check(key, depth + 1)
                self.check(value, depth + 1)
        elif isinstance(node, ast.BinOp):
            symbol, kind = _BINARY_OPERATORS.get(type(node.op), ("?", "arithmetic"))
            self.refuse(
                node,
                f"the {kind} operator {symbol!r}; expressions only compare "
                f"values, {_NO_COMPUTING}",
            )
            self.check_children(node, depth)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Invert):
            self.refuse(node, f"the bitwise operator '~'; {_NO_COMPUTING}")
            self.check_children(node, depth)
        elif isinstance(node, (*_PLAIN, ast.FormattedValue)):
            # An f-string field is only ever inside the refused f-string.
            self.check_children(node, depth)
        else:
            what = _REFUSED.get(type(node))
            if what is None:
                what = f"a {type(node).__name__} node, which expressions do not allow"
            self.refuse(node, what)
            self.check_children(node, depth)

    def check_children(self, node: ast.AST, depth: int) -> None:
        for child in _label_children(node):
            self.check(child, depth + 1)

    def check_constant(self, node: ast.Constant) -> None:
        value = node.value
        if value is None or isinstance(value, (bool, float)):
            return
        if isinstance(value, int):
            if abs(value) >= _INT_LIMIT:
                self.refuse(
                    node,
                    f"an integer with more than {_MAX_INT_DIGITS} digits; pass "
                    "large numbers in as values",
                )
        elif isinstance(value, (str, bytes)):
            if len(value) > _MAX_CONSTANT_LENGTH:
                kind = "string" if isinstance(value, str) else "bytes"
                self.refuse(
                    node,
                    f"a {kind} constant longer than {_MAX_CONSTANT_LENGTH} "
                    "characters; pass long constants in as values",
                )
        elif value is Ellipsis:
            self.refuse(node, "'...', which has no meaning in a condition")
        else:
            self.refuse(
                node,
                f"a {_type_name(value)} constant; only str, bytes, int, float, "
                "bool and None constants are allowed",
            )

    def check_attribute(self, node: ast.Attribute) -> None:
        if node.attr.startswith("_"):
            self.refuse(
                node,
                "an attribute starting with an underscore; private and special "
                "attributes cannot be read",
            )
        elif node.attr in _UNSAFE_ATTRIBUTES:
            self.refuse(
                node,
                f"the interpreter-internal attribute {node.attr!r}, which "
                "cannot be read",
            )

    def check_index(self, index: ast.AST, depth: int) -> None:
        if sys.version_info < (3, 9):  # pragma: no cover - the 3.8 tree shape
            if isinstance(index, ast.Index):
                index = index.value
            elif isinstance(index, ast.ExtSlice):
                self.refuse(index, "a multi-dimensional slice; use a[i:j]")
                return
        if isinstance(index, ast.Slice):
            if self.over_depth(depth):
                return
            for part in (index.lower, index.upper, index.step):
                if part is not None:
                    self.check(part, depth + 1)
        else:
            self.check(index, depth)


def _parse(source: object) -> tuple[ast.expr, frozenset[str]]:
    """Parse and validate `source`, returning its tree and free names."""
    if not isinstance(source, str):
        raise ExpressionError(
            f"an expression must be a str, not {_type_name(source)} "
            f"({_short_repr(source)}); write the condition as a string"
        )
    if len(source) > _MAX_SOURCE_LENGTH:
        raise ExpressionError(
            f"expression of {len(source):,} characters is longer than the "
            f"limit of {_MAX_SOURCE_LENGTH:,}; use a Python callable for "
            "long conditions"
        )
    # Python's own compile refuses leading indentation in "eval" mode.
    text = source.strip()
    if not text:
        raise ExpressionError(
            "an expression cannot be empty; write a condition such as 'x > 0'"
        )
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, RecursionError, MemoryError, ValueError) as exc:
        detail = exc.msg if isinstance(exc, SyntaxError) else str(exc)
        raise ExpressionError(
            f"expression {source!r} is not valid syntax ({type(exc).__name__}: "
            f"{detail}); write one Python expression, such as 'x > 0' (no "
            "statements or assignments)"
        ) from None

    count = 0
    for node in ast.walk(tree.body):
        if isinstance(node, ast.expr):
            count += 1
            if count > _MAX_NODES:
                raise ExpressionError(
                    f"expression {_short_repr(source)} has more than "
                    f"{_MAX_NODES} parts; use a Python callable for large "
                    "conditions"
                )

    checker = _Checker(text)
    checker.check(tree.body, 1)
    if checker.problems:
        raise ExpressionError(
            f"expression {source!r} is not allowed: " + "; ".join(checker.problems)
        )
    return tree.body, frozenset(checker.names)


class _Interpreter:
    """Runs one validated tree over one mapping of values."""

    def __init__(self, source: str, values: Mapping[str, Any]) -> None:
        self.source = source
        self.values = values

    def fail(self, problem: str, cause: BaseException | None = None) -> NoReturn:
        raise ExpressionEvalError(self.source, problem) from cause

    def truth(self, value: Any) -> bool:
        try:
            return bool(value)
        except Exception as exc:
            self.fail(
                f"a {_type_name(value)} has no truth value "
                f"({type(exc).__name__}: {exc})",
                exc,
            )

    def run(self, node: ast.expr) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            return self.name(node.id)
        if isinstance(node, ast.Attribute):
            return self.attribute(self.run(node.value), node.attr)
        if isinstance(node, ast.Subscript):
            return self.subscript(node)
        if isinstance(node, ast.Compare):
            return self.compare(node)
        if isinstance(node, ast.BoolOp):
            stop_when = isinstance(node.op, ast.Or)
            value: Any = None
            for operand in node.values:
                value = self.run(operand)
                if self.truth(value) is stop_when:
                    return value
            return value
        if isinstance(node, ast.UnaryOp):
            return self.unary(node)
        if isinstance(node, ast.IfExp):
            chosen = node.body if self.truth(self.run(node.test)) else node.orelse
            return self.run(chosen)
        if isinstance(node, ast.List):
            return [self.run(item) for item in node.elts]
        if isinstance(node, ast.Tuple):
            return tuple(self.run(item) for item in node.elts)
        if isinstance(node, ast.Set):
            return self.build("set", [self.run(item) for item in node.elts])
        if isinstance(node, ast.Dict):
            pairs = [
                (self.run(key), self.run(value))
                for key, value in zip(node.keys, node.values)
                if key is not None  # refused by the checker
            ]
            return self.build("dict", pairs)
        raise AssertionError(node)  # pragma: no cover - the checker refused it

    def build(self, kind: str, items: list[Any]) -> Any:
        try:
            return set(items) if kind == "set" else dict(items)
        except Exception as exc:
            self.fail(f"cannot build a {kind} ({type(exc).__name__}: {exc})", exc)

    def name(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            known = sorted(str(key) for key in self.values)
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            listed = ", ".join(repr(k) for k in known[:10])
            more = ", ..." if len(known) > 10 else ""
            self.fail(
                f"unknown name {name!r} (the values hold {listed}{more}).{hint} "
                f"Pass {name!r} in the values or fix the expression."
            )

    def attribute(self, obj: Any, name: str) -> Any:
        if isinstance(obj, collections.abc.Mapping):
            try:
                return obj[name]
            except KeyError as exc:
                self.fail(
                    f"missing key {name!r} (read as '.{name}') in a {_type_name(obj)}",
                    exc,
                )
        # The checker already refused these; checked again so that a tree
        # reaching here by any other route still cannot read internals.
        if name.startswith("_") or name in _UNSAFE_ATTRIBUTES:  # pragma: no cover
            self.fail(f"attribute {name!r} cannot be read")
        try:
            return getattr(obj, name)
        except AttributeError as exc:
            self.fail(f"a {_type_name(obj)} has no attribute {name!r}", exc)
        except Exception as exc:
            self.fail(
                f"reading attribute {name!r} of a {_type_name(obj)} raised "
                f"{type(exc).__name__}: {exc}",
                exc,
            )

    def index_of(self, node: ast.AST) -> Any:
        if sys.version_info < (3, 9):  # pragma: no cover - the 3.8 tree shape
            if isinstance(node, ast.Index):
                node = node.value
        if isinstance(node, ast.Slice):
            return slice(
                None if node.lower is None else self.run(node.lower),
                None if node.upper is None else self.run(node.upper),
                None if node.step is None else self.run(node.step),
            )
        assert isinstance(node, ast.expr)
        return self.run(node)

    def subscript(self, node: ast.Subscript) -> Any:
        obj = self.run(node.value)
        index = self.index_of(node.slice)
        try:
            return obj[index]
        except KeyError as exc:
            self.fail(f"missing key {_short_repr(index)} in a {_type_name(obj)}", exc)
        except IndexError as exc:
            self.fail(
                f"index {_short_repr(index)} is out of range for a {_type_name(obj)}",
                exc,
            )
        except Exception as exc:
            self.fail(
                f"cannot index a {_type_name(obj)} with a {_type_name(index)} "
                f"({type(exc).__name__}: {exc})",
                exc,
            )

    def compare(self, node: ast.Compare) -> Any:
        left = self.run(node.left)
        result: Any = True
        last = len(node.ops) - 1
        for position, (op, right_node) in enumerate(zip(node.ops, node.comparators)):
            right = self.run(right_node)
            symbol, function = _COMPARISONS[type(op)]
            try:
                result = function(left, right)
            except Exception as exc:
                self.fail(
                    f"unsupported comparison {_type_name(left)} {symbol} "
                    f"{_type_name(right)} ({type(exc).__name__}: {exc})",
                    exc,
                )
            # A chain a < b < c stops at the first false link, like Python.
            if position != last and not self.truth(result):
                return result
            left = right
        return result

    def unary(self, node: ast.UnaryOp) -> Any:
        operand = self.run(node.operand)
        if isinstance(node.op, ast.Not):
            return not self.truth(operand)
        symbol = "-" if isinstance(node.op, ast.USub) else "+"
        if not isinstance(operand, numbers.Number):
            self.fail(f"unary {symbol} needs a number, not a {_type_name(operand)}")
        number: Any = operand
        try:
            return -number if symbol == "-" else +number
        except Exception as exc:  # pragma: no cover - numbers support both
            self.fail(f"unary {symbol} failed ({type(exc).__name__}: {exc})", exc)


@final
class Expression:
    """A parsed, validated condition.

    Build one with `parse_expression` (``Expression(source)`` does the same).
    It is immutable, compares and hashes by its source, and pickles by its
    source, so it can travel to worker processes and is validated again
    there.

    Attributes:
        source: The expression's text, exactly as given.
        names: The free top-level names it reads, for example
            ``frozenset({"score", "label"})`` for
            ``"score > 0.5 and label in ['a', 'b']"``. Callers check these
            against the names that will exist before anything runs.

    Args:
        source: The expression's text.

    Raises:
        ExpressionError: `source` is not a str, is too large or too deep, is
            not valid syntax, or uses anything outside the allow-list.
    """

    __slots__ = ("_tree", "names", "source")

    source: str
    names: frozenset[str]
    _tree: ast.expr

    def __init__(self, source: str) -> None:
        tree, names = _parse(source)
        object.__setattr__(self, "source", source)
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "_tree", tree)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"Expression is immutable; cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Expression is immutable; cannot delete {name!r}")

    def __repr__(self) -> str:
        return f"Expression({self.source!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Expression):
            return NotImplemented
        return self.source == other.source

    def __hash__(self) -> int:
        return hash((Expression, self.source))

    def __reduce__(self) -> tuple[Any, ...]:
        return (Expression, (self.source,))

    def evaluate(self, values: Mapping[str, Any]) -> Any:
        """Evaluate the expression over `values`.

        Names are looked up in `values`; the operators follow Python's own
        semantics, so ``and``/``or`` short-circuit and return one of their
        operands, and chained comparisons stop at the first false link.

        Args:
            values: Every name the expression reads (see `names`) mapped to
                its value. Extra entries are ignored.

        Returns:
            The expression's value (a bool for a comparison, an operand for
            ``and``/``or``).

        Raises:
            ExpressionEvalError: A name is not in `values`, a key, index or
                attribute is missing, or the values do not support an
                operation (such as comparing a str with an int).
        """
        if not isinstance(values, collections.abc.Mapping):
            raise ExpressionEvalError(
                self.source,
                f"values must be a mapping of names to values, not a "
                f"{_type_name(values)}",
            )
        return _Interpreter(self.source, values).run(self._tree)


def parse_expression(source: str) -> Expression:
    """Parse and validate a condition string.

    The text is bounded first (at most 1,000 characters), parsed with `ast`
    as a single expression, and then checked against the allow-list and the
    size bounds (200 expression nodes, 32 levels, 256-character constants,
    64-digit integers). Every problem found is reported in one error.

    Args:
        source: The condition, for example ``"increment < 5"``.

    Returns:
        The validated `Expression`.

    Raises:
        ExpressionError: `source` is not a str, is empty, too large or too
            deep, is not valid syntax, or uses a construct that is not
            allowed (each named in the message with what to do instead).
    """
    return Expression(source)
