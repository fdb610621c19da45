"""`Flow`: a validated set of nodes, its blueprint, and the two ways to run it."""

from __future__ import annotations

import functools
import sys
import types
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Iterable,
    Literal,
    Mapping,
    Sequence,
    TypeVar,
    Union,
)

from ._blueprint import SCHEMA_VERSION, Blueprint, EdgeSpec, NodeSpec
from ._cancel import CancelToken
from ._compose import LoopNode, SubflowNode, _resolve
from ._definition import blueprint_hash, definition, digest
from ._durable import Durable, OnChange, open_run
from ._events import Listener
from ._inference import Binding
from ._journal import CommitEvery
from ._middleware import split_middleware
from ._nodes import BaseNode, _BatchBase, node_options
from ._plan import Plan
from ._result import RunResult
from ._runner import AsyncDriver, SyncDriver
from ._typecheck import describe, value_matches
from ._validate import close_match, compile_flow
from .exceptions import (
    DefinitionError,
    FlowCancelled,
    FlowFailed,
    MissingInputError,
)
from .executors import ExecutorSpec, resolve_executor
from .store._base import Store

__all__ = ["Flow", "resume"]

if TYPE_CHECKING:
    from ._nodes import AnyNode

    NodeLike = Union[AnyNode, Callable[..., Any]]

D = TypeVar("D", SyncDriver, AsyncDriver)


