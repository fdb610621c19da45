"""Diagrams of a blueprint: Mermaid flowcharts and Graphviz DOT.

Both work from the blueprint alone (pure data), so a stored blueprint can be
drawn without importing the code it names. A batch is drawn as Flowcraft
draws it: producer -> `<id>_scatter` -> a "Parallel Workers" subgraph ->
`<id>_gather` -> consumer.
"""

from __future__ import annotations

import re

from ._blueprint import Blueprint, NodeSpec

__all__ = ["to_dot", "to_mermaid"]

_UNSAFE = re.compile(r"[^A-Za-z0-9_]")


def _mermaid_id(node_id: str) -> str:
    safe = _UNSAFE.sub("_", node_id)
    return safe if safe == node_id else f"{safe}_{abs(hash(node_id)) % 10_000}"


def _label(text: str) -> str:
    return text.replace('"', "#quot;")


def _worker_label(spec: NodeSpec) -> str:
    reference = str(spec.params.get("workerUsesKey", "worker"))
    return reference.rpartition(":")[2] or reference


def to_mermaid(blueprint: Blueprint) -> str:
    """Draw `blueprint` as a Mermaid `flowchart TD`.

    Args:
        blueprint: The flow's blueprint.

    Returns:
        The diagram's source text.
    """
    lines = ["flowchart TD"]
    worker_of: dict[str, str] = {}
    for spec in blueprint.nodes:
        mid = _mermaid_id(spec.id)
        if spec.uses == "batch-scatter":
            gather = str(spec.params.get("gatherNodeId", f"{spec.id}_gather"))
            worker = f"{mid}_worker"
            worker_of[spec.id] = worker
            lines.append(f'    {mid}[["{_label(spec.id)}"]]')
            lines.append(f'    subgraph {mid}_workers ["Parallel Workers"]')
            lines.append(f'        {worker}("{_label(_worker_label(spec))}")')
            lines.append("    end")
            lines.append(f"    {mid} -.-> {worker}")
            lines.append(f"    {worker} -.-> {_mermaid_id(gather)}")
        elif spec.uses == "batch-gather":
            lines.append(f'    {mid}[["{_label(spec.id)}"]]')
        elif spec.uses == "loop-controller":
            label = spec.params.get("while") or "condition"
            lines.append(f'    {mid}{{{{"{_label(spec.id)}"}}}}')
            lines.append(f'    {mid} -- "while {_label(str(label))}" --> {mid}')
        elif spec.uses == "subflow":
            lines.append(f'    {mid}[["{_label(spec.id)}"]]')
        else:
            lines.append(f'    {mid}["{_label(spec.id)}"]')
    for edge in blueprint.edges:
        if edge.source in worker_of:
            continue  # scatter -> gather is drawn through its workers
        label = edge.action or edge.condition
        arrow = f' -- "{_label(label)}" --> ' if label else " --> "
        lines.append(f"    {_mermaid_id(edge.source)}{arrow}{_mermaid_id(edge.target)}")
    return "\n".join(lines) + "\n"


def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_dot(blueprint: Blueprint) -> str:
    """Draw `blueprint` as a Graphviz `digraph`.

    Args:
        blueprint: The flow's blueprint.

    Returns:
        The diagram's source text.
    """
    lines = [f"digraph {_dot_quote(blueprint.id)} {{", "    rankdir=TB;"]
    for spec in blueprint.nodes:
        shape = "box" if spec.uses.startswith("batch-") else "ellipse"
        lines.append(f"    {_dot_quote(spec.id)} [shape={shape}];")
        if spec.uses == "batch-scatter":
            worker = f"{spec.id} workers"
            gather = str(spec.params.get("gatherNodeId", f"{spec.id}_gather"))
            lines.append(
                f"    {_dot_quote(worker)} [shape=box3d, "
                f"label={_dot_quote(_worker_label(spec))}];"
            )
            lines.append(
                f"    {_dot_quote(spec.id)} -> {_dot_quote(worker)} [style=dashed];"
            )
            lines.append(
                f"    {_dot_quote(worker)} -> {_dot_quote(gather)} [style=dashed];"
            )
    scatters = {s.id for s in blueprint.nodes if s.uses == "batch-scatter"}
    for edge in blueprint.edges:
        if edge.source in scatters:
            continue
        lines.append(f"    {_dot_quote(edge.source)} -> {_dot_quote(edge.target)};")
    lines.append("}")
    return "\n".join(lines) + "\n"
