"""Serializers that turn node outputs into bytes for a run store, and back.

`JsonSerializer` is the default: typed JSON that is safe to load from a file
nobody vouches for, because loading it never unpickles and never imports
anything. `PickleSerializer` stores any picklable value, and is only for
stores you trust.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import math
import pickle
import re
import reprlib
import uuid
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Callable, Iterable, TypeVar

import attrs
from typing_extensions import Protocol, runtime_checkable

from flowdsl.exceptions import DefinitionError, FlowdslError

__all__ = ["JsonSerializer", "PickleSerializer", "SerializationError", "Serializer"]

#: The key that marks a tagged JSON object.
TAG = "__flowdsl__"
#: Containers nested deeper than this are rejected (JSON and Python recursion
#: limits would be hit somewhere past it).
MAX_DEPTH = 200
#: Integers longer than this many bits are stored as hex: decimal conversion
#: of very long integers is capped on newer Pythons, hex is not.
_MAX_PLAIN_INT_BITS = 8000

_repr = reprlib.Repr()
_repr.maxstring = 60
_repr.maxother = 60

_T = TypeVar("_T", datetime, time)
_Json = Any  # what json.dumps accepts / json.loads returns


@runtime_checkable
class Serializer(Protocol):
    """What a run store uses to turn values into bytes and back.

    A serializer's `name` is stored with each row, so a store can tell which
    serializer wrote a value. `dumps` either returns the complete bytes or
    raises `SerializationError`; it never returns a partial encoding.

    Attributes:
        name: A short, stable name stored with each row, such as `"json"`.
    """

    name: str

    def dumps(
        self, value: Any, *, node_id: str, item_index: int | None = None
    ) -> bytes:
        """Encode one node's (or batch item's) output.

        Args:
            value: The output to store.
            node_id: The node that produced it, for the error message.
            item_index: The batch item that produced it, if any.

        Returns:
            The complete encoding.

        Raises:
            SerializationError: The value cannot be stored by this serializer.
        """
        ...

    def loads(self, data: bytes) -> Any:
        """Decode bytes written by `dumps`.

        Args:
            data: The stored bytes.

        Returns:
            The value, equal to (and of the same type as) the one stored.

        Raises:
            SerializationError: The bytes are not a valid encoding, or name a
                type this serializer may not load.
        """
        ...


class SerializationError(FlowdslError, TypeError):
    """A value cannot be stored, or stored bytes cannot be loaded.

    When storing, the message names the node, the batch item, the path inside
    the value (such as `value['rows'][3].when`) and the offending type, and
    the node (or item) fails with this error: nothing is written.

    Args:
        message: The full message.
        node_id: The node whose output could not be stored (None when loading).
        item_index: The batch item, if any.
        path: Where inside the value the problem is; `"value"` is the whole.
        type_name: The name of the offending type (or stored class name).
    """

    def __init__(
        self,
        message: str,
        node_id: str | None = None,
        item_index: int | None = None,
        path: str = "value",
        type_name: str = "",
    ) -> None:
        super().__init__(message)
        self.node_id = node_id
        self.item_index = item_index
        self.path = path
        self.type_name = type_name

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            type(self),
            (self.args[0], self.node_id, self.item_index, self.path, self.type_name),
        )


def _type_name(value: object) -> str:
    return type(value).__qualname__


def _where(node_id: str, item_index: int | None) -> str:
    item = "" if item_index is None else f" item {item_index}"
    return f"node {node_id!r}{item}"


def _store_error(
    exc: _Reject, node_id: str, item_index: int | None
) -> SerializationError:
    reason = f" ({exc.reason})" if exc.reason else ""
    return SerializationError(
        f"{_where(node_id, item_index)}: cannot store {exc.path} of type "
        f"{exc.type_name} with the JSON serializer{reason}; return plain data (or "
        "register the type), or use PickleSerializer for trusted stores.",
        node_id,
        item_index,
        exc.path,
        exc.type_name,
    )


def _class_key(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _canonical(encoded: _Json) -> str:
    """One stable string per encoded value, to order set members and keys."""
    return json.dumps(encoded, sort_keys=True, separators=(",", ":"), allow_nan=True)


class _Reject(Exception):
    """Raised inside the encoder; turned into `SerializationError` by `dumps`."""

    def __init__(self, path: str, value: object, reason: str = "") -> None:
        super().__init__(path)
        self.path = path
        self.type_name = _type_name(value)
        self.reason = reason


class _Corrupt(Exception):
    """Raised inside the decoder; turned into `SerializationError` by `loads`."""

    def __init__(
        self, path: str, reason: str, type_name: str = "", *, unregistered: bool = False
    ) -> None:
        super().__init__(reason)
        self.path = path
        self.reason = reason
        self.type_name = type_name
        self.unregistered = unregistered


class _Fields:
    """How to read and rebuild one registered attrs class or dataclass."""

    def __init__(self, cls: type) -> None:
        self.cls = cls
        self.key = _class_key(cls)
        # (field name, constructor argument name or None when init=False)
        self.fields: list[tuple[str, str | None]] = []
        if attrs.has(cls):
            for a in attrs.fields(cls):
                self.fields.append((a.name, a.alias if a.init else None))
        else:
            for f in dataclasses.fields(cls):
                self.fields.append((f.name, f.name if f.init else None))
        if any(name == TAG for name, _ in self.fields):
            raise DefinitionError(
                f"{cls.__qualname__} has a field named {TAG!r}, which the JSON "
                "serializer reserves; rename the field."
            )

    def build(self, values: dict[str, Any]) -> Any:
        names = {name for name, _ in self.fields}
        if set(values) != names:
            raise ValueError(
                f"stored fields {sorted(values)} do not match the fields "
                f"{sorted(names)} of {self.key}"
            )
        kwargs = {arg: values[name] for name, arg in self.fields if arg is not None}
        obj = self.cls(**kwargs)
        for name, arg in self.fields:
            if arg is None:
                object.__setattr__(obj, name, values[name])
        return obj


class JsonSerializer:
    """The default serializer: typed, deterministic JSON; safe to load.

    Plain JSON is used for `str`, `int`, `float`, `bool`, `None`, lists and
    dicts with string keys. Everything else supported is a tagged object
    `{"__flowdsl__": "<tag>", "v": ...}`: `datetime`, `date`, `time` (ISO
    format, UTC offset kept), `timedelta`, `Decimal`, `UUID`, `bytes`,
    `tuple`, `set`, `frozenset`, `pathlib` paths, dicts with non-string keys
    (or a `"__flowdsl__"` key), and instances of the attrs classes and
    dataclasses you register. Types are preserved exactly: a tuple loads as a
    tuple, a frozenset as a frozenset. Subclasses of supported types (an
    `IntEnum`, an `OrderedDict`, a namedtuple) are rejected rather than
    silently turned into their base type.

    `dumps` checks the whole value before it returns: a value with anything
    else in it (a generator, a function, an open file, a lock, a module, a
    class, a circular reference, NaN or infinity unless `allow_nan=True`)
    raises `SerializationError` naming the node, the item, the path inside
    the value and the type. The output is compact UTF-8 with sorted keys and
    sorted set members, so equal values give equal bytes.

    `loads` never unpickles and never imports: a stored object is rebuilt
    only if its class was registered with this serializer (by calling the
    class with its init fields, then setting any `init=False` fields).

    Args:
        types: attrs classes and dataclasses whose instances may be stored.
        allow_nan: Store float (and Decimal) NaN and infinities too.

    Raises:
        DefinitionError: One of `types` is not an attrs class or a dataclass.
    """

    name = "json"

    def __init__(self, *, types: Iterable[type] = (), allow_nan: bool = False) -> None:
        self._allow_nan = bool(allow_nan)
        self._by_type: dict[type, _Fields] = {}
        self._by_key: dict[str, _Fields] = {}
        for cls in types:
            self.register(cls)

    @property
    def allow_nan(self) -> bool:
        """Whether NaN and infinities may be stored."""
        return self._allow_nan

    @property
    def types(self) -> tuple[type, ...]:
        """The registered classes, in registration order."""
        return tuple(self._by_type)

    def register(self, cls: type) -> None:
        """Allow instances of an attrs class or dataclass to be stored and loaded.

        The class is stored by its name, `module:qualname`; only classes
        registered with the loading serializer can be loaded. Registering the
        same class twice does nothing.

        Args:
            cls: An attrs class or a dataclass.

        Raises:
            DefinitionError: `cls` is not an attrs class or a dataclass, has
                a field named `"__flowdsl__"`, or another class with the same
                name is already registered.
        """
        if not isinstance(cls, type) or not (
            attrs.has(cls) or dataclasses.is_dataclass(cls)
        ):
            raise DefinitionError(
                f"JsonSerializer.register() needs an attrs class or a dataclass, "
                f"got {cls!r}; convert other values to plain data, or use "
                "PickleSerializer for trusted stores."
            )
        if cls in self._by_type:
            return
        fields = _Fields(cls)
        other = self._by_key.get(fields.key)
        if other is not None:
            raise DefinitionError(
                f"another class named {fields.key!r} is already registered with "
                "this JsonSerializer; class names must be unique."
            )
        self._by_type[cls] = fields
        self._by_key[fields.key] = fields

    def dumps(
        self, value: Any, *, node_id: str, item_index: int | None = None
    ) -> bytes:
        """Encode a value as typed JSON, checking all of it first.

        Args:
            value: The output to store.
            node_id: The node that produced it, named in any error.
            item_index: The batch item that produced it, if any.

        Returns:
            Compact, deterministic UTF-8 JSON.

        Raises:
            SerializationError: Some part of the value cannot be stored; the
                message names the node, the item, the path and the type.
        """
        try:
            encoded = self._encode(value, "value", set(), 0)
        except _Reject as exc:
            raise _store_error(exc, node_id, item_index) from None
        except RecursionError:
            deep = _Reject("value", value, "nested too deeply")
            raise _store_error(deep, node_id, item_index) from None
        options: dict[str, Any] = {
            "sort_keys": True,
            "separators": (",", ":"),
            "allow_nan": self._allow_nan,
        }
        text = json.dumps(encoded, ensure_ascii=False, **options)
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:
            # Lone surrogates: escape them, so the bytes stay valid UTF-8.
            return json.dumps(encoded, ensure_ascii=True, **options).encode("ascii")

    def loads(self, data: bytes) -> Any:
        """Decode bytes written by `dumps`, never unpickling or importing.

        Args:
            data: The stored bytes.

        Returns:
            The value, equal to and of the same type as the one stored.

        Raises:
            SerializationError: The bytes are not valid typed JSON, or name a
                class that is not registered with this serializer.
        """
        try:
            raw = json.loads(bytes(data).decode("utf-8"))
        except (ValueError, TypeError, RecursionError) as exc:
            raise SerializationError(
                f"cannot load a stored value with the JSON serializer: it is not "
                f"valid JSON ({exc})."
            ) from None
        try:
            return self._decode(raw, "value", 0)
        except _Corrupt as exc:
            if exc.unregistered:
                message = (
                    f"cannot load {exc.path}: {exc.reason} (loading never "
                    "imports); register the class to load it."
                )
            else:
                message = (
                    f"cannot load {exc.path} with the JSON serializer: {exc.reason}."
                )
            raise SerializationError(
                message, None, None, exc.path, exc.type_name
            ) from None

    # -- encoding ---------------------------------------------------------

    def _encode(self, value: Any, path: str, active: set[int], depth: int) -> _Json:
        t = type(value)
        if value is None or t is str or t is bool:
            return value
        if t is int:
            if value.bit_length() > _MAX_PLAIN_INT_BITS:
                return {TAG: "int", "v": format(value, "x")}
            return value
        if t is float:
            if not self._allow_nan and not math.isfinite(value):
                raise _Reject(
                    path, value, f"{value!r} is not allowed; pass allow_nan=True"
                )
            return value
        encoder = _SCALARS.get(t)
        if encoder is not None:
            if t is Decimal and not self._allow_nan and not value.is_finite():
                raise _Reject(
                    path, value, f"{value} is not allowed; pass allow_nan=True"
                )
            return encoder(value)
        if t in (list, tuple, set, frozenset, dict) or t in self._by_type:
            if depth >= MAX_DEPTH:
                raise _Reject(path, value, f"nested deeper than {MAX_DEPTH} levels")
            if id(value) in active:
                raise _Reject(path, value, "circular reference")
            active.add(id(value))
            try:
                return self._encode_container(value, t, path, active, depth + 1)
            finally:
                active.discard(id(value))
        raise _Reject(path, value, _why_not(value))

    def _encode_container(
        self, value: Any, t: type, path: str, active: set[int], depth: int
    ) -> _Json:
        enc = self._encode
        if t is list:
            return [enc(x, f"{path}[{i}]", active, depth) for i, x in enumerate(value)]
        if t is tuple:
            items = [enc(x, f"{path}[{i}]", active, depth) for i, x in enumerate(value)]
            return {TAG: "tuple", "v": items}
        if t is set or t is frozenset:
            members = [
                enc(x, f"{path}{{element {i}}}", active, depth)
                for i, x in enumerate(value)
            ]
            members.sort(key=_canonical)
            return {TAG: "set" if t is set else "frozenset", "v": members}
        if t is dict:
            if all(type(k) is str for k in value) and TAG not in value:
                return {
                    k: enc(v, f"{path}[{_repr.repr(k)}]", active, depth)
                    for k, v in value.items()
                }
            pairs = [
                [
                    enc(k, f"{path}<key {i}>", active, depth),
                    enc(v, f"{path}[{_repr.repr(k)}]", active, depth),
                ]
                for i, (k, v) in enumerate(value.items())
            ]
            pairs.sort(key=lambda pair: _canonical(pair[0]))
            return {TAG: "dict", "v": pairs}
        fields = self._by_type[t]
        return {
            TAG: "obj",
            "cls": fields.key,
            "v": {
                name: enc(getattr(value, name), f"{path}.{name}", active, depth)
                for name, _ in fields.fields
            },
        }

    # -- decoding ---------------------------------------------------------

    def _decode(self, raw: _Json, path: str, depth: int) -> Any:
        if depth > 2 * MAX_DEPTH + 2:
            raise _Corrupt(path, "nested too deeply")
        if isinstance(raw, list):
            return [
                self._decode(x, f"{path}[{i}]", depth + 1) for i, x in enumerate(raw)
            ]
        if not isinstance(raw, dict):
            return raw  # str, int, float, bool, None
        if TAG not in raw:
            return {
                k: self._decode(v, f"{path}[{_repr.repr(k)}]", depth + 1)
                for k, v in raw.items()
            }
        tag = raw[TAG]
        expected = {TAG, "cls", "v"} if tag == "obj" else {TAG, "v"}
        if set(raw) != expected:
            raise _Corrupt(
                path, f"a tagged object must have exactly the keys {sorted(expected)}"
            )
        v = raw["v"]
        try:
            if tag == "obj":
                return self._decode_obj(raw["cls"], v, path, depth)
            if tag in _CONTAINER_TAGS:
                return self._decode_container(tag, v, path, depth)
            decoder = _DECODERS.get(tag) if isinstance(tag, str) else None
            if decoder is None:
                raise _Corrupt(path, f"unknown tag {_repr.repr(tag)}")
            return decoder(v)
        except (_Corrupt, RecursionError):
            raise
        except Exception as exc:
            raise _Corrupt(
                path, f"bad {_repr.repr(tag)} value ({exc})", str(tag)
            ) from None

    def _decode_container(self, tag: str, v: _Json, path: str, depth: int) -> Any:
        if not isinstance(v, list):
            raise _Corrupt(path, f"a {tag!r} value must be a list")
        if tag == "dict":
            result = {}
            for i, pair in enumerate(v):
                if not isinstance(pair, list) or len(pair) != 2:
                    raise _Corrupt(f"{path}<key {i}>", "a dict entry must be a pair")
                key = self._decode(pair[0], f"{path}<key {i}>", depth + 1)
                result[key] = self._decode(
                    pair[1], f"{path}[{_repr.repr(key)}]", depth + 1
                )
            return result
        items = [self._decode(x, f"{path}[{i}]", depth + 1) for i, x in enumerate(v)]
        if tag == "tuple":
            return tuple(items)
        if tag == "set":
            return set(items)
        return frozenset(items)

    def _decode_obj(self, key: _Json, v: _Json, path: str, depth: int) -> Any:
        fields = self._by_key.get(key) if isinstance(key, str) else None
        if fields is None:
            raise _Corrupt(
                path,
                f"class {_repr.repr(key)} is not registered with this JsonSerializer",
                str(key),
                unregistered=True,
            )
        if not isinstance(v, dict):
            raise _Corrupt(path, f"the fields of {key} must be an object")
        values = {
            name: self._decode(x, f"{path}.{name}", depth + 1) for name, x in v.items()
        }
        return fields.build(values)


def _why_not(value: object) -> str:
    """A short hint for a rejected value's kind, or '' when plain is enough."""
    if dataclasses.is_dataclass(value) or attrs.has(type(value)):
        return "its class is not registered"
    if isinstance(value, (int, float, str, bytes, list, tuple, set, frozenset, dict)):
        return "a subclass of a supported type; convert it to the base type"
    if isinstance(value, (datetime, date, time, timedelta, Decimal, uuid.UUID)):
        return "a subclass of a supported type; convert it to the base type"
    return ""