class Flow:
    """A workflow: nodes whose edges are inferred from their signatures.

    The flow is checked when it is built: every problem (duplicate ids,
    cycles, sources that do not exist, batches with no producer, functions
    that cannot be nodes) is reported at once in one `BlueprintError`, and no
    node runs.

    Args:
        id: The flow's id.
        nodes: The nodes: `@fd.node` / `@fd.batch` functions (plain functions
            are taken as `@fd.node` with default options).

    Raises:
        BlueprintError: The flow has one or more problems.
    """

    def __init__(self, id: str, nodes: Iterable[NodeLike]) -> None:
        items = (
            list(nodes)
            if isinstance(nodes, Iterable) and not isinstance(nodes, (str, bytes))
            else nodes
        )
        plan, bindings = compile_flow(id, items)
        # Where the flow was built, so `fd.resume` can import it by reference.
        self._module: str | None = sys._getframe(1).f_globals.get("__name__")
        self._identity_cache: tuple[str, dict[str, dict[str, Any]]] | None = None
        self._id = id
        self._plan = plan
        self._blueprint = _make_blueprint(plan, bindings)

    @classmethod
    def from_module(cls, module: types.ModuleType, *, id: str | None = None) -> Flow:
        """Build a flow from every node defined in `module`, in definition order.

        Nodes imported into the module from elsewhere are left out.

        Args:
            module: The module to collect from.
            id: The flow's id; defaults to the module's name.

        Raises:
            BlueprintError: The collected flow has problems (or no nodes).
        """
        nodes = [
            value
            for value in vars(module).values()
            if isinstance(value, BaseNode) and value.fn.__module__ == module.__name__
        ]
        flow = cls(id if id is not None else module.__name__, nodes)
        flow._module = module.__name__
        return flow

    @property
    def id(self) -> str:
        """The flow's id."""
        return self._id

    @property
    def nodes(self) -> tuple[BaseNode, ...]:
        """The flow's nodes, in the order given."""
        return tuple(n.node for n in self._plan.nodes.values())

    @property
    def blueprint(self) -> Blueprint:
        """The flow as frozen, JSON-serializable data."""
        return self._blueprint

    @property
    def inputs(self) -> Mapping[str, bool]:
        """Every flow input's name, mapped to whether it is required."""
        names = dict.fromkeys(self._plan.optional_inputs, False)
        names.update(dict.fromkeys(self._plan.required_inputs, True))
        return names

    def run(
        self,
        inputs: Mapping[str, Any] | None = None,
        *,
        concurrency: int | None = None,
        executor: ExecutorSpec = None,
        store: Store | None = None,
        run_id: str | None = None,
        commit_every: CommitEvery = None,
        on_change: OnChange = "raise",
        check: bool = True,
        validate_inputs: bool = False,
        on_event: Listener | None = None,
        cancel: CancelToken | None = None,
        middleware: Sequence[Any] | None = None,
        progress: bool | Literal["always"] = False,
    ) -> RunResult:
        """Run the flow to the end and return its result.

        Works in plain scripts and where the calling thread already runs an
        event loop (Jupyter, an async app): async nodes run on a private loop.

        Args:
            inputs: Values for the flow inputs, by name.
            concurrency: At most this many nodes and batch items in flight.
            executor: Where sync nodes run: `"threads"` (default), `"inline"`,
                `"processes"`, or any `concurrent.futures.Executor`.
            store: Record the run as it goes (`fd.SqliteStore(path)`), so it
                can be resumed after a crash and looked up later.
            run_id: The run's id; a random one by default. With a `store`
                that already holds this run, the run is resumed.
            commit_every: With a `store`: commit after this many rows (int),
                this many seconds (float), or `(rows, seconds)`; by default
                every result is committed as soon as possible.
            on_change: Resuming a stored run whose flow changed: `"raise"`
                (`fd.DefinitionChanged`) or `"rerun_changed"`.
            check: Raise `FlowFailed` if the run fails (else return it).
            validate_inputs: Check each input's value against the
                annotations of the parameters that receive it.
            on_event: Called with each `fd.Event` of the run, in order (an
                `fd.EventBus` fits); no events are built without it.
            cancel: A `fd.CancelToken` that cancels the run. Ctrl-C does too:
                the run is cancelled, then `KeyboardInterrupt` propagates
                with the result on its `result` attribute.
            middleware: Wrappers around every node call, outermost first: a
                `def (call, info)` wraps sync calls, an `async def` async
                ones, an `fd.Middleware` both.
            progress: Draw a bar per batch on stderr (rich's when installed),
                only when stderr is a terminal; `"always"` draws anyway.

        Returns:
            The run's result.

        Raises:
            MissingInputError: A required input is missing (no node ran).
            DefinitionError: An input is unknown, or (with `validate_inputs`)
                does not match its annotation; no node ran.
            FlowFailed: The run failed and `check` is true; the exception's
                `result` has every output that completed.
        """
        driver = self._driver(
            SyncDriver,
            functools.partial(self._prepare, inputs, validate_inputs, store, run_id,
                              commit_every, on_change),
            concurrency, executor, on_event, cancel, middleware, progress,
        )  # fmt: skip
        return self._checked(driver.run(), check)

    async def arun(
        self,
        inputs: Mapping[str, Any] | None = None,
        *,
        concurrency: int | None = None,
        executor: ExecutorSpec = None,
        store: Store | None = None,
        run_id: str | None = None,
        commit_every: CommitEvery = None,
        on_change: OnChange = "raise",
        check: bool = True,
        validate_inputs: bool = False,
        on_event: Listener | None = None,
        cancel: CancelToken | None = None,
        middleware: Sequence[Any] | None = None,
        progress: bool | Literal["always"] = False,
    ) -> RunResult:
        """Run the flow on the running event loop; the same as `run()` otherwise.

        Args:
            inputs: Values for the flow inputs, by name.
            concurrency: At most this many nodes and batch items in flight.
            executor: Where sync nodes run (see `run()`).
            store: Record the run (see `run()`).
            run_id: The run's id; a random one by default.
            commit_every: The commit policy with a `store` (see `run()`).
            on_change: Resuming a changed flow (see `run()`).
            check: Raise `FlowFailed` if the run fails (else return it).
            validate_inputs: Check inputs against annotations (see `run()`).
            on_event: Called with each event (see `run()`).
            cancel: A `fd.CancelToken`; cancelling the task awaiting `arun()`
                cancels the run too, then re-raises `CancelledError`.
            middleware: Wrappers around every node call (see `run()`).
            progress: Progress bars per batch (see `run()`).

        Returns:
            The run's result.

        Raises:
            MissingInputError: A required input is missing (no node ran).
            DefinitionError: An input is unknown or mistyped; no node ran.
            FlowFailed: The run failed and `check` is true.
        """
        driver = self._driver(
            AsyncDriver,
            functools.partial(self._prepare, inputs, validate_inputs, store, run_id,
                              commit_every, on_change),
            concurrency, executor, on_event, cancel, middleware, progress,
        )  # fmt: skip
        return self._checked(await driver.run(), check)

    def resume(
        self,
        state: Mapping[str, Any] | RunResult | str,
        *,
        events: Mapping[str, Any] | None = None,
        store: Store | None = None,
        on_change: OnChange = "raise",
        commit_every: CommitEvery = None,
        concurrency: int | None = None,
        executor: ExecutorSpec = None,
        check: bool = True,
        on_event: Listener | None = None,
        cancel: CancelToken | None = None,
        middleware: Sequence[Any] | None = None,
        progress: bool | Literal["always"] = False,
    ) -> RunResult:
        """Continue a paused, crashed, failed or cancelled run.

        Nodes (and batch items) that completed keep their outputs and do not
        run again; wait nodes whose event is in `events` complete with its
        payload. A stored run is resumed by its id: `resume(run_id,
        store=...)`, from any process. Without a store, the state of a
        paused run may come from another process (`json.loads` of
        `json.dumps(result.state)`), and this may be a new `Flow` object
        built from the same code.

        Args:
            state: A run id (with `store`), or `result.state` of a paused
                run (or the result itself).
            events: Event name to payload, for the waits to release.
            store: The store the run is recorded in.
            on_change: If the flow changed since the run was recorded:
                `"raise"` (`fd.DefinitionChanged`, listing each difference)
                or `"rerun_changed"` (run changed nodes, and what depends on
                them, again).
            commit_every: The commit policy (see `run()`).
            concurrency: As for `run()`.
            executor: As for `run()`.
            check: As for `run()`.
            on_event: As for `run()`.
            cancel: As for `run()`.
            middleware: As for `run()`.
            progress: As for `run()`.

        Returns:
            The run's result: `"awaiting"` again if it is still waiting.

        Raises:
            DefinitionError: The state is not a state of this flow, or the
                run id is not in the store.
            DefinitionChanged: The stored run's flow differs from this one.
            RunLocked: Another process is running the run.
            FlowFailed: The run failed and `check` is true.
        """
        driver = self._driver(
            SyncDriver,
            functools.partial(self._reopen, state, events, store, on_change,
                              commit_every),
            concurrency, executor, on_event, cancel, middleware, progress,
        )  # fmt: skip
        return self._checked(driver.run(), check)

    async def aresume(
        self,
        state: Mapping[str, Any] | RunResult | str,
        *,
        events: Mapping[str, Any] | None = None,
        store: Store | None = None,
        on_change: OnChange = "raise",
        commit_every: CommitEvery = None,
        concurrency: int | None = None,
        executor: ExecutorSpec = None,
        check: bool = True,
        on_event: Listener | None = None,
        cancel: CancelToken | None = None,
        middleware: Sequence[Any] | None = None,
        progress: bool | Literal["always"] = False,
    ) -> RunResult:
        """Continue a paused run on the running event loop (see `resume`).

        Args:
            state: A run id (with `store`), or `result.state` of a paused
                run (or the result itself).
            events: Event name to payload, for the waits to release.
            store: The store the run is recorded in.
            on_change: If the flow changed (see `resume`).
            commit_every: The commit policy (see `run()`).
            concurrency: As for `run()`.
            executor: As for `run()`.
            check: As for `run()`.
            on_event: As for `run()`.
            cancel: As for `run()`.
            middleware: As for `run()`.
            progress: As for `run()`.

        Returns:
            The run's result.

        Raises:
            DefinitionError: The state is not a state of this flow.
            DefinitionChanged: The stored run's flow differs from this one.
            RunLocked: Another process is running the run.
            FlowFailed: The run failed and `check` is true.
        """
        driver = self._driver(
            AsyncDriver,
            functools.partial(self._reopen, state, events, store, on_change,
                              commit_every),
            concurrency, executor, on_event, cancel, middleware, progress,
        )  # fmt: skip
        return self._checked(await driver.run(), check)

    async def _arun_child(
        self, inputs: Mapping[str, Any], parent: Durable, run_id: str
    ) -> RunResult:
        """Run this flow as a subflow's child of a durable run, in its store.

        The child's lease belongs to its parent run, whichever process holds
        that; its definition was checked with the parent's. Its run id ends
        with a hash of its inputs: if a resumed parent (with
        `on_change="rerun_changed"`) gives a child other inputs, that is
        another child run.
        """
        given = self._check_inputs(inputs, False)
        encoded = parent.store.serializer.dumps(dict(given), node_id=run_id)
        run_id = f"{run_id}@{digest(encoded)[:12]}"
        durable, inputs, state = open_run(
            self, parent.store, run_id, given,
            commit_every=parent.commit_every, on_change="rerun_changed",
            owner=f"child of {parent.run_id}",
        )  # fmt: skip
        durable.renew = False
        resume: Any = None if state is None else (state, {})
        opened = (inputs, run_id, resume, durable)
        driver = self._driver(
            AsyncDriver, lambda: opened, None, None, None, None, None, False
        )
        return await driver.run()

    def _identity(self) -> tuple[str, dict[str, dict[str, Any]]]:
        """The blueprint hash and per-node definitions a store records
        (computed once: code hashes read each node's source)."""
        if self._identity_cache is None:
            self._identity_cache = (
                blueprint_hash(self._blueprint),
                definition(self._plan),
            )
        return self._identity_cache

    def _prepare(
        self,
        inputs: Mapping[str, Any] | None,
        validate: bool,
        store: Any,
        run_id: Any,
        commit_every: Any,
        on_change: Any,
    ) -> tuple[Mapping[str, Any], Any, Any, Durable | None]:
        """Check a new run's inputs; with a store, open (or reopen) the run.

        Returns:
            The arguments `_driver` takes after the face: inputs, run id,
            what to resume from, and the durable link.
        """
        _check_run_id(run_id)
        if store is None:
            if commit_every is not None:
                raise DefinitionError(
                    f"flow {self._id!r}: commit_every= needs a store=; pass "
                    "store=fd.SqliteStore(path) or leave it out."
                )
            return self._check_inputs(inputs, validate), run_id, None, None
        durable, inputs, state = open_run(
            self, store, run_id, inputs,
            check_inputs=lambda given: self._check_inputs(given, validate),
            commit_every=commit_every, on_change=on_change,
        )  # fmt: skip
        resume: Any = None if state is None else (state, {})
        return inputs, durable.run_id, resume, durable

    def _reopen(
        self,
        state: Mapping[str, Any] | RunResult | str,
        events: Mapping[str, Any] | None,
        store: Any,
        on_change: Any,
        commit_every: Any,
    ) -> tuple[Mapping[str, Any], Any, Any, Durable | None]:
        """What `resume` runs from: a stored run, or a paused run's state."""
        if store is None:
            if isinstance(state, str):
                raise DefinitionError(
                    f"flow {self._id!r}: resume({state!r}) needs the store the run "
                    "is recorded in: resume(run_id, store=fd.SqliteStore(path))."
                )
            return {}, None, self._check_state(state, events), None
        if isinstance(state, RunResult):
            state = state.run_id
        elif isinstance(state, Mapping):
            state = str(state.get("run_id"))
        _check_run_id(state)
        self._check_events(events)  # before the lease is taken
        durable, _, stored = open_run(
            self, store, state, None, commit_every=commit_every,
            on_change=on_change, must_exist=True,
        )  # fmt: skip
        assert stored is not None
        checked = (stored, dict(events or {}))  # built from the store: sound
        return {}, durable.run_id, checked, durable

    def _driver(
        self,
        face: type[D],
        open_run: Callable[[], tuple[Mapping[str, Any], Any, Any, Durable | None]],
        concurrency: Any,
        executor: Any,
        on_event: Any,
        cancel: Any,
        middleware: Any,
        progress: Any,
    ) -> D:
        """Check the options every face shares, then open the run (taking
        its lease, with a store) and set up a driver.

        Args:
            face: The driver class.
            open_run: Checks the inputs and opens the run; returns the
                inputs, run id, state to resume from and durable link.
            concurrency: The other options of `run()`, checked here.
            executor: See `run()`.
            on_event: See `run()`.
            cancel: See `run()`.
            middleware: See `run()`.
            progress: See `run()`.
        """
        if on_event is not None and not callable(on_event):
            raise DefinitionError(
                f"on_event must be a callable taking an fd.Event (or an "
                f"fd.EventBus), got {on_event!r}."
            )
        if cancel is not None and not isinstance(cancel, CancelToken):
            raise DefinitionError(f"cancel must be an fd.CancelToken, got {cancel!r}.")
        choice = resolve_executor(executor)
        if choice.kind == "processes":
            _check_picklable(self._plan)
        concurrency = _check_concurrency(concurrency)
        split_middleware(middleware)  # its errors, before any lease is taken
        inputs, run_id, resume, durable = open_run()
        try:
            return face(
                self._plan,
                inputs,
                run_id=run_id,
                concurrency=concurrency,
                executor=choice,
                resume=resume,
                on_event=on_event,
                cancel=cancel,
                middleware=middleware,
                progress=progress,
                durable=durable,
            )
        except BaseException:
            if durable is not None:
                durable.store.release(durable.run_id, durable.owner)
            raise

    def _check_state(
        self, state: Mapping[str, Any] | RunResult, events: Mapping[str, Any] | None
    ) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
        """Check a paused run's state and the events for it, all at once."""
        if isinstance(state, RunResult):
            state = state.state
        where = f"flow {self._id!r}: resume()"
        if not isinstance(state, Mapping):
            raise DefinitionError(
                f"{where} needs the state of a paused run (result.state), got "
                f"{type(state).__name__}."
            )
        problems = _state_problems(state, self._plan)
        if problems:
            raise DefinitionError(
                f"{where} got a state it cannot use: {'; '.join(problems)}."
            )
        self._check_events(events)
        return state, dict(events or {})

    def _check_events(self, events: Mapping[str, Any] | None) -> None:
        """Every event given to resume must be one a wait node waits for."""
        where = f"flow {self._id!r}: resume()"
        if events is not None and not isinstance(events, Mapping):
            raise DefinitionError(f"{where}: events must map event names to payloads.")
        known = {
            n.pause[1]
            for n in self._plan.nodes.values()
            if n.pause and n.pause[0] == "wait"
        }
        for name in events or {}:
            if name not in known:
                close = close_match(str(name), known)
                hint = f" Did you mean {close!r}?" if close else ""
                listed = ", ".join(map(repr, sorted(known))) or "none"
                raise DefinitionError(
                    f"{where}: no wait_for node waits for event {name!r}; the "
                    f"flow's events are {listed}.{hint}"
                )

    def to_mermaid(self) -> str:
        """The flow as a Mermaid flowchart (batches as scatter, workers, gather)."""
        from .viz import to_mermaid

        return to_mermaid(self._blueprint)

    def to_dot(self) -> str:
        """The flow as a Graphviz DOT digraph."""
        from .viz import to_dot

        return to_dot(self._blueprint)

    def __repr__(self) -> str:
        return f"<Flow {self._id!r}: {len(self._plan.nodes)} nodes>"

    def _check_inputs(
        self, inputs: Mapping[str, Any] | None, validate: bool
    ) -> Mapping[str, Any]:
        plan = self._plan
        if inputs is not None and not isinstance(inputs, Mapping):
            raise DefinitionError(
                f"flow {plan.flow_id!r}: inputs must be a mapping of input names "
                f"to values, got {type(inputs).__name__}; e.g. run({{'name': 1}})."
            )
        given = dict(inputs or {})
        known = set(plan.required_inputs) | set(plan.optional_inputs)
        unknown = sorted(set(given) - known)
        if unknown and not plan.open_inputs:
            hints = []
            for name in unknown:
                close = close_match(name, known)
                if close:
                    hints.append(f"{name!r} (did you mean {close!r}?)")
                elif name in plan.producer_of:
                    hints.append(f"{name!r} (a node's output, not an input)")
                else:
                    hints.append(repr(name))
            expected = ", ".join(map(repr, sorted(known))) or "none"
            raise DefinitionError(
                f"flow {plan.flow_id!r} got unknown input(s) {', '.join(hints)}; "
                f"its inputs are: {expected}."
            )
        missing = {
            name: consumers
            for name, consumers in plan.required_inputs.items()
            if name not in given
        }
        if missing:
            raise MissingInputError(plan.flow_id, missing)
        if validate:
            _check_input_types(plan, given)
        return given

    @staticmethod
    def _checked(result: RunResult, check: bool) -> RunResult:
        if check and result.status == "cancelled":
            done = ", ".join(sorted(result.outputs)) or "none"
            raise FlowCancelled(
                f"flow {result.flow_id!r} run {result.run_id!r} was cancelled. "
                f"Completed outputs: {done}; they are on this exception's .result.",
                result,
            )
        if check and result.status == "failed":
            first = result.errors[0] if result.errors else None
            summary = "; ".join(e.describe() for e in result.errors[:3])
            more = len(result.errors) - 3
            if more > 0:
                summary += f"; and {more} more"
            done = ", ".join(sorted(result.outputs)) or "none"
            raise FlowFailed(
                f"flow {result.flow_id!r} run {result.run_id!r} failed: {summary}. "
                f"Completed outputs: {done}. The result is on this exception's "
                ".result; pass check=False to get it returned instead.",
                result,
            ) from (first.exception if first else None)
        return result


