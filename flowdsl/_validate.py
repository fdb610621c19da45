"""Build-time checks: everything wrong with a flow, found before it runs.

`compile_flow` turns the objects handed to `Flow` into a `Plan`, collecting
every problem on the way and raising them together as one `BlueprintError`.
"""

from __future__ import annotations

import difflib
import inspect
import sys
import warnings
from typing import Any, Iterable, List, Mapping, Sequence, Union

import typing_extensions as te

from ._inference import Binding, bind_parameters, resolve_hints
from ._nodes import BaseNode, _BatchBase, _is_async, node
from ._pauses import SleepNode, WaitNode
from ._plan import Plan, PlanNode
from ._result import Action, ItemError
from ._typecheck import compatible, describe, element_type, scatter_problem
from .exceptions import BlueprintError, DefinitionError, FlowWarning

if sys.version_info >= (3, 9):
    import graphlib
else:  # pragma: no cover - exercised by the 3.8 CI run
    import graphlib  # the graphlib-backport distribution

__all__ = ["compile_flow", "find_cycles"]


def close_match(
    name: str, candidates: Iterable[str], cutoff: float = 0.6
) -> str | None:
    """The candidate closest to `name`, if any is close: for "did you mean"."""
    close = difflib.get_close_matches(name, sorted(candidates), n=1, cutoff=cutoff)
    return close[0] if close else None


def _suggest(name: str, candidates: Iterable[str]) -> str:
    close = close_match(name, candidates)
    return f" Did you mean {close!r}?" if close else ""


def _normalize(items: Iterable[Any], problems: list[str]) -> list[BaseNode]:
    """Nodes as given; plain callables are wrapped, anything else is a problem."""
    nodes: list[BaseNode] = []
    for index, item in enumerate(items):
        if isinstance(item, BaseNode):
            nodes.append(item)
            continue
        try:
            nodes.append(node(item))
        except DefinitionError as exc:
            problems.append(f"item {index} ({item!r}): {exc}")
    return nodes


