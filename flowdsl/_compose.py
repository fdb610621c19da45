"""Flows inside flows: subflows, batches of subflows, and loops.

A child flow becomes a node of its parent. Its flow inputs become the node's
parameters, resolved in the parent like any node's (explicitly through
`inputs=`, else by name); its output is one child node's value, the single
terminal node's value, or a dict of terminal values. The child runs as an
async node (a child run on the same event loop); the scheduler records the
child's result in the parent's and, for a loop, decides each next iteration.
"""

from __future__ import annotations

import importlib
import inspect
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import attrs

from ._classnode import _CONTEXT
from ._context import Context
from ._durable import CURRENT, crash_point
from ._nodes import (
    BaseNode,
    Condition,
    Join,
    NodeRef,
    OnError,
    Source,
    _BatchBase,
    make_options,
)
from ._result import ChildRun, RunResult
from .exceptions import BlueprintError, DefinitionError, FlowFailed

if TYPE_CHECKING:
    from ._flow import Flow

__all__ = ["LoopNode", "LoopSpec", "SubflowNode", "loop", "subflow"]

_RESOLVING: list[str] = []  # `module:attr` references being resolved, outermost first


def _resolve(child: Any, where: str) -> Flow:
    """The child flow: a `Flow`, or a `module:attr` reference to one."""
    from ._flow import Flow

    if isinstance(child, Flow):
        return child
    if not isinstance(child, str) or child.count(":") != 1:
        raise DefinitionError(
            f"{where}: the child must be a Flow or a 'module:attribute' reference "
            f"to one, got {child!r}."
        )
    if child in _RESOLVING:
        chain = [*_RESOLVING[_RESOLVING.index(child) :], child]
        raise BlueprintError(child, [f"a flow contains itself: {' -> '.join(chain)}"])
    module_name, attr = child.split(":")
    _RESOLVING.append(child)
    try:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise DefinitionError(
                f"{where}: cannot import {module_name!r} for {child!r} ({exc}); "
                "make sure the module is importable here."
            ) from exc
        found = getattr(module, attr, None)
        if found is None and getattr(module.__spec__, "_initializing", False):
            # Still being imported: this reference leads back to a flow whose
            # own definition is not finished, i.e. it contains itself.
            chain = [child, *_RESOLVING[:-1], child]
            raise BlueprintError(
                child, [f"a flow contains itself: {' -> '.join(chain)}"]
            )
    finally:
        _RESOLVING.pop()
    if not isinstance(found, Flow):
        raise DefinitionError(
            f"{where}: {child!r} is {found!r}, not a Flow; point it at a Flow."
        )
    return found


async def _run_child(
    child: Flow,
    inputs: Mapping[str, Any],
    node_id: str,
    ctx: Context | None = None,
) -> RunResult:
    """Run a child flow; a run that did not complete fails the subflow node.

    In a durable run, the child is recorded in the same store under a run id
    made of the parent's, the node's and the item's, so that resuming the
    parent resumes the child where it stopped.
    """
    durable = CURRENT.get() if ctx is not None else None
    if durable is None:
        result = await child.arun(inputs, check=False)
    else:
        crash_point("subflow_enter")
        assert ctx is not None
        run_id = durable.child_id(node_id, ctx.item_index)
        result = await child._arun_child(inputs, durable, run_id)
    if result.status != "completed":
        raise FlowFailed(
            f"subflow {node_id!r} (flow {child.id!r}) did not complete: its "
            f"status is {result.status!r}.",
            result,
        )
    return result


def _terminals(flow: Flow) -> list[str]:
    return [n.id for n in flow._plan.nodes.values() if not n.dependents]


def _check_output(flow: Flow, output: str | None, where: str) -> str | None:
    if output is not None and output not in flow._plan.nodes:
        known = ", ".join(repr(i) for i in flow._plan.nodes)
        raise DefinitionError(
            f"{where}: output={output!r} is not a node of flow {flow.id!r}; "
            f"its nodes are {known}."
        )
    return output