def _check_run_id(run_id: Any) -> None:
    if run_id is not None and (not isinstance(run_id, str) or not run_id):
        raise DefinitionError(f"run_id must be a non-empty string, got {run_id!r}.")


def _state_problems(state: Mapping[str, Any], plan: Plan) -> list[str]:
    """Everything wrong with a snapshot, for this flow's plan."""
    problems: list[str] = []
    if state.get("version") != 1:
        problems.append(f"its version is {state.get('version')!r}, not 1")
    if state.get("flow") != plan.flow_id:
        problems.append(
            f"it is a state of flow {state.get('flow')!r}; resume it with that flow"
        )
    if not isinstance(state.get("run_id"), str):
        problems.append("'run_id' must be a string")
    for field in ("inputs", "outputs", "status", "actions", "wakes", "context"):
        if not isinstance(state.get(field, {}), Mapping):
            problems.append(f"{field!r} must be a mapping")
    for field in ("inputs", "outputs", "status"):
        if field not in state:
            problems.append(f"{field!r} is missing")
    if problems:
        return problems
    for node_id, status in state["status"].items():
        if node_id not in plan.nodes:
            problems.append(
                f"it names node {node_id!r}, which this flow does not have (the "
                "flow changed since the run paused)"
            )
        elif status not in ("completed", "skipped"):
            problems.append(f"node {node_id!r} has status {status!r}")
        elif status == "completed" and plan.nodes[node_id].key not in state["outputs"]:
            problems.append(f"the output of completed node {node_id!r} is missing")
    for node_id, wake in state.get("wakes", {}).items():
        if isinstance(wake, bool) or not isinstance(wake, (int, float)):
            problems.append(f"the wake time of {node_id!r} is not a number")
    return problems


