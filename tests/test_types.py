"""Build-time type checks along edges mypy cannot see.

The table gives annotations as strings, as a module written with
`from __future__ import annotations` would; both the `typing` spellings and
the builtin ones (`list[int]`, `int | None`) must work on every supported
Python, including 3.8.
"""

from __future__ import annotations

import warnings
from typing import (  # noqa: F401 (the table's strings use these names)
    Any,
    Dict,
    FrozenSet,
    Iterable,
    List,
    Literal,
    Mapping,
    NewType,
    Optional,
    Sequence,
    Set,
    Tuple,
    TypeVar,
    Union,
)

import pytest
from typing_extensions import Annotated, Protocol  # noqa: F401 (used in strings)

import flowdsl as fd

from .conftest import Runner

UserId = NewType("UserId", int)
T = TypeVar("T")


class Animal:
    pass


class Dog(Animal):
    pass


class Named(Protocol):
    name: str


OK, ERROR, WARN = "ok", "error", "warn"

# (producer's return annotation, consumer's parameter annotation, outcome)
EDGES = [
    # exact, subclass, Any, object
    ("int", "int", OK),
    ("str", "int", ERROR),
    ("Dog", "Animal", OK),
    ("Animal", "Dog", ERROR),
    ("int", "Any", OK),
    ("Any", "int", OK),
    ("int", "object", OK),
    ("bool", "int", OK),
    ("int", "float", OK),
    ("float", "int", ERROR),
    ("int", "complex", OK),
    ("None", "int", ERROR),
    ("None", "None", OK),
    # Optional and Union, both spellings
    ("int", "Optional[int]", OK),
    ("int", "int | None", OK),
    ("Optional[int]", "int", ERROR),
    ("int | None", "int", ERROR),
    ("Optional[int]", "Optional[int]", OK),
    ("int | None", "Optional[int]", OK),
    ("Union[int, str]", "Union[str, int, bytes]", OK),
    ("int | str", "int", ERROR),
    ("str", "Union[int, bytes]", ERROR),
    # generics by origin and arguments, both spellings
    ("list[int]", "List[int]", OK),
    ("List[int]", "list[int]", OK),
    ("list[int]", "Sequence[int]", OK),
    ("list[int]", "Iterable[int]", OK),
    ("list[str]", "list[int]", ERROR),
    ("List[str]", "Sequence[int]", ERROR),
    ("list[Dog]", "Sequence[Animal]", OK),
    ("list", "list[int]", OK),
    ("list[int]", "list", OK),
    ("dict[str, int]", "Mapping[str, int]", OK),
    ("Dict[str, int]", "dict[str, str]", ERROR),
    ("dict[str, int]", "Iterable[str]", OK),
    ("set[int]", "FrozenSet[int]", ERROR),
    ("Set[int]", "Iterable[int]", OK),
    ("tuple[int, str]", "Tuple[int, str]", OK),
    ("tuple[int, int]", "tuple[int, ...]", OK),
    ("tuple[int, str]", "tuple[int, ...]", ERROR),
    ("tuple[int, str]", "tuple[int, str, int]", ERROR),
    ("tuple[int, ...]", "Sequence[int]", OK),
    ("list[int]", "dict[str, int]", ERROR),
    ("list[list[int]]", "Sequence[Sequence[int]]", OK),
    ("list[list[str]]", "Sequence[Sequence[int]]", ERROR),
    # Annotated, NewType, Literal, TypeVar, Protocol
    ("Annotated[int, 'meta']", "int", OK),
    ("int", "Annotated[str, 'meta']", ERROR),
    ("UserId", "int", OK),
    ("UserId", "str", ERROR),
    ("Literal['a', 'b']", "str", OK),
    ("Literal['a']", "Literal['a', 'b']", OK),
    ("Literal['c']", "Literal['a', 'b']", ERROR),
    ("str", "Literal['a', 'b']", OK),
    ("int", "Literal['a', 'b']", ERROR),
    ("int", "T", OK),
    ("list[T]", "list[int]", OK),
    ("Dog", "Named", OK),
    # unresolvable: a warning, never a crash or an error
    ("NoSuchType", "int", WARN),
    ("int", "list[NoSuchType]", WARN),
    ("int", "no such syntax", WARN),
]


def edge_flow(produced: str, expected: str) -> fd.Flow:
    def producer() -> None:
        return None

    def consumer(producer: None) -> None:
        return None

    producer.__annotations__ = {"return": produced}
    consumer.__annotations__ = {"producer": expected}
    return fd.Flow("edge", [fd.node(producer), fd.node(consumer)])


class TestEdgeTypes:
    """A producer's return annotation is checked against its consumer's."""

    @pytest.mark.parametrize(
        ("produced", "expected", "outcome"),
        EDGES,
        ids=[f"{p}->{e}" for p, e, _ in EDGES],
    )
    def test_table(self, produced: str, expected: str, outcome: str) -> None:
        if outcome == ERROR:
            with pytest.raises(fd.BlueprintError) as info:
                edge_flow(produced, expected)
            (problem,) = info.value.problems
            assert "'consumer'" in problem
            assert "'producer'" in problem
        elif outcome == WARN:
            with pytest.warns(fd.FlowWarning, match="cannot resolve"):
                edge_flow(produced, expected)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                edge_flow(produced, expected)

    def test_table_is_large_enough(self) -> None:
        assert len(EDGES) >= 40
        assert {OK, ERROR, WARN} == {outcome for _, _, outcome in EDGES}

    def test_mismatch_message_names_everything_in_one_line(self) -> None:
        @fd.node
        def name() -> str:
            return "x"

        @fd.node
        def double(name: int) -> int:
            return name * 2

        with pytest.raises(fd.BlueprintError) as info:
            fd.Flow("mismatch", [name, double])
        (problem,) = info.value.problems
        assert (
            "node 'double': parameter 'name' expects int, but 'name' returns str; "
            "change the annotation of 'name' or what 'name' returns."
        ) == problem

    def test_every_mismatch_is_reported_at_once(self) -> None:
        @fd.node
        def text() -> str:
            return "x"

        @fd.node
        def one(text: int) -> int:
            return text

        @fd.node
        def two(text: float, one: str) -> str:
            return one

        with pytest.raises(fd.BlueprintError) as info:
            fd.Flow("mismatches", [text, one, two])
        assert 3 == len(info.value.problems)


