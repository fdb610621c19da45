"""The public surface: what flowdsl exports, and that each export is documented."""

from __future__ import annotations

import inspect

import pytest

import flowdsl as fd
import flowdsl.exceptions


class TestExports:
    """`flowdsl.__all__` is pinned, sorted, and re-exports only."""

    def test_all_is_pinned(self) -> None:
        assert [
            "Action",
            "AsyncBatchNode",
            "AsyncNode",
            "BatchInputError",
            "BatchNode",
            "Blueprint",
            "BlueprintError",
            "CallInfo",
            "CancelToken",
            "Context",
            "DefinitionChanged",
            "DefinitionError",
            "EdgeSpec",
            "Event",
            "EventBus",
            "ExpressionError",
            "Flow",
            "FlowCancelled",
            "FlowdslError",
            "FlowFailed",
            "FlowWarning",
            "From",
            "ItemError",
            "LoopLimitExceeded",
            "MemoryStore",
            "Middleware",
            "MissingInputError",
            "Node",
            "NodeClass",
            "NodeSpec",
            "NodeTimeout",
            "RecordedError",
            "RunError",
            "RunLocked",
            "RunResult",
            "SqliteStore",
            "batch",
            "loop",
            "node",
            "resume",
            "sleep",
            "subflow",
            "wait_for",
        ] == fd.__all__

    def test_all_is_sorted_classes_first(self) -> None:
        classes = [n for n in fd.__all__ if n[0].isupper()]
        functions = [n for n in fd.__all__ if n[0].islower()]
        assert classes + functions == fd.__all__
        assert sorted(classes, key=str.lower) == classes
        assert sorted(functions) == functions

    def test_init_defines_nothing(self) -> None:
        for name in fd.__all__:
            assert "flowdsl" != getattr(fd, name).__module__, name

    def test_exceptions_are_importable_from_both_places(self) -> None:
        for name in flowdsl.exceptions.__all__:
            assert getattr(flowdsl.exceptions, name) is getattr(fd, name)


class TestHierarchy:
    """Exceptions subclass what DESIGN §10 says they subclass."""

    @pytest.mark.parametrize(
        ("error", "bases"),
        [
            (fd.DefinitionError, (fd.FlowdslError, ValueError)),
            (fd.BlueprintError, (fd.DefinitionError,)),
            (fd.MissingInputError, (fd.DefinitionError,)),
            (fd.FlowFailed, (fd.FlowdslError,)),
            (fd.BatchInputError, (fd.FlowdslError, TypeError)),
        ],
        ids=lambda v: getattr(v, "__name__", ""),
    )
    def test_bases(self, error: type[Exception], bases: tuple[type, ...]) -> None:
        for base in bases:
            assert issubclass(error, base)


class TestDocstrings:
    """Every public object, and every public method on it, has a docstring."""

    def test_public_objects_documented(self) -> None:
        missing = []
        for name in fd.__all__:
            obj = getattr(fd, name)
            if not inspect.getdoc(obj):
                missing.append(name)
            if inspect.isclass(obj):
                for attr, member in vars(obj).items():
                    if attr.startswith("_") or not callable(member):
                        continue
                    if not inspect.getdoc(member):
                        missing.append(f"{name}.{attr}")
        assert [] == missing