def _check_picklable(plan: Plan) -> None:
    """Sync nodes sent to a process must not need a `Context` (it holds a lock)."""
    for n in plan.nodes.values():
        if n.context_params and not n.is_async:
            what = (
                "is a class node, which keeps its state in this process"
                if n.context_params == ("flowdsl_context",)
                else f"takes an fd.Context in parameter {n.context_params[0]!r}"
            )
            raise DefinitionError(
                f"node {n.id!r} {what} and cannot run in another process; use "
                "executor='threads' for this flow."
            )


def _check_input_types(plan: Plan, given: Mapping[str, Any]) -> None:
    problems = []
    for name, value in given.items():
        for node_id, annotation in plan.input_types.get(name, ()):
            if value_matches(value, annotation) is False:
                problems.append(
                    f"input {name!r} is {value!r} ({type(value).__name__}), but "
                    f"parameter {name!r} of node {node_id!r} expects "
                    f"{describe(annotation)}"
                )
    if problems:
        raise DefinitionError(
            f"flow {plan.flow_id!r} got mistyped input(s): {'; '.join(problems)}. "
            "Pass values of the annotated types."
        )


def _check_concurrency(value: int | None) -> int | None:
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, int) or value < 1
    ):
        raise DefinitionError(
            f"concurrency must be a positive integer or None, got {value!r}."
        )
    return value