def select_output(
    result: RunResult, output: str | None, terminals: Sequence[str]
) -> Any:
    """The value a child run publishes in its parent.

    An output node that was skipped in the child gives None.
    """
    if output is not None:
        return result.get(output)
    if len(terminals) == 1:
        return result.get(terminals[0])
    return {t: result[t] for t in terminals if t in result}


def _signature(
    flow: Flow, explicit: Mapping[str, str], item: str | None
) -> tuple[inspect.Signature, dict[str, Any]]:
    """Parameters for a child's inputs: required ones, then those with defaults."""
    plan = flow._plan
    names = list(plan.required_inputs) + [
        n for n in plan.optional_inputs if n not in plan.required_inputs
    ]
    params: list[inspect.Parameter] = []
    annotations: dict[str, Any] = {_CONTEXT: Context}
    if item is not None:
        params.append(inspect.Parameter(item, inspect.Parameter.POSITIONAL_OR_KEYWORD))
    for name in names:
        if name == item:
            continue
        default: Any = inspect.Parameter.empty
        if name in explicit:
            default = Source(explicit[name])
        elif name not in plan.required_inputs:
            default = None  # left out of the child's inputs: its own default applies
        params.append(
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default)
        )
        consumers = plan.input_types.get(name, ())
        if consumers:
            annotations[name] = consumers[0][1]
    params.append(
        inspect.Parameter(_CONTEXT, inspect.Parameter.KEYWORD_ONLY, annotation=Context)
    )
    return inspect.Signature(params), annotations


def _explicit(
    flow: Flow, inputs: Mapping[str, NodeRef] | None, where: str
) -> dict[str, str]:
    if inputs is None:
        return {}
    if not isinstance(inputs, Mapping):
        raise DefinitionError(
            f"{where}: inputs must map child input names to parent nodes, "
            f"got {inputs!r}."
        )
    known = set(flow._plan.required_inputs) | set(flow._plan.optional_inputs)
    explicit = {}
    for name, ref in inputs.items():
        if name not in known:
            raise DefinitionError(
                f"{where}: {name!r} is not an input of flow {flow.id!r}; its inputs "
                f"are {', '.join(map(repr, sorted(known))) or 'none'}."
            )
        explicit[name] = ref.key if isinstance(ref, BaseNode) else str(ref)
    return explicit


class SubflowNode(BaseNode):
    """A child `Flow` used as one node of its parent (see `subflow`).

    Calling it runs the child to the end and returns its output.
    """

    child: Flow
    output: str | None

    def __init__(
        self,
        child: Flow,
        *,
        id: str | None,
        inputs: Mapping[str, NodeRef] | None,
        output: str | None,
        options: Mapping[str, Any],
    ) -> None:
        where = f"subflow {id or child.id!r}"
        self.child = child
        self.output = _check_output(child, output, where)
        self.terminals = _terminals(child)
        explicit = _explicit(child, inputs, where)
        signature, annotations = _signature(child, explicit, None)
        fn = self._engine_function()
        fn.__signature__ = signature  # type: ignore[attr-defined]
        fn.__annotations__ = annotations
        fn.__name__ = fn.__qualname__ = id or child.id
        super().__init__(fn, id=id or child.id, options=options)

    @property
    def reference(self) -> str:
        return f"subflow:{self.child.id}"

    def _engine_function(self) -> Callable[..., Any]:
        async def run_child(**inputs: Any) -> ChildRun:
            ctx = inputs.pop(_CONTEXT)
            durable_child = not isinstance(self, LoopNode)  # iterations: not yet
            result = await _run_child(
                self.child, inputs, self.id, ctx if durable_child else None
            )
            return ChildRun(result, select_output(result, self.output, self.terminals))

        return run_child

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if args:
            raise TypeError(f"subflow {self.id!r} takes its inputs by keyword")
        inputs = {
            k: v
            for k, v in kwargs.items()
            if not isinstance(v, Source) and k != _CONTEXT
        }
        return select_output(self.child.run(inputs), self.output, self.terminals)

    def __reduce__(self) -> str | tuple[Any, ...]:
        raise TypeError(
            f"subflow {self.id!r} runs on the event loop and is never sent to "
            "another process."
        )


