"""Run stores' building blocks: the serializers that turn outputs into bytes.

`JsonSerializer` (the default) stores typed JSON and is safe to load from an
untrusted file; `PickleSerializer` is opt-in and only for stores you trust.
"""

from ._serialize import JsonSerializer, PickleSerializer, SerializationError, Serializer

__all__ = ["JsonSerializer", "PickleSerializer", "SerializationError", "Serializer"]
