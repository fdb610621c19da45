"""Serializers: typed JSON round trips, safe loading, and precise rejections."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import pickle
import sys
import threading
import uuid
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Iterator

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowdsl.exceptions import DefinitionError, FlowdslError
from flowdsl.store import (
    JsonSerializer,
    PickleSerializer,
    SerializationError,
    Serializer,
)


@attrs.frozen
class Point:
    """A frozen attrs class registered with the serializer."""

    x: int
    y: float


@attrs.define
class Secretive:
    """An attrs class with a private (aliased) field and an init=False field."""

    _token: str
    label: str = attrs.field(init=False, default="")


@dataclasses.dataclass(frozen=True)
class Reading:
    """A frozen dataclass holding a mix of supported types."""

    when: datetime
    values: tuple[Any, ...]
    where: Point | None = None


@dataclasses.dataclass
class Counted:
    """A dataclass with a field its constructor does not take."""

    name: str
    count: int = dataclasses.field(init=False, default=0)


@dataclasses.dataclass
class Unregistered:
    """A dataclass that no test registers."""

    a: int


def make_json(**options: Any) -> JsonSerializer:
    return JsonSerializer(types=[Point, Secretive, Reading, Counted], **options)


def typed(value: Any) -> Any:
    """A hashable picture of a value that also records every type inside it."""
    t = type(value)
    if t is float:
        return (t, "nan" if math.isnan(value) else repr(value))
    if t in (list, tuple):
        return (t, tuple(typed(x) for x in value))
    if t in (set, frozenset):
        return (t, frozenset(typed(x) for x in value))
    if t is dict:
        return (t, frozenset((typed(k), typed(v)) for k, v in value.items()))
    if t in (datetime, time):
        return (t, value.isoformat())
    if t is Decimal:
        return (t, str(value))
    if attrs.has(t):
        return (t, tuple(typed(getattr(value, a.name)) for a in attrs.fields(t)))
    if dataclasses.is_dataclass(t):
        fields = dataclasses.fields(value)
        return (t, tuple(typed(getattr(value, f.name)) for f in fields))
    return (t, value)


def round_trip(serializer: JsonSerializer, value: Any) -> Any:
    return serializer.loads(serializer.dumps(value, node_id="n"))


# -- strategies -------------------------------------------------------------

offsets = st.builds(
    timezone,
    st.timedeltas(
        min_value=timedelta(hours=-23, minutes=-59),
        max_value=timedelta(hours=23, minutes=59),
    ),
)
tzinfos = st.none() | offsets
datetimes = st.builds(lambda d, tz: d.replace(tzinfo=tz), st.datetimes(), tzinfos)
times = st.builds(lambda t, tz: t.replace(tzinfo=tz), st.times(), tzinfos)
paths = st.lists(st.text("abc_-. ", min_size=1, max_size=5), max_size=4)

hashable_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(),
    st.binary(),
    datetimes,
    st.dates(),
    times,
    st.timedeltas(),
    st.decimals(allow_nan=False, allow_infinity=False),
    st.uuids(),
    paths.map(lambda parts: Path(*parts)),
    paths.map(lambda parts: PurePosixPath(*parts)),
    paths.map(lambda parts: PureWindowsPath(*parts)),
    st.builds(Point, st.integers(), st.floats(allow_nan=False, allow_infinity=False)),
)


def hashables(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.tuples(children, children),
        st.frozensets(children, max_size=4),
    )


hashable_values = st.recursive(hashable_scalars, hashables, max_leaves=8)


def containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(children, max_size=4),
        st.lists(children, max_size=4).map(tuple),
        st.sets(hashable_values, max_size=4),
        st.frozensets(hashable_values, max_size=4),
        st.dictionaries(st.text(), children, max_size=4),
        st.dictionaries(hashable_values, children, max_size=4),
        st.dictionaries(st.sampled_from(["__flowdsl__", "v", "x"]), children),
        st.builds(Reading, datetimes, st.lists(children, max_size=3).map(tuple)),
        st.builds(Secretive, st.text()),
    )


values = st.recursive(hashable_scalars, containers, max_leaves=20)
# Hypothesis warns that these nested strategies have a long repr; harmless.
long_repr_ok = pytest.mark.filterwarnings("ignore:Generating overly large repr")


class TestProtocol:
    """Both serializers satisfy the `Serializer` protocol and name themselves."""

    def test_instances_are_serializers(self) -> None:
        assert isinstance(JsonSerializer(), Serializer)
        assert isinstance(PickleSerializer(), Serializer)

    def test_names(self) -> None:
        assert "json" == JsonSerializer.name
        assert "pickle" == PickleSerializer.name

    def test_error_hierarchy(self) -> None:
        assert issubclass(SerializationError, FlowdslError)
        assert issubclass(SerializationError, TypeError)

    def test_error_pickles(self) -> None:
        error = SerializationError("boom", "n", 2, "value[0]", "lock")
        copy = pickle.loads(pickle.dumps(error))
        assert ("boom", "n", 2, "value[0]", "lock") == (
            str(copy),
            copy.node_id,
            copy.item_index,
            copy.path,
            copy.type_name,
        )


class TestRoundTrip:
    """Every supported value loads back equal, with every type preserved."""

    @long_repr_ok
    @settings(max_examples=300, deadline=None)
    @given(values)
    def test_any_supported_value(self, value: Any) -> None:
        assert typed(value) == typed(round_trip(make_json(), value))

    @long_repr_ok
    @settings(deadline=None)
    @given(values)
    def test_encoding_is_stable(self, value: Any) -> None:
        serializer = make_json()
        data = serializer.dumps(value, node_id="n")
        assert data == serializer.dumps(serializer.loads(data), node_id="n")
        data.decode("utf-8")

    @pytest.mark.parametrize(
        "value",
        [
            (1, 2),
            (),
            {1, 2},
            frozenset({"a"}),
            frozenset(),
            [(1,), {2}, frozenset({(3, 4)})],
            {(1, 2): "pair", 3: "int", "3": "str", None: 0, True: "bool"},
            {"__flowdsl__": "dict", "v": []},
            {"__flowdsl__": {"__flowdsl__": 1}},
            b"\x00\xff",
            Decimal("1.500"),
            Decimal("-0"),
            timedelta(days=-3, microseconds=7),
            datetime(
                2024, 3, 31, 1, 30, tzinfo=timezone(timedelta(hours=5, minutes=30))
            ),
            time(23, 59, 59, 999999, tzinfo=timezone.utc),
            uuid.UUID(int=7),
            Path("a/b.txt"),
            PureWindowsPath("C:/x"),
            2**50000,
            -(2**50000),
            "lone \ud800 surrogate",
            Counted("x"),
        ],
        ids=lambda value: type(value).__name__,
    )
    def test_examples(self, value: Any) -> None:
        assert typed(value) == typed(round_trip(make_json(), value))

    def test_init_false_and_private_fields(self) -> None:
        secretive = Secretive("t0k")
        secretive.label = "set later"
        counted = Counted("c")
        counted.count = 9
        loaded = round_trip(make_json(), [secretive, counted])
        assert [secretive, counted] == loaded
        assert ("set later", 9) == (loaded[0].label, loaded[1].count)

    def test_nested_registered_instances(self) -> None:
        value = Reading(datetime(2020, 1, 2), (Point(1, 2.5), {b"x"}), Point(0, 0.0))
        assert typed(value) == typed(round_trip(make_json(), value))

    def test_equal_values_give_equal_bytes(self) -> None:
        serializer = make_json()
        first = {"b": 1, "a": {3, 1, 2}, 2: "x", (1,): "y"}
        second = {(1,): "y", 2: "x", "a": {2, 3, 1}, "b": 1}
        assert serializer.dumps(first, node_id="n") == serializer.dumps(
            second, node_id="n"
        )

    def test_output_is_compact_json(self) -> None:
        assert b'{"a":[1,2.5,null]}' == JsonSerializer().dumps(
            {"a": [1, 2.5, None]}, node_id="n"
        )

    @given(st.floats() | st.decimals())
    def test_nan_and_infinity_when_allowed(self, value: Any) -> None:
        assert typed(value) == typed(round_trip(JsonSerializer(allow_nan=True), value))

    def test_shared_references_are_not_cycles(self) -> None:
        shared = [1, 2]
        assert [shared, shared] == round_trip(JsonSerializer(), [shared, shared])


def rejection(value: Any, **options: Any) -> SerializationError:
    with pytest.raises(SerializationError) as info:
        make_json(**options).dumps(
            {"rows": [0, 1, 2, value]}, node_id="load", item_index=3
        )
    return info.value


def generator() -> Iterator[int]:
    yield 1


class TestRejections:
    """Values the JSON serializer cannot store fail with node, item, path and type."""

    def test_message(self) -> None:
        error = rejection(Reading(datetime(2020, 1, 1), (threading.Lock(),)))
        name = type(threading.Lock()).__qualname__
        assert (
            f"node 'load' item 3: cannot store value['rows'][3].values[0] of type "
            f"{name} with the JSON serializer; return plain data (or register the "
            "type), or use PickleSerializer for trusted stores."
        ) == str(error)
        assert ("load", 3, "value['rows'][3].values[0]", name) == (
            error.node_id,
            error.item_index,
            error.path,
            error.type_name,
        )

    def test_registered_field_path(self) -> None:
        lock = threading.Lock()
        error = rejection(Reading(lock, ()))  # type: ignore[arg-type]
        assert "value['rows'][3].when" == error.path
        assert "value['rows'][3].when of type " in str(error)

    @pytest.mark.parametrize(
        ("make", "type_name"),
        [
            (generator, "generator"),
            (lambda: lambda: 1, "function"),
            (threading.Lock, type(threading.Lock()).__qualname__),
            (lambda: sys, "module"),
            (lambda: Point, "type"),
            (lambda: Unregistered(1), "Unregistered"),
            (lambda: object(), "object"),
            (lambda: bytearray(b"x"), "bytearray"),
        ],
    )
    def test_unsupported(self, make: Any, type_name: str) -> None:
        error = rejection(make())
        assert ("load", 3, "value['rows'][3]", type_name) == (
            error.node_id,
            error.item_index,
            error.path,
            error.type_name,
        )
        assert (
            f"node 'load' item 3: cannot store value['rows'][3] of type {type_name}"
            in str(error)
        )

    def test_unregistered_dataclass_hint(self) -> None:
        assert "its class is not registered" in str(rejection(Unregistered(1)))

    def test_open_file(self, tmp_path: Path) -> None:
        with open(tmp_path / "f.txt", "w") as handle:
            error = rejection(handle)
        assert ("value['rows'][3]", "TextIOWrapper") == (error.path, error.type_name)
        assert "node 'load' item 3" in str(error)

    def test_circular_list(self) -> None:
        loop: list[Any] = [1]
        loop.append(loop)
        error = rejection(loop)
        assert ("value['rows'][3][1]", "list") == (error.path, error.type_name)
        assert "node 'load' item 3" in str(error)
        assert "circular reference" in str(error)

    def test_circular_dict(self) -> None:
        loop: dict[str, Any] = {}
        loop["me"] = loop
        with pytest.raises(SerializationError, match="circular") as info:
            JsonSerializer().dumps(loop, node_id="n")
        assert "value['me']" == info.value.path

    @pytest.mark.parametrize(
        "value", [math.nan, math.inf, -math.inf, Decimal("NaN"), Decimal("-Infinity")]
    )
    def test_nan_by_default(self, value: Any) -> None:
        error = rejection(value)
        assert ("load", 3, "value['rows'][3]") == (
            error.node_id,
            error.item_index,
            error.path,
        )
        assert "allow_nan=True" in str(error)

    def test_subclasses_of_supported_types(self) -> None:
        from collections import OrderedDict, namedtuple

        pair = namedtuple("pair", "a b")
        for value in (OrderedDict(a=1), pair(1, 2)):
            assert "subclass" in str(rejection(value))

    def test_set_member_and_dict_key_paths(self) -> None:
        serializer = JsonSerializer()
        with pytest.raises(SerializationError) as info:
            serializer.dumps({"s": {generator}}, node_id="n")
        assert "value['s']{element 0}" == info.value.path
        with pytest.raises(SerializationError) as info:
            serializer.dumps({generator: 1}, node_id="n")
        assert "value<key 0>" == info.value.path

    def test_no_item_index(self) -> None:
        with pytest.raises(SerializationError) as info:
            JsonSerializer().dumps(generator(), node_id="n")
        assert info.value.item_index is None
        assert str(info.value).startswith("node 'n': cannot store value of type ")

    def test_too_deep(self) -> None:
        value: list[Any] = []
        for _ in range(1000):
            value = [value]
        with pytest.raises(SerializationError, match="nested deeper"):
            JsonSerializer().dumps(value, node_id="n")

    def test_error_at_the_very_end_still_raises(self) -> None:
        value = [*range(10000), generator()]
        with pytest.raises(SerializationError) as info:
            JsonSerializer().dumps(value, node_id="n")
        assert "value[10000]" == info.value.path


class TestRegister:
    """Only attrs classes and dataclasses can be registered."""

    @pytest.mark.parametrize("cls", [int, dict, object, Point(1, 2.0), "Point"])
    def test_rejects_other_types(self, cls: Any) -> None:
        with pytest.raises(DefinitionError):
            JsonSerializer().register(cls)
        with pytest.raises(DefinitionError):
            JsonSerializer(types=[cls])

    def test_twice_is_fine(self) -> None:
        serializer = JsonSerializer(types=[Point])
        serializer.register(Point)
        assert (Point,) == serializer.types

    def test_same_name_different_class(self) -> None:
        serializer = JsonSerializer(types=[Point])
        other = attrs.define(type("Point", (), {"__module__": __name__}))
        with pytest.raises(DefinitionError, match="already registered"):
            serializer.register(other)


class AuditLog:
    """Records imports and pickle class look-ups while it is switched on."""

    events: list[tuple[str, Any]] = []  # noqa: RUF012 - shared on purpose
    on = False
    installed = False

    @classmethod
    def hook(cls, event: str, args: Any) -> None:
        if cls.on and (event == "import" or event.startswith("pickle.")):
            cls.events.append((event, args))

    @classmethod
    def watching(cls) -> AuditLog:
        if not cls.installed:
            sys.addaudithook(cls.hook)
            cls.installed = True
        cls.events.clear()
        return cls()

    def __enter__(self) -> list[tuple[str, Any]]:
        type(self).on = True
        return type(self).events

    def __exit__(self, *exc: object) -> None:
        type(self).on = False


def forbidden(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("pickle was used")


class TestSafeLoading:
    """The JSON serializer never unpickles and never imports while loading."""

    def test_never_unpickles(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for name in ("loads", "load", "Unpickler", "dumps", "dump", "Pickler"):
            monkeypatch.setattr(pickle, name, forbidden)
        serializer = make_json()
        value = {
            "all": [
                datetime(2021, 5, 6, tzinfo=timezone.utc),
                date(2021, 5, 6),
                time(1, 2),
                timedelta(1),
                Decimal("2.50"),
                uuid.UUID(int=1),
                b"raw",
                (1, 2),
                {1},
                frozenset({2}),
                Path("p"),
                {1: 2, "__flowdsl__": 3},
                Reading(datetime(2021, 1, 1), (Point(1, 1.0),)),
            ]
        }
        with AuditLog.watching() as events:
            loaded = serializer.loads(serializer.dumps(value, node_id="n"))
        assert typed(value) == typed(loaded)
        assert [] == events

    @pytest.mark.parametrize(
        "name",
        [
            "os:system",
            "subprocess:Popen",
            "no_such_module_for_flowdsl_tests:Thing",
            f"{__name__}:Unregistered",
            "builtins:eval",
        ],
    )
    def test_unregistered_class_is_not_loaded(self, name: str) -> None:
        payload = (
            '{"__flowdsl__":"obj","cls":"%s","v":{"a":1}}' % name  # noqa: UP031
        ).encode()
        before = set(sys.modules)
        with AuditLog.watching() as events, pytest.raises(SerializationError) as info:
            make_json().loads(payload)
        assert before == set(sys.modules)
        assert [] == events
        assert "no_such_module_for_flowdsl_tests" not in sys.modules
        assert (name, "value") == (info.value.type_name, info.value.path)
        assert "not registered" in str(info.value)

    def test_loads_needs_registration_on_the_loading_side(self) -> None:
        data = make_json().dumps([Point(1, 2.0)], node_id="n")
        with pytest.raises(SerializationError, match="not registered") as info:
            JsonSerializer().loads(data)
        assert "value[0]" == info.value.path
        assert [Point(1, 2.0)] == JsonSerializer(types=[Point]).loads(data)

    @pytest.mark.parametrize(
        "payload",
        [
            b"",
            b"\xff\xfe",
            b"{",
            b'{"__flowdsl__":"nope","v":1}',
            b'{"__flowdsl__":"tuple"}',
            b'{"__flowdsl__":"tuple","v":1}',
            b'{"__flowdsl__":"tuple","v":[],"extra":1}',
            b'{"__flowdsl__":"set","v":[[1]]}',
            b'{"__flowdsl__":"dict","v":[[1]]}',
            b'{"__flowdsl__":"dict","v":[[[1],2]]}',
            b'{"__flowdsl__":"datetime","v":5}',
            b'{"__flowdsl__":"datetime","v":"yesterday"}',
            b'{"__flowdsl__":"timedelta","v":[1,2]}',
            b'{"__flowdsl__":"timedelta","v":[1e9,0,0]}',
            b'{"__flowdsl__":"decimal","v":"one"}',
            b'{"__flowdsl__":"uuid","v":"x"}',
            b'{"__flowdsl__":"bytes","v":"***"}',
            b'{"__flowdsl__":"int","v":"xyz"}',
            b'{"__flowdsl__":1,"v":1}',
            b'{"__flowdsl__":"obj","cls":[],"v":{}}',
            b'{"__flowdsl__":"obj","cls":"tests.test_serialize:Point","v":{"x":1}}',
            b'{"__flowdsl__":"obj","cls":"tests.test_serialize:Point","v":[]}',
            b"[" * 100000 + b"]" * 100000,
        ],
        ids=lambda payload: repr(payload[:40]),
    )
    def test_malformed_payloads(self, payload: bytes) -> None:
        with pytest.raises(SerializationError):
            make_json().loads(payload)

    @settings(deadline=None)
    @given(
        st.recursive(
            st.none()
            | st.integers()
            | st.text(max_size=3)
            | st.sampled_from(
                ["tuple", "set", "frozenset", "dict", "obj", "bytes", "datetime"]
            ),
            lambda children: (
                st.lists(children, max_size=3)
                | st.dictionaries(
                    st.sampled_from(["__flowdsl__", "v", "cls", "x"]),
                    children,
                    max_size=3,
                )
            ),
            max_leaves=12,
        )
    )
    def test_crafted_json_only_loads_or_raises_serialization_error(
        self, raw: Any
    ) -> None:
        import json

        data = json.dumps(raw).encode()
        with contextlib.suppress(SerializationError):
            make_json().loads(data)

    @given(st.binary())
    def test_random_bytes(self, data: bytes) -> None:
        with contextlib.suppress(SerializationError):
            make_json().loads(data)


class TestPickle:
    """The opt-in pickle serializer round trips and names the node on failure."""

    def test_round_trip(self) -> None:
        serializer = PickleSerializer()
        value = {"p": Point(1, 2.0), "u": Unregistered(3), "s": {1, 2}, "t": (1,)}
        loaded = serializer.loads(serializer.dumps(value, node_id="n"))
        assert typed(value) == typed(loaded)

    def test_protocols(self) -> None:
        assert 4 == PickleSerializer(protocol=4).protocol
        with pytest.raises(DefinitionError):
            PickleSerializer(protocol=2)

    @pytest.mark.parametrize(
        ("make", "type_name"),
        [
            (lambda: {"fn": lambda: 1}, "dict"),
            (threading.Lock, type(threading.Lock()).__qualname__),
            (generator, "generator"),
        ],
    )
    def test_error_names_node(self, make: Any, type_name: str) -> None:
        with pytest.raises(SerializationError) as info:
            PickleSerializer().dumps(make(), node_id="load", item_index=5)
        error = info.value
        assert ("load", 5, "value", type_name) == (
            error.node_id,
            error.item_index,
            error.path,
            error.type_name,
        )
        assert str(error).startswith(
            f"node 'load' item 5: cannot store value of type {type_name} with the "
            "pickle serializer"
        )

    def test_garbage(self) -> None:
        with pytest.raises(SerializationError):
            PickleSerializer().loads(b"not a pickle")

    def test_docstring_warns(self) -> None:
        doc = PickleSerializer.__doc__ or ""
        assert "trust" in doc
        assert "arbitrary code" in doc


class TestDocstrings:
    """Every public object and method of `flowdsl.store` is documented."""

    def test_documented(self) -> None:
        import inspect

        import flowdsl.store

        assert sorted(flowdsl.store.__all__) == flowdsl.store.__all__
        missing = []
        for name in flowdsl.store.__all__:
            obj = getattr(flowdsl.store, name)
            if not inspect.getdoc(obj):
                missing.append(name)
            for attr, member in vars(obj).items():
                if attr.startswith("_") or not (
                    callable(member) or isinstance(member, property)
                ):
                    continue
                if not inspect.getdoc(member):
                    missing.append(f"{name}.{attr}")
        assert [] == missing