def _uses(n: BaseNode) -> str:
    if isinstance(n, LoopNode):
        return "loop-controller"
    if isinstance(n, SubflowNode):
        return "subflow"
    return n.reference


def _condition_data(condition: Any) -> dict[str, str]:
    source = getattr(condition, "source", None)
    if source is not None:
        return {"while": source}
    return {"whileUses": f"{condition.__module__}:{condition.__qualname__}"}


def _composite_params(n: BaseNode) -> dict[str, Any]:
    """Params of a node holding a child flow: the child's whole blueprint."""
    child = getattr(n, "child", None)
    if child is None:
        return {}
    params: dict[str, Any] = {
        "blueprintId": child.id,
        "blueprint": child.blueprint.to_dict(),
    }
    output = getattr(n, "output", None) if isinstance(n, SubflowNode) else None
    output = output or getattr(n, "child_output", None)
    if output is not None:
        params["output"] = output
    if isinstance(n, LoopNode):
        params["carry"] = dict(n.spec.carry)
        params["maxIterations"] = n.spec.max_iterations
        params.update(_condition_data(n.spec.condition))
    return params


def _make_blueprint(plan: Plan, bindings: Mapping[str, list[Binding]]) -> Blueprint:
    def entry(node_id: str) -> str:
        return f"{node_id}_scatter" if plan.nodes[node_id].is_batch else node_id

    def exit_(node_id: str) -> str:
        return f"{node_id}_gather" if plan.nodes[node_id].is_batch else node_id

    specs: list[NodeSpec] = []
    edges: list[EdgeSpec] = []
    for node_id, pn in plan.nodes.items():
        n = pn.node
        wiring = {b.param: b.key for b in bindings[node_id] if b.kind != "context"}
        for dep in pn.deps:
            edges.append(EdgeSpec(exit_(dep), entry(node_id)))
        if isinstance(n, _BatchBase):
            gather = f"{node_id}_gather"
            params: dict[str, Any] = {
                **_composite_params(n),
                "workerUsesKey": n.reference,
                "inputKey": pn.batch_input,
                "outputKey": n.key,
                "gatherNodeId": gather,
                "chunkSize": n.chunk_size,
                "onError": n.on_error,
            }
            if n.concurrency is not None:
                params["concurrency"] = n.concurrency
            if wiring:
                params["workerInputs"] = wiring
            specs.append(
                NodeSpec(
                    id=f"{node_id}_scatter",
                    uses="batch-scatter",
                    params=params,
                    inputs=pn.batch_input,
                    config=node_options(n),
                )
            )
            specs.append(
                NodeSpec(
                    id=gather,
                    uses="batch-gather",
                    params={"outputKey": n.key, "gatherNodeId": gather},
                )
            )
            edges.append(EdgeSpec(f"{node_id}_scatter", gather))
        else:
            specs.append(
                NodeSpec(
                    id=node_id,
                    uses=_uses(n),
                    params=_composite_params(n),
                    inputs=wiring,
                    config=node_options(n),
                )
            )
    metadata = {
        "schema": SCHEMA_VERSION,
        "inputs": {
            "required": sorted(plan.required_inputs),
            "optional": sorted(plan.optional_inputs),
        },
    }
    return Blueprint(id=plan.flow_id, nodes=specs, edges=edges, metadata=metadata)


