"""A flow's identity for a store: what resume compares, and what caching keys on.

Each node gets a definition entry: `spec`, the parts of its definition that
decide its output (where its arguments come from, what a batch scatters,
routing, joins), and `code`, a hash of its source. Resuming a stored run
compares the stored entries with the current flow's, and a cached output is
keyed on `code` and the node's inputs.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import textwrap
import types
from typing import TYPE_CHECKING, Any, Mapping

from ._plan import Plan, PlanNode

if TYPE_CHECKING:
    from ._blueprint import Blueprint

__all__ = ["blueprint_hash", "definition", "differences", "digest", "downstream"]


def digest(*parts: bytes) -> str:
    """SHA-256 of the parts, each kept apart from the next (hex)."""
    return hashlib.sha256(b"\0".join(parts)).hexdigest()


def _sha(text: str) -> str:
    return digest(text.encode("utf-8", "surrogatepass"))


def blueprint_hash(blueprint: Blueprint) -> str:
    """SHA-256 of the blueprint's canonical JSON."""
    return _sha(json.dumps(blueprint.to_dict(), sort_keys=True, default=str))


def _code_text(obj: Any) -> str:
    """The source of a function or class; its bytecode when there is none."""
    try:
        return textwrap.dedent(inspect.getsource(obj))
    except (OSError, TypeError):
        code = getattr(obj, "__code__", None)
        if isinstance(code, types.CodeType):
            return _bytecode(code)
        return getattr(obj, "__qualname__", type(obj).__qualname__)


def _bytecode(code: types.CodeType) -> str:
    parts = [code.co_code.hex(), repr(code.co_names)]
    for const in code.co_consts:
        parts.append(
            _bytecode(const) if isinstance(const, types.CodeType) else repr(const)
        )
    return "|".join(parts)


def code_hash(n: PlanNode) -> str:
    """A hash of the code that computes the node's output."""
    node = n.node
    child = getattr(node, "child", None)
    if child is not None:  # a subflow or loop: its child flow's definition
        from ._flow import Flow

        if isinstance(child, Flow):
            return _sha(json.dumps(definition(child._plan), sort_keys=True))
    fn = node.fn
    target = getattr(fn, "__flowdsl_code__", fn)
    parts = [_code_text(target)]
    fallback = n.fallback
    if fallback is not None:
        parts.append(_code_text(getattr(fallback, "__flowdsl_code__", fallback)))
    return _sha("\0".join(parts))


def _spec(n: PlanNode) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "sources": sorted(f"{param}<-{key}" for param, key in n.sources),
        "inputs": sorted(f"{param}<-{name}" for param, name in n.inputs),
        "after": sorted(n.deps),
    }
    if n.pause is not None or hasattr(n.node, "child"):
        spec["uses"] = n.node.reference  # a pause, subflow or loop
    if n.batch_input is not None:
        spec["batch_input"] = n.batch_input
        spec["on_error"] = n.on_error
    if n.on is not None:
        spec["on"] = list(n.on)
    if n.join != "all":
        spec["join"] = n.join
    if n.pause is not None:
        spec["pause"] = json.loads(json.dumps(n.pause, default=str))
    if n.when is not None:
        spec["when"] = _condition_text(n.when)
    node = n.node
    for name in ("output", "child_output"):  # what a subflow publishes
        if hasattr(node, name) and hasattr(node, "child"):
            spec["output"] = getattr(node, name)
    if n.loop is not None:
        spec["loop"] = {
            "while": _condition_text(n.loop.condition),
            "carry": dict(n.loop.carry),
            "max_iterations": n.loop.max_iterations,
        }
    return spec


def _condition_text(condition: Any) -> str:
    """An expression's source, or a callable condition's code."""
    source = getattr(condition, "source", None)
    return source if isinstance(source, str) else _code_text(condition)


def definition(plan: Plan) -> dict[str, dict[str, Any]]:
    """Per node id: `{"spec": ..., "code": ...}`, plain JSON data."""
    return {
        node_id: {"spec": _spec(n), "code": code_hash(n)}
        for node_id, n in plan.nodes.items()
    }


def differences(
    old: Mapping[str, Mapping[str, Any]], new: Mapping[str, Mapping[str, Any]]
) -> dict[str, str]:
    """What changed from `old` to `new`: node id to one line about it."""
    found: dict[str, str] = {}
    for node_id in old:
        if node_id not in new:
            found[node_id] = f"node {node_id!r} was removed"
    for node_id, entry in new.items():
        before = old.get(node_id)
        if before is None:
            found[node_id] = f"node {node_id!r} is new"
            continue
        changed = [
            f"{field} {before['spec'].get(field)!r} -> {entry['spec'].get(field)!r}"
            for field in sorted(set(before["spec"]) | set(entry["spec"]))
            if before["spec"].get(field) != entry["spec"].get(field)
        ]
        if before.get("code") != entry.get("code"):
            changed.insert(0, "its code changed")
        if changed:
            found[node_id] = f"node {node_id!r}: {'; '.join(changed)}"
    return found


def downstream(plan: Plan, node_ids: set[str]) -> set[str]:
    """The nodes given and every node that depends on them, in `plan`."""
    seen = set()
    stack = [i for i in node_ids if i in plan.nodes]
    while stack:
        node_id = stack.pop()
        if node_id not in seen:
            seen.add(node_id)
            stack.extend(plan.nodes[node_id].dependents)
    return seen
