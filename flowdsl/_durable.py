"""Durable runs: opening a run in a store, and reading one back to resume it.

`open_run` is what `flow.run(store=...)` and `flow.resume(run_id, store=...)`
call before any node runs. It creates the run (or reopens a stored one),
takes its lease, compares the stored definition with the flow's, and turns
the stored outcomes into the state the scheduler resumes from. Everything
that can be wrong (a locked run, a changed flow, bad options) is raised
here, before the run starts.

It also holds the crash points the durability tests use: with
`FLOWDSL_CRASH=point:n` in the environment, the process kills itself
(SIGKILL, like a power cut) the n-th time it passes `point`.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import signal
import sys
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any, Callable, Literal, Mapping

import attrs

from ._definition import differences, downstream
from ._journal import CommitEvery, check_commit_every
from ._middleware import Middleware
from ._plan import Plan, PlanNode
from ._result import ItemError, RunError
from .exceptions import DefinitionChanged, DefinitionError, RecordedError
from .store._base import RunDetails, RunRecord, Store
from .store._serialize import SerializationError, Serializer

if TYPE_CHECKING:
    from ._flow import Flow

__all__ = [
    "CRASH_POINTS",
    "CURRENT",
    "CrashAtBodyStart",
    "Durable",
    "OnChange",
    "crash_point",
    "crash_planned",
    "flow_reference",
    "open_run",
    "restore_state",
]

OnChange = Literal["raise", "rerun_changed"]

#: Where `FLOWDSL_CRASH` can stop the process.
CRASH_POINTS = (
    "body_start",
    "pre_commit",
    "post_commit",
    "batch_flush",
    "backoff_sleep",
    "subflow_enter",
)


def _crash_plan() -> tuple[str, int] | None:
    spec = os.environ.get("FLOWDSL_CRASH")
    if not spec:
        return None
    point, _, count = spec.partition(":")
    if point not in CRASH_POINTS or not count.isdigit() or int(count) < 1:
        logging.getLogger("flowdsl").warning(
            "FLOWDSL_CRASH=%r ignored: expected point:n with point one of %s "
            "and n >= 1.",
            spec,
            ", ".join(CRASH_POINTS),
        )
        return None
    return point, int(count)


_CRASH = _crash_plan()
_crash_lock = threading.Lock()
_crash_passes = 0


def crash_planned(point: str | None = None) -> bool:
    """Whether `FLOWDSL_CRASH` names a point (this one, if given)."""
    return _CRASH is not None and (point is None or _CRASH[0] == point)


def crash_point(point: str) -> None:
    """SIGKILL this process on the n-th pass through `point`, if so planned."""
    global _crash_passes
    if _CRASH is None or _CRASH[0] != point:
        return
    with _crash_lock:
        _crash_passes += 1
        if _crash_passes >= _CRASH[1]:
            sys.stdout.flush()
            sys.stderr.flush()
            os.kill(os.getpid(), signal.SIGKILL)


@attrs.define
class Durable:
    """A run's link to its store, for the faces and for child runs.

    Attributes:
        store: Where the run is recorded.
        run_id: The run.
        owner: Who holds the lease.
        rows: `commit_every` rows, or None.
        seconds: `commit_every` seconds, or None.
        first_seq: The seq of the run's first new event.
        commit_every: As given, for child runs.
        renew: Whether to renew the lease while running (a child run's lease
            is its parent's to keep).
        codes: Each node's code hash, for cache keys.
    """

    store: Store
    run_id: str
    owner: str
    rows: int | None = None
    seconds: float | None = None
    first_seq: int = 1
    commit_every: CommitEvery = None
    renew: bool = True
    codes: Mapping[str, str] = attrs.Factory(dict)

    def child_id(self, node_id: str, index: int | None) -> str:
        """The run id of a subflow's child run (stable across resumes)."""
        where = node_id if index is None else f"{node_id}[{index}]"
        return f"{self.run_id}/{where}"


#: The durable run a subflow's child belongs to (set by the faces).
CURRENT: contextvars.ContextVar[Durable | None] = contextvars.ContextVar(
    "flowdsl_durable", default=None
)


def flow_reference(flow: Flow) -> str | None:
    """`"module:attribute"` where `flow` can be imported, if it can."""
    module_name = getattr(flow, "_module", None)
    module = sys.modules.get(module_name or "")
    if module is None:
        return None
    for name, value in vars(module).items():
        if value is flow:
            if module_name == "__main__":
                spec = getattr(module, "__spec__", None)
                if spec is None or not spec.name:
                    return None
                module_name = spec.name
            return f"{module_name}:{name}"
    return None


def _check_store(store: Any, where: str) -> Store:
    if not isinstance(store, Store):
        raise DefinitionError(
            f"{where}: store must be an fd.SqliteStore, an fd.MemoryStore or "
            f"another flowdsl Store, got {store!r}."
        )
    return store


def open_run(
    flow: Flow,
    store: Any,
    run_id: str | None,
    inputs: Mapping[str, Any] | None,
    *,
    check_inputs: Callable[[Mapping[str, Any] | None], Mapping[str, Any]] | None = None,
    commit_every: CommitEvery = None,
    on_change: Any = "raise",
    must_exist: bool = False,
    owner: str | None = None,
) -> tuple[Durable, Mapping[str, Any], Mapping[str, Any] | None]:
    """Create or reopen a run in `store` and take its lease.

    Args:
        flow: The flow to run.
        store: The store.
        run_id: The run's id (a new one if None).
        inputs: The flow inputs as given; may be left out for a stored run.
        check_inputs: Checks them (and says which are missing); called for
            a new run, or when inputs are given for a stored one.
        commit_every: The commit policy.
        on_change: What a changed definition does on resume.
        must_exist: Resuming: the run must already be in the store.
        owner: The lease owner (a new one per call if None).

    Returns:
        The durable link, the run's inputs, and the state to resume from
        (None for a new run).

    Raises:
        DefinitionError: Bad options, an unknown run id, or inputs that
            differ from the stored run's.
        DefinitionChanged: The stored run's flow differs from `flow`.
        RunLocked: Another process holds the run's lease.
    """
    where = f"flow {flow.id!r}"
    checked = _check_store(store, where)
    rows, seconds = check_commit_every(commit_every)
    if on_change not in ("raise", "rerun_changed"):
        raise DefinitionError(
            f"{where}: on_change must be 'raise' or 'rerun_changed', got {on_change!r}."
        )
    plan = flow._plan
    run_id = run_id if run_id is not None else uuid.uuid4().hex
    owner = owner if owner is not None else f"{os.getpid()}:{uuid.uuid4().hex}"
    bp_hash, current = flow._identity()
    serializer = checked.serializer
    stored = checked.load(run_id)
    if stored is None and must_exist:
        raise DefinitionError(
            f"{where}: there is no run {run_id!r} in {checked!r} to resume."
        )
    if check_inputs is not None and (stored is None or inputs):
        inputs = check_inputs(inputs)
    forget: set[str] = set()
    if stored is not None:
        record = stored.record
        if record.flow_id != flow.id:
            raise DefinitionError(
                f"{where}: run {run_id!r} is a run of flow {record.flow_id!r}; "
                f"resume it with that flow."
            )
        changed = differences(record.definition, current)
        if changed and on_change == "raise":
            raise DefinitionChanged(run_id, [changed[k] for k in sorted(changed)])
        if changed:
            kept = {k for k in changed if k in plan.nodes}
            forget = downstream(plan, kept) | (set(changed) - kept)
        if inputs:
            stored_inputs = serializer.loads(record.inputs)
            if dict(inputs) != stored_inputs:
                names = sorted(
                    name
                    for name in {*inputs, *stored_inputs}
                    if inputs.get(name) != stored_inputs.get(name)
                )
                raise DefinitionError(
                    f"{where}: run {run_id!r} was started with other values for "
                    f"{', '.join(map(repr, names))}; resume it without inputs, "
                    "or start a new run."
                )
    try:
        encoded_inputs = serializer.dumps(dict(inputs or {}), node_id="<inputs>")
    except SerializationError as exc:
        at = exc.path.replace("value", "inputs", 1)
        raise DefinitionError(
            f"{where}: {at} is a {exc.type_name or 'value'}, which the store's "
            "serializer cannot store; pass plain data, or register the type "
            "with the serializer (JsonSerializer(types=[...]))."
        ) from None
    fresh = RunRecord(
        run_id=run_id,
        flow_id=flow.id,
        flow_ref=flow_reference(flow),
        status="running",
        started=time.time(),
        finished=None,
        blueprint_hash=bp_hash,
        definition=current,
        inputs=encoded_inputs,
    )
    checked.begin(fresh, owner, time.time())
    codes = {node_id: entry["code"] for node_id, entry in current.items()}
    durable = Durable(
        checked, run_id, owner, rows, seconds, commit_every=commit_every, codes=codes
    )
    if stored is None:
        return durable, dict(inputs or {}), None
    try:
        if forget:
            checked.delete_outcomes(run_id, sorted(forget))
        details = checked.load(run_id)  # what was committed up to the lease
        assert details is not None
        events = checked.events(run_id)
        durable.first_seq = events[-1].seq + 1 if events else 1
        state = restore_state(plan, details, serializer)
    except BaseException:  # such as stored bytes this serializer cannot load
        _put_back(checked, stored.record, owner)
        raise
    return durable, state["inputs"], state


def _put_back(store: Store, record: RunRecord, owner: str) -> None:
    """Undo `begin` after a failed reopen: the old status, and no lease."""
    with contextlib.suppress(Exception):
        if record.status == "running":
            store.release(record.run_id, owner)
        else:
            store.commit(record.run_id, owner, time.time(), status=record.status)


def restore_state(
    plan: Plan, details: RunDetails, serializer: Serializer
) -> dict[str, Any]:
    """A stored run as the state `Scheduler.resume_from` takes."""
    record = details.record
    extra = serializer.loads(record.state) if record.state else {}
    status: dict[str, str] = {}
    outputs: dict[str, Any] = {}
    actions: dict[str, str] = {}  # from outcomes: forgotten nodes' go with them
    attempts: dict[str, int] = {}
    items: dict[str, dict[int, tuple[Any, ...]]] = {}
    item_attempts: dict[str, dict[int, int]] = {}
    rescued: list[RunError] = []
    for o in details.outcomes:
        if o.status == "completed" and o.error_type is not None:
            error = RecordedError(o.error_type, o.error or "")
            rescued.append(RunError(o.node_id, o.item_index, o.attempts, error))
    for o in details.outcomes:
        n = plan.nodes.get(o.node_id)
        if n is None:
            continue
        if o.item_index is None:
            if o.status == "completed":
                status[n.id] = "completed"
                if o.action is not None:
                    actions[n.id] = o.action
                if o.value is not None:  # a batch's is in its items, unless cached
                    outputs[n.key] = serializer.loads(o.value)
            elif o.status == "skipped":
                status[n.id] = "skipped"
            else:
                attempts[n.id] = o.attempts
        elif o.status == "completed" and o.value is not None:
            value = serializer.loads(o.value)
            items.setdefault(n.id, {})[o.item_index] = ("ok", value)
        elif o.status == "failed" and n.on_error != "raise":
            error = RecordedError(o.error_type or "Exception", o.error or "")
            items.setdefault(n.id, {})[o.item_index] = ("error", error, o.attempts)
        else:
            item_attempts.setdefault(n.id, {})[o.item_index] = o.attempts
    errors: list[RunError] = []
    for node_id, s in status.items():
        n = plan.nodes[node_id]
        if s == "completed" and n.is_batch:
            known = items.pop(node_id, {})
            outputs.setdefault(n.key, _gathered(n, known))
            item_attempts.pop(node_id, None)
            if n.on_error == "skip":  # its dropped items stay reported
                errors.extend(
                    RunError(node_id, index, entry[2], entry[1])
                    for index, entry in sorted(known.items())
                    if entry[0] == "error"
                )
    return {
        "version": 1,
        "flow": plan.flow_id,
        "run_id": record.run_id,
        "inputs": serializer.loads(record.inputs),
        "outputs": outputs,
        "status": status,
        "actions": actions,
        "wakes": dict(extra.get("wakes", {})),
        "context": dict(extra.get("context", {})),
        "items": items,
        "item_attempts": item_attempts,
        "attempts": attempts,
        "rescued": rescued,
        "errors": errors,
    }


def _gathered(n: PlanNode, known: Mapping[int, tuple[Any, ...]]) -> list[Any]:
    """A completed batch's output, from its recorded items."""
    out = []
    for index in sorted(known):
        entry = known[index]
        if entry[0] == "ok":
            out.append(entry[1])
        elif n.on_error == "collect":
            out.append(ItemError(index, entry[1], entry[2]))
    return out


class CrashAtBodyStart(Middleware):
    """Middleware for the `body_start` crash point (only when it is planned)."""

    def wrap(self, call: Any, info: Any) -> Any:
        crash_point("body_start")
        return call()

    async def awrap(self, call: Any, info: Any) -> Any:
        crash_point("body_start")
        return await call()