class TestBatchTypes:
    """A batch's input must be a sequence of items its worker accepts."""

    def test_item_type_checked_against_the_worker(self) -> None:
        @fd.node
        def words() -> list[str]:
            return ["a"]

        @fd.batch(input=words, output="out")
        def double(item: int) -> int:
            return item * 2

        with pytest.raises(fd.BlueprintError) as info:
            fd.Flow("items", [words, double])
        (problem,) = info.value.problems
        assert "batch 'double'" in problem
        assert "'item' expects int" in problem
        assert "items of 'words' are str" in problem

    @pytest.mark.parametrize(
        "returned",
        ["str", "bytes", "dict[str, int]", "None", "Optional[list[int]]", "int"],
    )
    def test_unscatterable_input_rejected_at_build(self, returned: str) -> None:
        def produce() -> None:
            return None

        produce.__annotations__ = {"return": returned}

        @fd.batch(input="produce", output="out")
        def work(item: Any) -> Any:
            return item

        with pytest.raises(fd.BlueprintError, match="batch 'work' scatters"):
            fd.Flow("scatter", [fd.node(produce), work])

    def test_gathered_list_type_checked_downstream(self) -> None:
        @fd.node
        def numbers() -> list[int]:
            return [1]

        @fd.batch(input=numbers, output="labels")
        def label(item: int) -> str:
            return str(item)

        @fd.node
        def total(labels: list[int]) -> int:
            return sum(labels)

        with pytest.raises(fd.BlueprintError, match="'label' gathers list\\[str\\]"):
            fd.Flow("gathered", [numbers, label, total])

    def test_collect_mode_gathers_item_errors_too(self, runner: Runner) -> None:
        @fd.node
        def numbers() -> list[int]:
            return [1, 0]

        @fd.batch(input=numbers, output="inverses", on_error="collect")
        def invert(item: int) -> float:
            return 1 / item

        @fd.node
        def strict(inverses: list[float]) -> int:
            return len(inverses)

        @fd.node
        def lenient(inverses: list[float | fd.ItemError]) -> int:
            return len(inverses)

        with pytest.raises(fd.BlueprintError, match="'strict'"):
            fd.Flow("collect", [numbers, invert, strict])
        result = runner.run(fd.Flow("collect", [numbers, invert, lenient]))
        assert 2 == result[lenient]


class TestUserModules:
    """Postponed annotations and forward references resolve when the flow is built."""

    def test_forward_reference_to_a_later_class(self, runner: Runner) -> None:
        @fd.node
        def make() -> Later:
            return Later(3)

        @fd.node
        def read(make: Later) -> int:
            return make.value

        assert 3 == runner.run(fd.Flow("forward", [make, read]))[read]

    def test_class_defined_inside_a_function(self, runner: Runner) -> None:
        class Local:
            def __init__(self, value: int) -> None:
                self.value = value

        @fd.node
        def make() -> Local:
            return Local(4)

        @fd.node
        def read(make: Local) -> int:
            return make.value

        assert 4 == runner.run(fd.Flow("local", [make, read]))[read]


class Later:
    def __init__(self, value: int) -> None:
        self.value = value


class TestValidateInputs:
    """`validate_inputs=True` checks flow inputs against their annotations."""

    def test_wrong_input_type_rejected_before_any_node_runs(
        self, runner: Runner
    ) -> None:
        ran: list[str] = []

        @fd.node
        def scale(factor: int, names: list[str]) -> int:
            ran.append("scale")
            return factor

        flow = fd.Flow("inputs", [scale])
        with pytest.raises(fd.DefinitionError) as info:
            runner.run(flow, {"factor": "3", "names": ["a", 1]}, validate_inputs=True)
        message = str(info.value)
        assert "'factor'" in message
        assert "'scale'" in message
        assert "expects int" in message
        assert "'names'" in message
        assert [] == ran
        assert (
            3
            == runner.run(flow, {"factor": 3, "names": ["a"]}, validate_inputs=True)[
                scale
            ]
        )

    def test_inputs_are_not_checked_by_default(self, runner: Runner) -> None:
        @fd.node
        def echo(value: int) -> Any:
            return value

        assert "text" == runner.run(fd.Flow("echo", [echo]), {"value": "text"})[echo]


class TestDescribe:
    """Types in messages read the same on every Python, as users write them."""

    @pytest.mark.parametrize(
        ("annotation", "text"),
        [
            (List[int], "list[int]"),
            (Optional[int], "int | None"),
            (Dict[str, List[Animal]], "dict[str, list[Animal]]"),
            (Tuple[int, ...], "tuple[int, ...]"),
            (Sequence[str], "Sequence[str]"),
            (Literal["a", 1], "Literal['a', 1]"),
            (UserId, "int"),
            (None, "None"),
            (Any, "Any"),
        ],
        ids=str,
    )
    def test_describe(self, annotation: Any, text: str) -> None:
        from flowdsl._typecheck import describe

        assert text == describe(annotation)