class SubflowBatchNode(_BatchBase):
    """A child `Flow` run once per item of a parent node's value."""

    child: Flow

    def __init__(
        self,
        child: Flow,
        *,
        id: str | None,
        over: NodeRef,
        item: str,
        inputs: Mapping[str, NodeRef] | None,
        output: str | None,
        options: Mapping[str, Any],
        batch_options: Mapping[str, Any],
    ) -> None:
        name = id or child.id
        where = f"subflow {name!r}"
        plan = child._plan
        if item not in plan.required_inputs and item not in plan.optional_inputs:
            raise DefinitionError(
                f"{where}: item={item!r} is not an input of flow {child.id!r}; name "
                "the child input that receives each item."
            )
        self.child = child
        self.child_output = _check_output(child, output, where)
        self.terminals = _terminals(child)
        explicit = _explicit(child, inputs, where)
        signature, annotations = _signature(child, explicit, item)
        child_output, terminals = self.child_output, self.terminals

        async def run_item(item_value: Any, **inputs: Any) -> Any:
            ctx = inputs.pop(_CONTEXT)
            result = await _run_child(child, {item: item_value, **inputs}, name, ctx)
            return select_output(result, child_output, terminals)

        run_item.__signature__ = signature  # type: ignore[attr-defined]
        run_item.__annotations__ = annotations
        run_item.__name__ = run_item.__qualname__ = name
        super().__init__(
            run_item,
            input=over,
            output=None,
            id=name,
            options=options,
            **batch_options,
        )

    @property
    def reference(self) -> str:
        return f"subflow:{self.child.id}"

    def __reduce__(self) -> str | tuple[Any, ...]:
        raise TypeError(f"subflow {self.id!r} is never sent to another process.")


def subflow(
    child: Flow | str,
    *,
    id: str | None = None,
    inputs: Mapping[str, NodeRef] | None = None,
    output: str | None = None,
    over: NodeRef | None = None,
    item: str | None = None,
    concurrency: int | None = None,
    on_error: OnError = "raise",
    on: tuple[NodeRef, str] | None = None,
    when: Condition | None = None,
    join: Join = "all",
    after: Sequence[NodeRef] = (),
) -> BaseNode:
    """Use a whole flow as one node of another.

    The child's flow inputs become the node's parameters: each is read from
    the parent node named in `inputs`, else from the parent node or batch
    output of the same name, else from a parent flow input. Errors in the
    child fail the node, and appear in the parent's `errors` with their
    `path`; the child's result is in the parent's `result.children`.

    With `over=`, the child runs once per item of that node's value (the item
    bound to the child input named `item`), and the node gathers the outputs
    in order, like a batch.

    Args:
        child: The child flow, or a `"module:attribute"` reference to one.
        id: The node's id; defaults to the child flow's id.
        inputs: Child input name to the parent node (or id) that feeds it.
        output: The child node whose value is the output; by default the
            single terminal node's value, or a dict of terminal values by id.
        over: Run once per item of this node's value.
        item: With `over`, the child input that receives each item.
        concurrency: With `over`, at most this many child runs at once.
        on_error: With `over`, what a failed item does (see `batch`).
        on: Run only on this `(producer, "action")` (see `node`).
        when: Run only when this condition holds (see `node`).
        join: `"all"` or `"any"` (see `node`).
        after: Nodes to wait for without reading their values.

    Returns:
        The node.

    Raises:
        DefinitionError: An option is invalid or names something the child
            does not have.
        BlueprintError: The child contains the flow being defined.
    """
    flow = _resolve(child, f"subflow {id or child!r}")
    options = {"on": on, "when": when, "join": join, "after": after}
    if over is None:
        if item is not None:
            raise DefinitionError(f"subflow {id or flow.id!r}: item= needs over=.")
        return SubflowNode(flow, id=id, inputs=inputs, output=output, options=options)
    if item is None:
        raise DefinitionError(
            f"subflow {id or flow.id!r}: over= needs item=, the child input that "
            "receives each item."
        )
    return SubflowBatchNode(
        flow,
        id=id,
        over=over,
        item=item,
        inputs=inputs,
        output=output,
        options=options,
        batch_options={
            "concurrency": concurrency,
            "chunk_size": 1,
            "on_error": on_error,
        },
    )