def _encode_bytes(value: bytes) -> _Json:
    return {TAG: "bytes", "v": base64.b64encode(value).decode("ascii")}


def _decode_bytes(v: _Json) -> bytes:
    if not isinstance(v, str):
        raise TypeError("expected a base64 string")
    try:
        return base64.b64decode(v.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ValueError(str(exc)) from None


def _str(v: _Json) -> str:
    if not isinstance(v, str):
        raise TypeError(f"expected a string, got {type(v).__name__}")
    return v


_SUBSECOND_OFFSET = re.compile(r"([+-])(\d{2}):(\d{2}):(\d{2})\.(\d{6})$")


def _from_iso(cls: type[_T], text: str) -> _T:
    """`cls.fromisoformat`, also for UTC offsets with microseconds.

    Python 3.8 to 3.10 drop an offset's microseconds, so they are parsed here.
    """
    match = _SUBSECOND_OFFSET.search(text)
    if match is None:
        return cls.fromisoformat(text)
    sign, hours, minutes, seconds, micros = match.groups()
    offset = timedelta(
        hours=int(hours),
        minutes=int(minutes),
        seconds=int(seconds),
        microseconds=int(micros),
    )
    naive = cls.fromisoformat(text[: match.start()])
    tz = timezone(-offset if sign == "-" else offset)
    return naive.replace(tzinfo=tz)


def _decode_timedelta(v: _Json) -> timedelta:
    if not (isinstance(v, list) and len(v) == 3 and all(type(x) is int for x in v)):
        raise TypeError("expected [days, seconds, microseconds]")
    return timedelta(days=v[0], seconds=v[1], microseconds=v[2])


def _decode_int(v: _Json) -> int:
    return int(_str(v), 16)


def _tagged(tag: str, convert: Callable[[Any], _Json]) -> Callable[[Any], _Json]:
    return lambda value: {TAG: tag, "v": convert(value)}


_SCALARS: dict[type, Callable[[Any], _Json]] = {
    datetime: _tagged("datetime", datetime.isoformat),
    date: _tagged("date", date.isoformat),
    time: _tagged("time", time.isoformat),
    timedelta: _tagged("timedelta", lambda td: [td.days, td.seconds, td.microseconds]),
    Decimal: _tagged("decimal", str),
    uuid.UUID: _tagged("uuid", str),
    bytes: _encode_bytes,
    # Concrete paths are PosixPath or WindowsPath; both load as Path.
    type(Path()): _tagged("path", str),
    PurePosixPath: _tagged("pureposixpath", str),
    PureWindowsPath: _tagged("purewindowspath", str),
}

_DECODERS: dict[str, Callable[[Any], Any]] = {
    "datetime": lambda v: _from_iso(datetime, _str(v)),
    "date": lambda v: date.fromisoformat(_str(v)),
    "time": lambda v: _from_iso(time, _str(v)),
    "timedelta": _decode_timedelta,
    "decimal": lambda v: Decimal(_str(v)),
    "uuid": lambda v: uuid.UUID(_str(v)),
    "bytes": _decode_bytes,
    "path": lambda v: Path(_str(v)),
    "pureposixpath": lambda v: PurePosixPath(_str(v)),
    "purewindowspath": lambda v: PureWindowsPath(_str(v)),
    "int": _decode_int,
}

_CONTAINER_TAGS = frozenset({"tuple", "set", "frozenset", "dict"})


class PickleSerializer:
    """Opt-in pickle serializer: ONLY for stores you trust.

    Loading a pickle can run arbitrary code: anyone who can write to the
    store (or hand you its file) can make `loads` execute whatever they like.
    Use it only for a store that you alone write and read, and keep the
    default `JsonSerializer` for anything else. It stores any picklable
    value, with pickle protocol 5 by default (4 also allowed).

    Args:
        protocol: The pickle protocol, 4 or 5.

    Raises:
        DefinitionError: `protocol` is not 4 or 5.
    """

    name = "pickle"

    def __init__(self, *, protocol: int = 5) -> None:
        if protocol not in (4, 5):
            raise DefinitionError(
                f"PickleSerializer(protocol={protocol!r}): use protocol 4 or 5."
            )
        self._protocol = protocol

    @property
    def protocol(self) -> int:
        """The pickle protocol used by `dumps`."""
        return self._protocol

    def dumps(
        self, value: Any, *, node_id: str, item_index: int | None = None
    ) -> bytes:
        """Pickle a value; the bytes are complete or nothing is returned.

        Args:
            value: The output to store.
            node_id: The node that produced it, named in any error.
            item_index: The batch item that produced it, if any.

        Returns:
            The pickled bytes.

        Raises:
            SerializationError: The value cannot be pickled; the message
                names the node, the item and the value's type.
        """
        try:
            return pickle.dumps(value, protocol=self._protocol)
        except Exception as exc:
            type_name = _type_name(value)
            raise SerializationError(
                f"{_where(node_id, item_index)}: cannot store value of type "
                f"{type_name} with the pickle serializer ({exc}); return "
                "picklable data.",
                node_id,
                item_index,
                "value",
                type_name,
            ) from exc

    def loads(self, data: bytes) -> Any:
        """Unpickle stored bytes. This can run arbitrary code: trusted data only.

        Args:
            data: Bytes written by `dumps` into a store you trust.

        Returns:
            The unpickled value.

        Raises:
            SerializationError: The bytes could not be unpickled.
        """
        try:
            return pickle.loads(data)  # trusted stores only (see above)
        except Exception as exc:
            raise SerializationError(
                f"cannot load a stored value with the pickle serializer ({exc})."
            ) from exc