def find_cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Every independent cycle of `graph` (node -> its predecessors).

    Each cycle found is broken at one edge and the search repeats, so a
    graph with several cycles reports each of them.

    Returns:
        Cycles as paths that start and end at the same node.
    """
    edges = {n: set(preds) for n, preds in graph.items()}
    cycles: list[list[str]] = []
    while True:
        sorter = graphlib.TopologicalSorter(edges)
        try:
            sorter.prepare()
        except graphlib.CycleError as exc:
            # graphlib reports [a, b, ..., a] where each is a predecessor of the
            # next; reversed, each node waits for the one after it.
            found = exc.args[1]
            cycles.append(list(reversed(found)))
            edges[found[1]].discard(found[0])
        else:
            return cycles


def compile_flow(
    flow_id: Any, items: Sequence[Any]
) -> tuple[Plan, dict[str, list[Binding]]]:
    """Check a flow's nodes and compile them into a plan.

    Returns:
        The plan, and each node's parameter bindings (for the blueprint).

    Raises:
        BlueprintError: One or more problems, all listed.
    """
    problems: list[str] = []
    if not isinstance(flow_id, str) or not flow_id:
        raise BlueprintError(
            str(flow_id), [f"a flow id must be a non-empty string, got {flow_id!r}"]
        )
    if isinstance(items, (str, bytes)) or not isinstance(items, Iterable):
        raise BlueprintError(
            flow_id, [f"nodes must be a list of nodes, got {type(items).__name__}"]
        )
    nodes = _normalize(items, problems)
    if not nodes and not problems:
        problems.append("a flow needs at least one node")

    # Every node id, published key and blueprint id must be unique.
    by_id: dict[str, BaseNode] = {}
    owner_of_name: dict[str, str] = {}
    for n in nodes:
        if n.id in by_id:
            other = by_id[n.id]
            problems.append(
                f"duplicate node id {n.id!r}: {other.reference} and {n.reference}; "
                "give one of them another id with @fd.node(id=...)."
            )
            continue
        by_id[n.id] = n
        names = {n.id, n.key}
        if isinstance(n, _BatchBase):
            names |= {f"{n.id}_scatter", f"{n.id}_gather"}
        for name in sorted(names):
            holder = owner_of_name.get(name)
            if holder is not None and holder != n.id:
                problems.append(
                    f"name {name!r} is used by both node {holder!r} and node "
                    f"{n.id!r}; rename one of them."
                )
            owner_of_name[name] = n.id
    producer_of = {n.key: n.id for n in by_id.values()}
    aliases = {n.id: n.key for n in by_id.values() if n.key != n.id}

    bindings: dict[str, list[Binding]] = {}
    deps: dict[str, list[str]] = {}
    hints_of: dict[str, dict[str, Any]] = {}
    for n in by_id.values():
        hints, failures = resolve_hints(n.fn, n.localns)
        hints_of[n.id] = hints
        for param, why in failures.items():
            warnings.warn(
                f"node {n.id!r}: cannot resolve the annotation of {param!r}: {why}; "
                "it is treated as Any. Import the names it uses at module level.",
                FlowWarning,
                stacklevel=4,
            )
        node_bindings, node_problems = bind_parameters(n, hints, producer_of, aliases)
        problems.extend(node_problems)
        bindings[n.id] = node_bindings
        node_deps: list[str] = []
        if isinstance(n, _BatchBase):
            batch_input = aliases.get(n.input, n.input)
            if batch_input in producer_of:
                node_deps.append(producer_of[batch_input])
            else:
                problems.append(
                    f"batch {n.id!r}: its input {n.input!r} is produced by no node "
                    f"in the flow.{_suggest(n.input, producer_of)} Add the producing "
                    "node to the flow or fix input=."
                )
        for b in node_bindings:
            if b.kind != "source":
                continue
            if b.key in producer_of:
                dep = producer_of[b.key]
                if dep not in node_deps:
                    node_deps.append(dep)
            else:
                problems.append(
                    f"node {n.id!r}: parameter {b.param!r} reads from {b.key!r}, "
                    f"which no node in the flow produces.{_suggest(b.key, producer_of)}"
                    " Add that node to the flow or fix the From(...)."
                )
        problems.extend(_control_problems(n, node_bindings, by_id, producer_of))
        node_deps.extend(_control_deps(n, by_id, producer_of, node_deps))
        deps[n.id] = node_deps

    problems.extend(_type_problems(by_id, bindings, hints_of, producer_of, aliases))
    for cycle in find_cycles(deps):
        path = " -> ".join(repr(c) for c in cycle)
        problems.append(
            f"undeclared cycle: {path}; each node waits for the next. Break the "
            "cycle, or rename a parameter that shares a node's name by accident."
        )
    if problems:
        raise BlueprintError(flow_id, problems)
    return _build_plan(flow_id, by_id, bindings, deps, producer_of, aliases), bindings


def _control_deps(
    n: BaseNode,
    by_id: Mapping[str, BaseNode],
    producer_of: Mapping[str, str],
    data_deps: list[str],
) -> list[str]:
    """Nodes `n` waits for without a parameter: `on`, `after`, condition names."""
    options = n.options
    wanted = list(options.after)
    if options.on is not None:
        wanted.append(options.on[0])
    for name in sorted(getattr(options.when, "names", ())):
        if name in producer_of:
            wanted.append(producer_of[name])
    found = []
    for dep in wanted:
        if dep in by_id and dep not in data_deps and dep not in found:
            found.append(dep)
    return found


def _control_problems(
    n: BaseNode,
    node_bindings: list[Binding],
    by_id: Mapping[str, BaseNode],
    producer_of: Mapping[str, str],
) -> list[str]:
    options = n.options
    problems = []
    named = [("on", options.on[0])] if options.on is not None else []
    named += [("after", a) for a in options.after]
    for option, ref in named:
        if ref not in by_id:
            problems.append(
                f"node {n.id!r}: {option}= names {ref!r}, which is not a node of "
                f"the flow.{_suggest(ref, by_id)} Add it or fix {option}=."
            )
    if options.join == "any" and options.on is not None:
        problems.append(
            f"node {n.id!r} has join='any' and on=: it would be decided when its "
            "first predecessor finishes, perhaps before the route is known; put "
            "on= on the predecessors instead."
        )
    for name in sorted(getattr(options.when, "names", ())):
        close = close_match(name, producer_of, cutoff=0.8)
        if name not in producer_of and close:
            warnings.warn(
                f"node {n.id!r}: its condition reads {name!r}, which no node "
                f"produces, so it is a flow input. Did you mean {close!r}?",
                FlowWarning,
                stacklevel=5,
            )
    if options.join == "any":
        for b in node_bindings:
            if b.kind == "source" and b.required:
                problems.append(
                    f"node {n.id!r} has join='any', so parameter {b.param!r} may "
                    f"have no value when it runs; give {b.param!r} a default "
                    "(e.g. None)."
                )
    return problems


def _output_type(n: BaseNode, hints: Mapping[str, Any]) -> Any:
    """The type of what `n` publishes: its return, or a list of them."""
    returned = hints.get("return", Any)
    if returned is Action or te.get_origin(returned) is Action:
        args = te.get_args(returned)
        returned = args[0] if args else Any  # consumers receive the value
    if not isinstance(n, _BatchBase):
        return returned
    # Built at run time from annotations, so typed as plain values here.
    list_of: Any = List
    union_of: Any = Union
    if n.on_error == "collect":
        return list_of[union_of[returned, ItemError]]
    return list_of[returned]


def _type_problems(
    by_id: Mapping[str, BaseNode],
    bindings: Mapping[str, list[Binding]],
    hints_of: Mapping[str, Mapping[str, Any]],
    producer_of: Mapping[str, str],
    aliases: Mapping[str, str],
) -> list[str]:
    """Edges whose two ends' annotations clearly disagree, one line each."""
    problems: list[str] = []
    produced = {i: _output_type(n, hints_of[i]) for i, n in by_id.items()}
    for n in by_id.values():
        if isinstance(n, _BatchBase):
            key = aliases.get(n.input, n.input)
            producer = producer_of.get(key)
            if producer is not None:
                problems.extend(_batch_input_problems(n, producer, produced[producer],
                                                      hints_of[n.id]))  # fmt: skip
        for b in bindings[n.id]:
            producer = producer_of.get(b.key)
            if b.kind != "source" or producer is None:
                continue
            if compatible(produced[producer], b.annotation) is False:
                verb = (
                    "gathers" if isinstance(by_id[producer], _BatchBase) else "returns"
                )
                problems.append(
                    f"node {n.id!r}: parameter {b.param!r} expects "
                    f"{describe(b.annotation)}, but {producer!r} {verb} "
                    f"{describe(produced[producer])}; change the annotation of "
                    f"{b.param!r} or what {producer!r} returns."
                )
    return problems


