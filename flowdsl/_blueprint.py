"""Blueprints: a flow as pure, frozen, JSON-serializable data.

The schema follows Flowcraft's `WorkflowBlueprint` (`id`, `nodes`, `edges`,
`metadata`) so blueprints move between the two engines. A blueprint holds no
callables: a node's implementation is named by a `module:qualname` reference
(or, for batches, Flowcraft's `batch-scatter` / `batch-gather` built-ins with
the worker's reference in `params`).
"""

from __future__ import annotations

import json
from types import MappingProxyType
from typing import Any, Iterable, Mapping, Union

import attrs

from .exceptions import BlueprintError

__all__ = ["SCHEMA_VERSION", "Blueprint", "EdgeSpec", "NodeSpec"]

#: Bumped whenever the blueprint's layout changes incompatibly.
SCHEMA_VERSION = 1

#: `inputs` of a node: one key (bound to the first parameter) or param -> key.
Inputs = Union[str, Mapping[str, str], None]


def _freeze(value: Any) -> Any:
    """A deep, immutable copy of JSON-like data (dicts become read-only)."""
    if isinstance(value, Mapping):
        return MappingProxyType({str(k): _freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    """The JSON-native form of frozen data (read-only dicts and tuples undone)."""
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


def _frozen_mapping(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    frozen: Mapping[str, Any] = _freeze(dict(value or {}))
    return frozen


def _frozen_inputs(value: Inputs) -> Inputs:
    if value is None or isinstance(value, str):
        return value
    frozen: Mapping[str, str] = _freeze(dict(value))
    return frozen


@attrs.frozen
class NodeSpec:
    """One node of a blueprint.

    Attributes:
        id: Unique within the blueprint.
        uses: What implements it: a `module:qualname` reference, a registry
            key, or a built-in (`batch-scatter`, `batch-gather`).
        params: Static parameters of the implementation.
        inputs: Where its parameters come from: a mapping of parameter name to
            a node id, batch output key or flow input name; or one key for the
            first parameter.
        config: Execution options that differ from their defaults.
    """

    id: str
    uses: str
    params: Mapping[str, Any] = attrs.field(
        factory=dict, converter=_frozen_mapping, hash=False
    )
    inputs: Inputs = attrs.field(default=None, converter=_frozen_inputs, hash=False)
    config: Mapping[str, Any] = attrs.field(
        factory=dict, converter=_frozen_mapping, hash=False
    )

    def to_dict(self) -> dict[str, Any]:
        """The JSON-native form; empty fields are left out."""
        data: dict[str, Any] = {"id": self.id, "uses": self.uses}
        if self.params:
            data["params"] = _thaw(self.params)
        if self.inputs is not None:
            data["inputs"] = _thaw(self.inputs)
        if self.config:
            data["config"] = _thaw(self.config)
        return data


@attrs.frozen
class EdgeSpec:
    """A dependency: `target` runs after `source`.

    Attributes:
        source: The upstream node id.
        target: The downstream node id.
        action: Run `target` only when `source` returns this action.
        condition: An expression over upstream outputs gating `target`.
        transform: An expression applied to the value on its way.
    """

    source: str
    target: str
    action: str | None = None
    condition: str | None = None
    transform: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON-native form; unset optional fields are left out."""
        data: dict[str, Any] = {"source": self.source, "target": self.target}
        for name in ("action", "condition", "transform"):
            value = getattr(self, name)
            if value is not None:
                data[name] = value
        return data


def _node_tuple(nodes: Iterable[NodeSpec]) -> tuple[NodeSpec, ...]:
    return tuple(nodes)


def _edge_tuple(edges: Iterable[EdgeSpec]) -> tuple[EdgeSpec, ...]:
    return tuple(edges)


@attrs.frozen
class Blueprint:
    """A whole flow as data: nodes, edges and metadata.

    Build one with `fd.Flow(...).blueprint`, or load one with `from_dict`.
    Edit one with `attrs.evolve`.

    Attributes:
        id: The flow's id.
        nodes: Every node, in the order the flow lists them.
        edges: Every dependency between nodes.
        metadata: Free-form data; `schema` holds the layout version and
            `inputs` the flow inputs (`required` and `optional` names).
    """

    id: str
    nodes: tuple[NodeSpec, ...] = attrs.field(converter=_node_tuple)
    edges: tuple[EdgeSpec, ...] = attrs.field(converter=_edge_tuple)
    metadata: Mapping[str, Any] = attrs.field(
        factory=dict, converter=_frozen_mapping, hash=False
    )

    def node(self, node_id: str) -> NodeSpec:
        """The node with id `node_id`.

        Raises:
            KeyError: No node has that id.
        """
        for spec in self.nodes:
            if spec.id == node_id:
                return spec
        raise KeyError(
            f"blueprint {self.id!r} has no node {node_id!r}; its nodes are "
            f"{', '.join(repr(n.id) for n in self.nodes)}."
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON-native form, following Flowcraft's `WorkflowBlueprint`."""
        return {
            "id": self.id,
            "nodes": [n.to_dict() for n in self.nodes],
            "edges": [e.to_dict() for e in self.edges],
            "metadata": _thaw(self.metadata),
        }

    def to_json(self, *, indent: int | None = 2) -> str:
        """The blueprint as a JSON document (keys in a stable order)."""
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> Blueprint:
        """Load a blueprint from `to_json()` output.

        Raises:
            BlueprintError: The text is not JSON or not a valid blueprint.
        """
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise BlueprintError("<json>", [f"not valid JSON: {exc}"]) from None
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Any) -> Blueprint:
        """Load a blueprint from its `to_dict()` form.

        Every shape problem is reported at once.

        Raises:
            BlueprintError: `data` is not a valid blueprint.
        """
        if not isinstance(data, Mapping):
            raise BlueprintError(
                "<unknown>", [f"a blueprint is a mapping, got {type(data).__name__}"]
            )
        flow_id = data.get("id")
        name = flow_id if isinstance(flow_id, str) else "<unknown>"
        problems: list[str] = []
        if not isinstance(flow_id, str) or not flow_id:
            problems.append(f"'id' must be a non-empty string, got {flow_id!r}")
        nodes = _load_list(data, "nodes", _load_node, problems)
        edges = _load_list(data, "edges", _load_edge, problems)
        metadata = data.get("metadata", {})
        if not isinstance(metadata, Mapping):
            problems.append(f"'metadata' must be a mapping, got {metadata!r}")
        unknown = set(data) - {"id", "nodes", "edges", "metadata"}
        if unknown:
            problems.append(f"unknown top-level fields {_names(unknown)}")
        ids = [n.id for n in nodes]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            problems.append(f"duplicate node ids: {', '.join(map(repr, dupes))}")
        # A node rejected above still names itself: no second problem per edge.
        raw_nodes = (
            data["nodes"] if isinstance(data.get("nodes"), (list, tuple)) else []
        )
        known = set(ids) | {
            n["id"]
            for n in raw_nodes
            if isinstance(n, Mapping) and isinstance(n.get("id"), str)
        }
        for edge in edges:
            for end in (edge.source, edge.target):
                if end not in known:
                    problems.append(
                        f"edge {edge.source!r} -> {edge.target!r} names unknown "
                        f"node {end!r}"
                    )
        if problems:
            raise BlueprintError(name, problems)
        return cls(id=name, nodes=nodes, edges=edges, metadata=metadata)


def _names(keys: Iterable[Any]) -> str:
    return "[" + ", ".join(sorted(repr(k) for k in keys)) + "]"


def _load_list(
    data: Mapping[str, Any], field: str, load: Any, problems: list[str]
) -> list[Any]:
    raw = data.get(field)
    if not isinstance(raw, (list, tuple)):
        problems.append(f"{field!r} must be a list, got {raw!r}")
        return []
    loaded = []
    for index, entry in enumerate(raw):
        result = load(index, entry, problems)
        if result is not None:
            loaded.append(result)
    return loaded


def _load_node(index: int, raw: Any, problems: list[str]) -> NodeSpec | None:
    where = f"nodes[{index}]"
    if not isinstance(raw, Mapping):
        problems.append(f"{where} must be a mapping, got {raw!r}")
        return None
    start = len(problems)
    for field in ("id", "uses"):
        if not isinstance(raw.get(field), str) or not raw.get(field):
            problems.append(f"{where}.{field} must be a non-empty string")
    for field in ("params", "config"):
        if not isinstance(raw.get(field, {}), Mapping):
            problems.append(f"{where}.{field} must be a mapping")
    inputs = raw.get("inputs")
    if not (
        inputs is None
        or isinstance(inputs, str)
        or (
            isinstance(inputs, Mapping)
            and all(isinstance(v, str) for v in inputs.values())
        )
    ):
        problems.append(f"{where}.inputs must be a string or a mapping of strings")
    unknown = set(raw) - {"id", "uses", "params", "inputs", "config"}
    if unknown:
        problems.append(f"{where} has unknown fields {_names(unknown)}")
    if len(problems) > start:
        return None
    return NodeSpec(
        id=raw["id"],
        uses=raw["uses"],
        params=raw.get("params", {}),
        inputs=inputs,
        config=raw.get("config", {}),
    )


def _load_edge(index: int, raw: Any, problems: list[str]) -> EdgeSpec | None:
    where = f"edges[{index}]"
    if not isinstance(raw, Mapping):
        problems.append(f"{where} must be a mapping, got {raw!r}")
        return None
    start = len(problems)
    for field in ("source", "target"):
        if not isinstance(raw.get(field), str) or not raw.get(field):
            problems.append(f"{where}.{field} must be a non-empty string")
    for field in ("action", "condition", "transform"):
        if raw.get(field) is not None and not isinstance(raw.get(field), str):
            problems.append(f"{where}.{field} must be a string")
    unknown = set(raw) - {"source", "target", "action", "condition", "transform"}
    if unknown:
        problems.append(f"{where} has unknown fields {_names(unknown)}")
    if len(problems) > start:
        return None
    return EdgeSpec(
        source=raw["source"],
        target=raw["target"],
        action=raw.get("action"),
        condition=raw.get("condition"),
        transform=raw.get("transform"),
    )