def resume(
    run_id: str,
    *,
    store: Store,
    events: Mapping[str, Any] | None = None,
    **options: Any,
) -> RunResult:
    """Resume a stored run in any process, importing its flow by reference.

    The run's record names the module and attribute its flow was found at
    when it started (`"module:attribute"`); that module is imported and the
    run resumed with `flow.resume(run_id, store=store, events=events,
    **options)`.

    Args:
        run_id: The run to resume.
        store: The store it is recorded in.
        events: Event name to payload, for waits to release.
        **options: Any other option of `Flow.resume` (`concurrency`,
            `executor`, `check`, `on_change`, ...).

    Returns:
        The run's result.

    Raises:
        DefinitionError: The run is not in the store, or its flow cannot be
            imported (it was built in `__main__` or inside a function: call
            `flow.resume` on the flow object instead).
    """
    _check_run_id(run_id)
    load = getattr(store, "load", None)
    details = load(run_id) if callable(load) else None
    if details is None:
        raise DefinitionError(f"there is no run {run_id!r} in {store!r} to resume.")
    ref = details.record.flow_ref
    if not ref:
        raise DefinitionError(
            f"run {run_id!r} of flow {details.record.flow_id!r} has no importable "
            "flow reference: its flow was not a module-level name of an "
            "importable module when it ran (a script run as `python file.py` "
            "is __main__, which another process cannot import: run it as "
            "`python -m module`, or import the flow from a module). Call "
            "flow.resume(run_id, store=...) on the Flow object instead."
        )
    flow = _resolve(ref, f"run {run_id!r}")
    return flow.resume(run_id, store=store, events=events, **options)