def _batch_input_problems(
    n: _BatchBase, producer: str, produced: Any, hints: Mapping[str, Any]
) -> list[str]:
    reason = scatter_problem(produced)
    if reason is not None:
        return [
            f"batch {n.id!r} scatters the value of {producer!r}, which returns "
            f"{describe(produced)}: {reason}; make {producer!r} return a list "
            "of items."
        ]
    item = element_type(produced)
    expected = hints.get(n.item_parameter, Any)
    if compatible(item, expected) is False:
        return [
            f"batch {n.id!r}: its item parameter {n.item_parameter!r} expects "
            f"{describe(expected)}, but the items of {producer!r} are "
            f"{describe(item)} (it returns {describe(produced)}); change the "
            f"annotation of {n.item_parameter!r} or what {producer!r} returns."
        ]
    return []


def _fallback_of(n: BaseNode) -> dict[str, Any]:
    fallback = n.options.fallback
    if fallback is None:
        return {}
    fn = fallback.fn if isinstance(fallback, BaseNode) else fallback
    try:
        takes = len(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        takes = 1
    return {
        "fallback": fn,
        "fallback_async": _is_async(fn),
        "fallback_context": takes >= 2,
    }


def _pause_of(n: BaseNode) -> tuple[str, Any] | None:
    if isinstance(n, WaitNode):
        return ("wait", n.event)
    if isinstance(n, SleepNode):
        return ("sleep", (n.seconds, n.durable))
    return None


def _build_plan(
    flow_id: str,
    by_id: Mapping[str, BaseNode],
    bindings: Mapping[str, list[Binding]],
    deps: Mapping[str, list[str]],
    producer_of: Mapping[str, str],
    aliases: Mapping[str, str],
) -> Plan:
    dependents: dict[str, list[str]] = {i: [] for i in by_id}
    for target, sources in deps.items():
        for source in sources:
            dependents[source].append(target)
    required: dict[str, list[str]] = {}
    optional: dict[str, list[str]] = {}
    input_types: dict[str, list[tuple[str, Any]]] = {}
    plan_nodes: dict[str, PlanNode] = {}
    for node_id, n in by_id.items():
        node_bindings = bindings[node_id]
        for b in node_bindings:
            if b.kind == "input":
                consumers = required if b.required else optional
                consumers.setdefault(b.key, []).append(node_id)
                input_types.setdefault(b.key, []).append((node_id, b.annotation))
        for name in sorted(getattr(n.options.when, "names", ())):
            if name not in producer_of:  # a condition reading a flow input
                required.setdefault(name, []).append(node_id)
        batch_opts: dict[str, Any] = {}
        if isinstance(n, _BatchBase):
            batch_opts = {
                "batch_input": aliases.get(n.input, n.input),
                "concurrency": n.concurrency,
                "chunk_size": n.chunk_size,
                "on_error": n.on_error,
            }
        plan_nodes[node_id] = PlanNode(
            id=node_id,
            key=n.key,
            node=n,
            is_async=n.is_async,
            inline=n.inline,
            sources=tuple(
                (b.param, b.key) for b in node_bindings if b.kind == "source"
            ),
            inputs=tuple((b.param, b.key) for b in node_bindings if b.kind == "input"),
            context_params=tuple(b.param for b in node_bindings if b.kind == "context"),
            deps=tuple(deps[node_id]),
            dependents=tuple(dependents[node_id]),
            required=frozenset(b.param for b in node_bindings if b.required),
            on=n.options.on,
            when=n.options.when,
            join=n.options.join,
            loop=getattr(n, "spec", None),
            pause=_pause_of(n),
            policy=n.options.policy,
            **_fallback_of(n),
            **batch_opts,
        )
    return Plan(
        flow_id=flow_id,
        nodes=plan_nodes,
        producer_of=producer_of,
        required_inputs={k: tuple(v) for k, v in required.items()},
        optional_inputs={k: tuple(v) for k, v in optional.items()},
        input_types={k: tuple(v) for k, v in input_types.items()},
        open_inputs=any(
            callable(n.options.when) and not hasattr(n.options.when, "names")
            for n in by_id.values()
        ),
    )