@attrs.frozen
class LoopSpec:
    """How a loop repeats its body (the scheduler reads it).

    Attributes:
        carry: Body input name to the body node whose value feeds it next time.
        condition: An `Expression` or a callable `(values, ctx) -> bool`,
            checked after each iteration; the loop repeats while it holds.
        max_iterations: The most iterations allowed.
    """

    carry: Mapping[str, str]
    condition: Any
    max_iterations: int


class LoopNode(SubflowNode):
    """A body flow repeated while a condition holds (see `loop`)."""

    spec: LoopSpec

    @property
    def reference(self) -> str:
        return f"loop:{self.child.id}"


def loop(
    body: Flow | Sequence[BaseNode],
    *,
    id: str,
    while_: Condition,
    carry: Mapping[str, str | BaseNode] | None = None,
    max_iterations: int = 1000,
    inputs: Mapping[str, NodeRef] | None = None,
    output: str | None = None,
    on: tuple[NodeRef, str] | None = None,
    when: Condition | None = None,
    join: Join = "all",
    after: Sequence[NodeRef] = (),
) -> LoopNode:
    """Repeat a body while a condition holds, carrying values forward.

    The body (a flow, or a list of nodes made into one) runs once, then again
    while `while_` holds: a do-while loop, so a condition that is false after
    the first iteration ends the loop with one iteration run. Before each
    next iteration, every `carry` entry feeds a body input with the value of
    a body node from the iteration just finished. The loop's output is the
    last iteration's output (as for `subflow`).

    `while_` sees the last iteration's outputs (by node id), the inputs it
    ran with, and `iteration` (1 for the first).

    Args:
        body: The flow (or nodes) to repeat.
        id: The loop's id.
        while_: The condition: an expression string or `(values, ctx) -> bool`.
        carry: Body input name to the body node whose value feeds it.
        max_iterations: Fail with `fd.LoopLimitExceeded` if the condition
            still holds after this many iterations.
        inputs: Body input name to the parent node that feeds it (first
            iteration; later ones take carried values where given).
        output: The body node whose value is the loop's output.
        on: Run only on this `(producer, "action")` (see `node`).
        when: Run only when this condition holds (see `node`).
        join: `"all"` or `"any"` (see `node`).
        after: Nodes to wait for without reading their values.

    Returns:
        The loop node.

    Raises:
        DefinitionError: An option is invalid.
    """
    from ._flow import Flow

    where = f"loop {id!r}"
    flow = body if isinstance(body, Flow) else Flow(f"{id}_body", body)
    if (
        isinstance(max_iterations, bool)
        or not isinstance(max_iterations, int)
        or max_iterations < 1
    ):
        raise DefinitionError(
            f"{where}: max_iterations must be a positive integer, got "
            f"{max_iterations!r}."
        )
    known_inputs = set(flow._plan.required_inputs) | set(flow._plan.optional_inputs)
    carried: dict[str, str] = {}
    for name, source in (carry or {}).items():
        key = source.key if isinstance(source, BaseNode) else source
        if name not in known_inputs:
            names = ", ".join(map(repr, sorted(known_inputs))) or "none"
            raise DefinitionError(
                f"{where}: carry names {name!r}, which is not an input of the body; "
                f"its inputs are {names}."
            )
        if key not in flow._plan.producer_of:
            raise DefinitionError(
                f"{where}: carry reads {key!r}, which no node of the body produces."
            )
        carried[name] = key
    condition = make_options(id, when=while_).when
    if condition is None:
        raise DefinitionError(f"{where}: while_ is required.")
    readable = {*flow._plan.producer_of, *known_inputs, "iteration"}
    unknown = sorted(set(getattr(condition, "names", ())) - readable)
    if unknown:
        raise DefinitionError(
            f"{where}: while_ reads {', '.join(map(repr, unknown))}, which is neither "
            "a body node, a body input nor 'iteration'; it can read "
            f"{', '.join(map(repr, sorted(readable)))}."
        )
    node = LoopNode(
        flow,
        id=id,
        inputs=inputs,
        output=output,
        options={"on": on, "when": when, "join": join, "after": after},
    )
    node.spec = LoopSpec(carried, condition, max_iterations)
    return node
