"""The scheduler core: every decision about what runs when, and nothing else.

The core is sans-I/O, in the manner of h11's state machine: the faces feed it
events (a node finished, an item failed) as method calls, and it answers with
commands (run this node, run these items). It never reads a clock (the faces
pass `now`) and never touches threads, tasks or executors, so it can be
tested by feeding events and reading commands. The only user code it calls
is what decides scheduling itself: callable conditions, and pulling items
from a batch's input.

It owns readiness, the run-wide and per-batch concurrency limits, batch
expansion (a batch is one unit with counters; items are pulled lazily from its
input), the batch error policy, the fail-fast rule, and result assembly.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Mapping as AbcMapping
from itertools import islice
from types import MappingProxyType
from typing import Any, Callable, Iterator, Mapping, NamedTuple, Sequence, Union

import attrs

from ._journal import Journal, error_fields
from ._plan import Plan, PlanNode
from ._result import Action, ChildRun, ItemError, NodeStatus, RunError, RunResult
from .exceptions import (
    BatchInputError,
    FlowdslError,
    FlowFailed,
    LoopLimitExceeded,
    NodeTimeout,
)
from .store._base import CacheEntry, Outcome
from .store._serialize import SerializationError

__all__ = [
    "DEFAULT_ASYNC_SLOTS",
    "GRACE_PERIOD",
    "CancelTasks",
    "Command",
    "Failure",
    "RunFallback",
    "RunItems",
    "RunNode",
    "Scheduler",
]

#: Async units in flight when the run sets no `concurrency`: enough that
#: I/O-bound batches are not held back, bounded so that a huge batch never
#: turns into millions of tasks at once.
DEFAULT_ASYNC_SLOTS = 10_000

#: Seconds a cancelled run gives sync work already running to return; after
#: that it is abandoned (a process worker is stopped, a thread left to end).
GRACE_PERIOD = 5.0

#: Items per call when sync items run on the scheduler's thread anyway
#: (`executor="inline"`): the same work, with far fewer trips through the core.
INLINE_CHUNK = 64


class RunNode(NamedTuple):
    """Command: call `node` with `kwargs` (inline: on the scheduler's thread)."""

    node: PlanNode
    kwargs: dict[str, Any]
    inline: bool
    attempt: int = 1
    token: int = 0


class RunItems(NamedTuple):
    """Command: call the batch worker on `items`, indexed from `start`.

    With `stop_on_error`, the worker stops at the first failing item.
    """

    node: PlanNode
    start: int
    items: list[Any]
    kwargs: dict[str, Any]
    inline: bool
    attempt: int = 1
    token: int = 0
    stop_on_error: bool = False


class RunFallback(NamedTuple):
    """Command: call the node's fallback with the final `exception`."""

    node: PlanNode
    exception: BaseException
    item_index: int | None
    attempts: int
    inline: bool
    token: int = 0


class CancelTasks(NamedTuple):
    """Command: stop the commands with these tokens, where possible.

    Async commands are cancelled; a sync command is stopped only when its
    executor can stop one call (flowdsl's process pool can, threads cannot).
    """

    tokens: tuple[int, ...]


#: Commands that run user code.
Work = Union[RunNode, RunItems, RunFallback]
Command = Union[RunNode, RunItems, RunFallback, CancelTasks]

_PENDING: Any = object()  # a slot whose item has not finished
_SKIPPED: Any = object()  # a slot left out of the gathered list
MISS: Any = object()  # a cache lookup found nothing

#: Looks a node's output up in the cache: `(node, kwargs)` -> `(key, value)`,
#: with value `MISS` when there is none and key None when it cannot be cached.
CacheLookup = Callable[[PlanNode, Mapping[str, Any]], "tuple[str | None, Any]"]


class LoopCarryError(FlowdslError):
    """A loop's carried value came from a node skipped in that iteration."""


class Failure:
    """The outcome of a batch item that raised (the faces wrap exceptions)."""

    __slots__ = ("exception",)

    def __init__(self, exception: BaseException) -> None:
        self.exception = exception


def runs_async(command: Work) -> bool:
    """Whether the faces run this command as a task on the event loop."""
    if isinstance(command, RunFallback):
        return command.node.fallback_async
    return command.node.is_async


class _BatchRun:
    """The state of one running batch: a cursor over its input and counters."""

    __slots__ = ("done", "exhausted", "failed", "in_flight", "iterator", "known",
                 "known_order", "kwargs", "node", "prior", "prior_order",
                 "results", "retries")  # fmt: skip

    def __init__(
        self,
        node: PlanNode,
        iterator: Iterator[Any],
        kwargs: dict[str, Any],
        known: Mapping[int, tuple[Any, ...]] | None = None,
        prior: Mapping[int, int] | None = None,
    ):
        self.node = node
        self.iterator = iterator
        self.kwargs = kwargs
        self.results: list[Any] = []
        self.in_flight = 0
        self.done = 0
        self.exhausted = False
        self.failed = False
        # (due, index, item, attempt) for items waiting to be retried: a heap
        self.retries: list[tuple[float, int, Any, int]] = []
        # On resume: outcomes recorded by an earlier process, by index, and
        # attempts already made at items that have none.
        self.known = dict(known) if known else None
        self.known_order = deque(sorted(known)) if known else deque()
        self.prior = dict(prior) if prior else None
        self.prior_order = deque(sorted(prior)) if prior else deque()

    @property
    def settled(self) -> bool:
        """Every item pulled, none in flight, none waiting for a retry."""
        return self.exhausted and not self.in_flight and not self.retries


class Scheduler:
    """The state machine of one run.

    Args:
        plan: The compiled flow.
        inputs: Flow inputs given to `run()` (already checked).
        run_id: The run's id.
        concurrency: At most this many nodes and batch items in flight.
        sync_slots: At most this many sync commands in flight at once (the
            capacity of the faces' executor); None for no limit.
        async_slots: At most this many async commands in flight at once.
        inline_sync: Run every sync command on the scheduler's thread.
        inline_alone: Run a sync command on the scheduler's thread when it
            is the only work in flight (the sync face over threads: a hop
            would buy nothing; never on an event loop or a process pool).
        make_context: Builds the `Context` a callable condition receives,
            from a node id (the faces own contexts; the core only passes them).
        emit: Delivers an event `(kind, node_id, item_index, data)`; None
            when nobody listens, and then no event is built.
        batch_events: Whether `batch_progress` events are wanted (a store
            listens to the others only).
        journal: Collects what a durable run records; None without a store.
        cache: Looks cached outputs up, for nodes with `cache=True`.
    """

    def __init__(
        self,
        plan: Plan,
        inputs: Mapping[str, Any],
        *,
        run_id: str,
        concurrency: int | None = None,
        sync_slots: int | None = None,
        async_slots: int | None = DEFAULT_ASYNC_SLOTS,
        inline_sync: bool = False,
        inline_alone: bool = False,
        make_context: Callable[[str], Any] | None = None,
        emit: Callable[..., None] | None = None,
        batch_events: bool = True,
        journal: Journal | None = None,
        cache: CacheLookup | None = None,
    ) -> None:
        self.plan = plan
        self.run_id = run_id
        self._inputs = dict(inputs)
        self._limit = concurrency
        self._sync_slots = 1 if inline_sync else sync_slots
        self._async_slots = async_slots
        self._inline_sync = inline_sync
        self._inline_alone = inline_alone
        self._waiting = {node_id: len(n.deps) for node_id, n in plan.nodes.items()}
        self._status: dict[str, NodeStatus | None] = dict.fromkeys(plan.nodes)
        self._outputs: dict[str, Any] = {}
        self._ready_sync: deque[str] = deque()
        self._ready_async: deque[str] = deque()
        self._ready_batches: deque[str] = deque()
        self._ready_queues = ((self._ready_sync, False), (self._ready_async, True))
        self._batches: dict[str, _BatchRun] = {}
        self._items = 0  # nodes and batch items in flight (the user's limit)
        self._sync_units = 0  # sync commands in flight (the executor's limit)
        self._async_units = 0
        self._errors: list[RunError] = []
        self._halted = False
        self._started: dict[str, float] = {}
        self._timings: dict[str, float] = {}
        self._actions: dict[str, str] = {}
        self._fired: set[str] = set()  # join="any" nodes already decided
        self._undecided: deque[str] = deque()  # resolved predecessors, no verdict
        self._children: dict[str, RunResult] = {}
        self._events: dict[str, Any] = {}  # event payloads given to a resume
        self._awaiting: dict[str, str] = {}  # wait node id -> its event
        self._timers: dict[str, float] = {}  # live sleep id -> due (faces' clock)
        self._wakes: dict[str, float] = {}  # durable sleep id -> Unix wake time
        self._wall_offset = 0.0  # Unix time minus the faces' clock
        self._iterations: dict[str, int] = {}  # loop id -> iteration in flight
        self._next_kwargs: dict[str, dict[str, Any]] = {}  # a loop's next inputs
        self._make_context = make_context or (lambda node_id: None)
        self._emit = emit
        self._progress = emit if batch_events else None  # batch_progress
        self._token = 0
        self._live: dict[int, Work] = {}  # commands whose outcome counts
        self._deadlines: dict[int, float] = {}  # token -> attempt deadline
        self._deadline_heap: list[tuple[float, int]] = []  # (due, token), lazy
        self._attempts: dict[str, int] = {}  # node id -> its next attempt
        self._retry_due: dict[str, float] = {}  # node id -> when to retry
        self._fallbacks: list[RunFallback] = []  # waiting to be sent
        self._rescued: dict[str, RunError] = {}  # node id -> what it recovered from
        self._cancelled = False
        self._abandoned: set[int] = set()  # timed-out sync commands still running
        self._ancestor_cache: dict[str, set[str]] = {}
        self._skips = 0  # nodes skipped so far
        self._begun = False  # start() was called
        self._grace_until: float | None = None  # a cancel's grace period ends
        self.journal = journal
        self._cache = cache
        self._cache_keys: dict[str, str] = {}  # node id -> key to store under
        self._whole: set[str] = set()  # batches completed from the cache
        self._issued: dict[int, float] = {}  # batch command token -> sent at
        self._known: dict[str, dict[int, tuple[Any, ...]]] = {}  # recorded items
        self._prior: dict[str, dict[int, int]] = {}  # recorded item attempts

    # -- events ---------------------------------------------------------------

    def start(self, now: float, wall: float | None = None) -> list[Command]:
        """Begin the run; returns the first commands.

        Args:
            now: The faces' clock (any monotonic clock, in seconds).
            wall: The Unix time at `now`, for durable sleeps.
        """
        self._begun = True
        if wall is not None:
            self._wall_offset = wall - now
        self._undecided.extend(
            i
            for i, waiting in self._waiting.items()
            if not waiting and self._status[i] is None
        )
        return self._pump(now)

    def tick(self, now: float) -> list[Command]:
        """Time passed: due sleeps complete, attempts past their deadline fail.

        Retries that are due start in the pump that follows.
        """
        cancel: list[int] = []
        if self._grace_until is not None and now >= self._grace_until:
            self._grace_until = None
            for token, command in list(self._live.items()):
                if not runs_async(command):  # still running after the grace
                    del self._live[token]
                    self._abandoned.add(token)
                    self._items -= (
                        len(command.items) if isinstance(command, RunItems) else 1
                    )
                    cancel.append(token)
        heap = self._deadline_heap
        while heap and heap[0][0] <= now:
            due, token = heapq.heappop(heap)
            if self._deadlines.get(token) == due:  # else it ended in time
                del self._deadlines[token]
                command = self._live.pop(token)
                cancel.append(token)  # the faces stop it if they can
                if not runs_async(command):
                    # A thread cannot be stopped: whatever it returns later is
                    # ignored. Its executor slot stays taken until it does, so
                    # nothing queues behind it, but the run need not wait.
                    self._abandoned.add(token)
                self._timed_out(command, now)
        for node_id, due in list(self._timers.items()):
            if due <= now:
                del self._timers[node_id]
                self._complete(node_id, None, now)
        commands = self._pump(now)
        if cancel:
            commands.insert(0, CancelTasks(tuple(cancel)))
        return commands

    def cancel(self, now: float) -> list[Command]:
        """Stop the run: nothing new starts, no retry or fallback runs.

        Returns:
            A command cancelling every async command in flight; sync ones
            finish (they see `ctx.cancelled`), and what they return is kept.
        """
        if self._cancelled or (self._begun and self.finished):
            return []
        self._cancelled = self._halted = True
        if self.journal is not None:
            self.journal.stop()
        self._drop_retries()
        self._fallbacks.clear()
        self._timers.clear()
        self._deadlines.clear()  # what still runs is cancelled, not timed out
        self._deadline_heap.clear()
        if any(not runs_async(c) for c in self._live.values()):
            self._grace_until = now + GRACE_PERIOD
        tokens = tuple(t for t, c in self._live.items() if runs_async(c))
        return [CancelTasks(tokens)] if tokens else []

    def resume_from(self, state: Mapping[str, Any], events: Mapping[str, Any]) -> None:
        """Restore a paused run's snapshot (call before `start`).

        Completed and skipped nodes keep their outcome; wait nodes whose
        event is in `events` complete with its payload when reached.

        The snapshot must already be checked against this flow.
        """
        nodes = self.plan.nodes
        self._events = dict(events)
        self._known = {k: dict(v) for k, v in state.get("items", {}).items()}
        self._prior = {k: dict(v) for k, v in state.get("item_attempts", {}).items()}
        for node_id, attempts in state.get("attempts", {}).items():
            self._attempts[node_id] = attempts + 1  # attempt numbers go on
        for error in state.get("rescued", ()):  # rescued before the resume
            key = error.node_id
            if error.item_index is not None:
                key = f"{key}[{error.item_index}]"
            self._rescued[key] = error
        self._errors.extend(state.get("errors", ()))  # items a batch skipped
        self._actions = dict(state.get("actions", {}))
        self._wakes = {k: float(v) for k, v in state.get("wakes", {}).items()}
        for node_id, status in state["status"].items():
            self._status[node_id] = status
            self._skips += status == "skipped"
            if status == "completed":
                key = nodes[node_id].key
                self._outputs[key] = state["outputs"][key]
        for node_id, n in nodes.items():
            resolved = [
                d for d in n.deps if self._status[d] in ("completed", "skipped")
            ]
            self._waiting[node_id] = len(n.deps) - len(resolved)
            if n.join == "any" and self._status[node_id] is not None:
                self._fired.add(node_id)

    @property
    def abandoned(self) -> bool:
        """Whether sync work that timed out is still running on a thread."""
        return bool(self._abandoned)

    @property
    def next_wakeup(self) -> float | None:
        """When `tick` is next needed (faces' clock), or None."""
        heap = self._deadline_heap
        if not (
            heap
            or self._timers
            or self._retry_due
            or self._grace_until is not None
            or self.journal is not None
            or self._waits
        ):
            return None  # the common case: nothing is timed
        while heap and self._deadlines.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)  # the attempt ended before its deadline
        dues = [heap[0][0]] if heap else []
        if self._grace_until is not None:
            dues.append(self._grace_until)
        if self.journal is not None:
            commit = self.journal.wakeup()
            if commit is not None:
                dues.append(commit)
        if self._timers:
            dues.append(min(self._timers.values()))
        if self._retry_due:
            dues.append(min(self._retry_due.values()))
        dues.extend(run.retries[0][0] for run in self._batches.values() if run.retries)
        return min(dues) if dues else None

    @property
    def retrying(self) -> bool:
        """Whether a node or item waits for its retry."""
        return bool(self._retry_due) or self._waits

    @property
    def _waits(self) -> bool:
        """Whether any batch item waits for a retry."""
        return any(run.retries for run in self._batches.values())

    def node_done(self, command: RunNode, value: Any, now: float) -> list[Command]:
        """The node of `command` returned `value`."""
        if self._finish_command(command):
            self._items -= 1
            n = command.node
            repeated = n.loop is not None and self._repeat(command, value, now)
            if not repeated and self._status[n.id] is None:  # a loop may have failed
                self._complete(n.id, value, now)
        return self._pump(now)

    def node_failed(
        self, command: RunNode, exc: BaseException, now: float
    ) -> list[Command]:
        """The node of `command` raised `exc`."""
        if self._finish_command(command):
            self._items -= 1
            self._attempt_failed(command.node, None, None, exc, command.attempt, now)
        return self._pump(now)

    def items_done(
        self, command: RunItems, outcomes: Sequence[Any], now: float
    ) -> list[Command]:
        """The items of `command` finished.

        `outcomes[i]` is the value of item `command.start + i`, or a
        `Failure` if it raised. Fewer outcomes than items means the worker
        stopped at a failure and the rest never started.
        """
        journal = self.journal
        began = None if journal is None else self._issued.pop(command.token, now)
        if not self._finish_command(command):
            return self._pump(now)
        n = command.node
        run = self._batches[n.id]
        results = run.results
        index = command.start
        count = len(command.items)
        run.in_flight -= count
        self._items -= count
        for offset, outcome in enumerate(outcomes):
            if type(outcome) is Failure:
                item = command.items[offset]
                exc = outcome.exception
                self._attempt_failed(n, index, item, exc, command.attempt, now)
            elif journal is None or self._record_item(
                run, index, outcome, command.attempt, now, began
            ):
                results[index] = outcome
                run.done += 1
            # else it could not be stored, and the item failed
            index += 1
        if self._progress is not None:
            data = {
                "done": run.done,
                "pulled": len(results),
                "exhausted": run.exhausted,
            }
            self._progress("batch_progress", n.id, None, data)
        self._settle_batch(run, now)
        return self._pump(now)

    def fallback_done(
        self, command: RunFallback, value: Any, now: float
    ) -> list[Command]:
        """A fallback returned `value`: it stands in for the failed output."""
        if self._finish_command(command):
            self._items -= 1
            n = command.node
            error = RunError(
                n.id, command.item_index, command.attempts, command.exception
            )
            if self._emit is not None:
                self._emit("node_rescued", n.id, command.item_index, command.exception)
            if command.item_index is None:
                self._rescued[n.id] = error
                self._complete(n.id, value, now)
            else:
                run = self._batches[n.id]
                run.in_flight -= 1
                index = command.item_index
                if self.journal is None or self._record_item(
                    run, index, value, command.attempts, now,
                    rescued=command.exception,
                ):  # fmt: skip
                    run.done += 1
                    run.results[index] = value
                    self._rescued.setdefault(f"{n.id}[{index}]", error)
                self._settle_batch(run, now)
        return self._pump(now)

    def fallback_failed(
        self, command: RunFallback, exc: BaseException, now: float
    ) -> list[Command]:
        """A fallback raised: the node (or item) fails with that error."""
        if self._finish_command(command):
            self._items -= 1
            self._fallback_lost(command, exc, now)
        return self._pump(now)

    # -- queries --------------------------------------------------------------

    @property
    def finished(self) -> bool:
        """Whether the run is over: nothing in flight and nothing left to start."""
        if self._items or self._async_units:
            return False
        if self._sync_units > len(self._abandoned):
            return False
        if self._halted:
            return True
        return not (
            self._ready_sync
            or self._ready_async
            or self._ready_batches
            or self._batches
            or self._timers
            or self._retry_due
            or self._fallbacks
        )

    def result(
        self, duration: float, context: Mapping[str, Any] | None = None
    ) -> RunResult:
        """Assemble the run's result (call once `finished` is true).

        Args:
            duration: The run's wall time.
            context: The run's context values, for the snapshot.
        """
        paused = not self._halted and bool(self._awaiting or self._wakes_pending())
        status: dict[str, NodeStatus] = {}
        for node_id, s in self._status.items():
            if s is None:
                if node_id in self._awaiting or node_id in self._wakes:
                    s = "waiting"
                elif paused:
                    s = "pending"
                elif self._halted:
                    if node_id not in self._started:
                        s = "not_run"
                    else:
                        s = "cancelled" if self._cancelled else "stopped"
                else:
                    raise RuntimeError(
                        f"flowdsl internal error: node {node_id!r} never became "
                        "ready in a run that did not fail; please report this."
                    )
            if s == "completed" and node_id in self._rescued:
                s = "rescued"
            status[node_id] = s
        wakes = self._wakes_pending()
        return RunResult(
            flow_id=self.plan.flow_id,
            run_id=self.run_id,
            status=(
                "cancelled"
                if self._cancelled
                else "failed"
                if self._halted
                else "awaiting"
                if paused
                else "completed"
            ),
            outputs=dict(self._outputs),
            errors=tuple(self._errors),
            node_status=status,
            timings=dict(self._timings),
            duration=duration,
            keys={n.id: n.key for n in self.plan.nodes.values() if n.key != n.id},
            children=dict(self._children),
            waiting_for=tuple(sorted(set(self._awaiting.values()))),
            wake_at=min(wakes.values()) if wakes else None,
            state=self._snapshot(status, context or {}),
            rescued=tuple(self._rescued.values()),
        )

    def _wakes_pending(self) -> dict[str, float]:
        return {i: t for i, t in self._wakes.items() if self._status[i] is None}

    def _snapshot(
        self, status: Mapping[str, str], context: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The run as plain data: enough for `resume` to go on from here."""
        kept = {i: s for i, s in status.items() if s in ("completed", "skipped")}
        return {
            "version": 1,
            "flow": self.plan.flow_id,
            "run_id": self.run_id,
            "inputs": dict(self._inputs),
            "outputs": dict(self._outputs),
            "status": kept,
            "actions": dict(self._actions),
            "wakes": self._wakes_pending(),
            "context": dict(context),
        }

    # -- internals ------------------------------------------------------------

    def _pause(self, node_id: str, now: float) -> None:
        """A wait or sleep node is reached: complete it, or hold the run there."""
        self._started[node_id] = now
        pause = self.plan.nodes[node_id].pause
        assert pause is not None
        kind, detail = pause
        if kind == "wait":
            if detail in self._events:
                self._complete(node_id, self._events[detail], now)
            else:
                self._awaiting[node_id] = detail
            return
        seconds, durable = detail
        if not durable:
            self._timers[node_id] = now + seconds
            return
        wall = now + self._wall_offset
        wake = self._wakes.setdefault(node_id, wall + seconds)
        if wall >= wake:
            self._complete(node_id, None, now)

    def _ancestors(self, node_id: str) -> set[str]:
        cached = self._ancestor_cache.get(node_id)
        if cached is not None:
            return cached
        seen: set[str] = set()
        stack = list(self.plan.nodes[node_id].deps)
        while stack:
            dep = stack.pop()
            if dep not in seen:
                seen.add(dep)
                stack.extend(self.plan.nodes[dep].deps)
        self._ancestor_cache[node_id] = seen
        return seen

    def _make_ready(self, node_id: str) -> None:
        n = self.plan.nodes[node_id]
        if n.is_batch:
            self._ready_batches.append(node_id)
        elif n.is_async:
            self._ready_async.append(node_id)
        else:
            self._ready_sync.append(node_id)

    def _repeat(self, command: RunNode, child: ChildRun, now: float) -> bool:
        """After a loop's iteration: queue the next one, or say it is done.

        Returns:
            True if another iteration was queued.
        """
        n = command.node
        spec = n.loop
        iteration = self._iterations.get(n.id, 1)
        outputs = child.result.outputs
        values = {**command.kwargs, **outputs, "iteration": iteration}
        try:
            again = self._evaluate(spec.condition, values, n.id)
        except Exception as exc:
            self._fail(n.id, None, exc, now)
            return False
        if not again:
            return False
        if iteration >= spec.max_iterations:
            self._children[n.id] = child.result
            self._fail(n.id, None, LoopLimitExceeded(n.id, spec.max_iterations), now)
            return False
        missing = [key for key in spec.carry.values() if key not in outputs]
        if missing:
            error = LoopCarryError(
                f"loop {n.id!r}: iteration {iteration} skipped {missing[0]!r}, "
                "whose value its carry= feeds into the next iteration; make sure "
                "that node runs in every iteration, or give it a default branch."
            )
            self._children[n.id] = child.result
            self._fail(n.id, None, error, now)
            return False
        carried = {name: outputs[key] for name, key in spec.carry.items()}
        self._next_kwargs[n.id] = {**command.kwargs, **carried}
        self._iterations[n.id] = iteration + 1
        self._ready_async.append(n.id)
        return True

    def _evaluate(self, condition: Any, values: dict[str, Any], node_id: str) -> bool:
        """A condition's verdict: an `Expression`, or a callable given a context."""
        if hasattr(condition, "names"):
            return bool(condition.evaluate(values))
        return bool(condition(MappingProxyType(values), self._make_context(node_id)))

    def _complete(self, node_id: str, value: Any, now: float) -> None:
        n = self.plan.nodes[node_id]
        if type(value) is Action:
            self._actions[node_id] = value.name
            value = value.value
        elif type(value) is ChildRun:
            self._children[node_id] = value.result
            value = value.value
        if self.journal is not None and not self._record_node(n, value, now):
            return  # its output cannot be stored: it failed instead
        self._outputs[n.key] = value
        self._status[node_id] = "completed"
        if self._emit is not None:
            self._emit("node_finish", node_id)
        self._timings[node_id] = now - self._started[node_id]
        self._resolved(node_id, now)

    def _skip(self, node_id: str, now: float) -> None:
        self._status[node_id] = "skipped"
        self._skips += 1
        if self.journal is not None:
            self.journal.add(Outcome(node_id, None, "skipped", 0), now)
        if self._emit is not None:
            self._emit("node_skipped", node_id)
        self._resolved(node_id, now)

    def _resolved(self, node_id: str, now: float) -> None:
        """`node_id` completed or was skipped: its dependents may now decide."""
        completed = self._status[node_id] == "completed"
        for dependent in self.plan.nodes[node_id].dependents:
            self._waiting[dependent] -= 1
            if self.plan.nodes[dependent].join == "any":
                if dependent in self._fired:
                    continue
                if completed or self._waiting[dependent] == 0:
                    self._fired.add(dependent)
                    self._undecided.append(dependent)
            elif self._waiting[dependent] == 0:
                self._undecided.append(dependent)

    def _decide_all(self, now: float) -> None:
        """Run or skip every node whose predecessors are all resolved.

        A worklist, not recursion: skips can cascade down chains of any length.
        """
        undecided = self._undecided
        while undecided:
            node_id = undecided.popleft()
            if self._should_skip(node_id, now):
                if self._status[node_id] is None:  # a failed condition is "failed"
                    self._skip(node_id, now)
            elif self.plan.nodes[node_id].pause is not None:
                self._pause(node_id, now)
            else:
                self._make_ready(node_id)

    def _should_skip(self, node_id: str, now: float) -> bool:
        n = self.plan.nodes[node_id]
        status = self._status
        skips = self._skips  # nothing can be skipped for a skip before the first
        if skips and n.deps and all(status[d] == "skipped" for d in n.deps):
            return True
        if n.on is not None:
            source, action = n.on
            if status[source] != "completed" or self._actions.get(source) != action:
                return True
        producer_of = self.plan.producer_of
        if n.batch_input is not None and status[producer_of[n.batch_input]] != (
            "completed"
        ):
            return True  # nothing to scatter
        if skips and n.join == "all":
            for param, key in n.sources:
                if param in n.required and status[producer_of[key]] == "skipped":
                    return True
        if n.when is not None:
            names = getattr(n.when, "names", ())
            if any(
                name in producer_of and status[producer_of[name]] == "skipped"
                for name in names
            ):
                return True  # the condition reads a value that does not exist
            try:
                return not self._condition_holds(n)
            except Exception as exc:
                self._started[node_id] = now
                self._fail(node_id, None, exc, now)
                return True
        return False

    def _condition_holds(self, n: PlanNode) -> bool:
        """Evaluate `n.when` over completed upstream outputs and flow inputs."""
        names = getattr(n.when, "names", None)
        values: dict[str, Any] = {}
        for producer in self._ancestors(n.id):
            key = self.plan.nodes[producer].key
            if (names is None or key in names) and self._status[
                producer
            ] == "completed":
                values[key] = self._outputs[key]
        for name, value in self._inputs.items():
            if names is None or name in names:
                values.setdefault(name, value)
        return self._evaluate(n.when, values, n.id)

    def _finish_command(self, command: Work) -> bool:
        """Free the command's executor slot; whether its outcome still counts.

        An outcome stops counting when its attempt timed out (a sync node's
        late result is discarded) or the run was cancelled meanwhile and the
        command was an async one being cancelled.
        """
        self._command_finished(command)
        if command.token in self._abandoned:
            self._abandoned.discard(command.token)
            return False
        if self._live.pop(command.token, None) is None:
            return False
        self._deadlines.pop(command.token, None)
        return True

    def _timed_out(self, command: Work, now: float) -> None:
        """An attempt passed its deadline (fallbacks have none)."""
        n = command.node
        timeout = n.policy.timeout or 0.0
        if isinstance(command, RunItems):
            run = self._batches[n.id]
            run.in_flight -= len(command.items)
            self._items -= len(command.items)
            for offset, item in enumerate(command.items):
                index = command.start + offset
                exc = NodeTimeout(n.id, timeout, index)
                self._attempt_failed(n, index, item, exc, command.attempt, now)
            self._settle_batch(run, now)
        elif isinstance(command, RunNode):
            self._items -= 1
            exc = NodeTimeout(n.id, timeout)
            self._attempt_failed(n, None, None, exc, command.attempt, now)

    def _fallback_lost(
        self, command: RunFallback, exc: BaseException, now: float
    ) -> None:
        """A fallback failed: the node (or item) fails with its error."""
        if self._cancelled and not isinstance(exc, Exception):
            if command.item_index is None:
                self._status[command.node.id] = "cancelled"
            return
        if command.item_index is None:
            self._fail(command.node.id, None, exc, now, command.attempts)
        else:
            run = self._batches[command.node.id]
            run.in_flight -= 1
            self._item_failed(run, command.item_index, exc, command.attempts, now)
            self._settle_batch(run, now)

    def _attempt_failed(
        self,
        n: PlanNode,
        index: int | None,
        item: Any,
        exc: BaseException,
        attempt: int,
        now: float,
    ) -> None:
        """An attempt failed: retry it later, hand it to the fallback, or fail."""
        if self._cancelled and not isinstance(exc, Exception):
            # Cancelled along with the run: neither a failure nor retried.
            if index is None:
                self._status[n.id] = "cancelled"
            return
        policy = n.policy
        retryable = policy.retryable(exc, attempt)
        if not self._halted and retryable:
            delay = policy.delay(attempt, f"{self.run_id}:{n.id}:{index}")
            if self._emit is not None:
                data = {"error": exc, "delay": delay}
                self._emit("node_retry", n.id, index, data, attempt + 1)
            if self.journal is not None:
                wall = self._wall(now)
                self.journal.failed(n.id, index, exc, attempt, now, wall, retrying=True)
            if index is None:
                self._retry_due[n.id] = now + delay
                self._attempts[n.id] = attempt + 1
            else:
                run = self._batches[n.id]
                # The item keeps its place in the limits while it waits, so
                # no new item is pulled in its stead.
                run.in_flight += 1
                self._items += 1
                heapq.heappush(run.retries, (now + delay, index, item, attempt + 1))
            return
        if n.fallback is not None and not self._cancelled:
            if index is not None:
                self._batches[n.id].in_flight += 1  # the fallback stands in
            inline = not n.fallback_async and (n.inline or self._inline_sync)
            self._fallbacks.append(RunFallback(n, exc, index, attempt, inline))
            return
        if index is None:
            self._fail(n.id, None, exc, now, attempt)
            return
        run = self._batches[n.id]
        if self._halted and retryable and self.journal is not None:
            # Only the halt kept it from another attempt: not final, so a
            # resume gives it that attempt.
            wall = self._wall(now)
            self.journal.failed(n.id, index, exc, attempt, now, wall, retrying=True)
            self._item_failed(run, index, exc, attempt, now, final=False)
        else:
            self._item_failed(run, index, exc, attempt, now)

    def _fail(
        self,
        node_id: str,
        index: int | None,
        exc: BaseException,
        now: float,
        attempts: int = 1,
    ) -> None:
        child = exc.result if isinstance(exc, FlowFailed) and index is None else None
        if child is not None and child.errors:
            # A subflow's failure is its child's: report those, with the path.
            self._children[node_id] = child
            self._errors.extend(
                attrs.evolve(e, path=(node_id, *e.path)) for e in child.errors
            )
        else:
            self._errors.append(RunError(node_id, index, attempts, exc))
        if self._emit is not None:
            self._emit("node_error", node_id, index, exc, attempts)
        if self.journal is not None:
            self.journal.failed(node_id, index, exc, attempts, now, self._wall(now))
        self._status[node_id] = "failed"
        self._timings[node_id] = now - self._started[node_id]
        # Fail fast: nothing new starts; work in flight is allowed to finish.
        self._halted = True
        self._drop_retries()

    def _item_failed(
        self,
        run: _BatchRun,
        index: int,
        exc: BaseException,
        attempts: int,
        now: float,
        *,
        final: bool = True,
    ) -> None:
        """An item failed for good: apply the batch's `on_error` policy.

        With `final` false (the run halted before its retries ran out) the
        failure is not recorded as the item's outcome.
        """
        mode = run.node.on_error
        if mode != "raise" and final and self.journal is not None:
            wall = self._wall(now)
            self.journal.failed(run.node.id, index, exc, attempts, now, wall)
        if mode == "collect":
            run.results[index] = ItemError(index, exc, attempts)
            run.done += 1
        elif mode == "skip":
            run.results[index] = _SKIPPED
            run.done += 1
            self._errors.append(RunError(run.node.id, index, attempts, exc))
            if self._emit is not None:
                self._emit("node_error", run.node.id, index, exc, attempts)
        elif not run.failed:
            run.failed = True
            self._fail(run.node.id, index, exc, now, attempts)

    def _settle_batch(self, run: _BatchRun, now: float) -> None:
        """Gather the batch if every item is accounted for (and none failed it)."""
        if run.settled and not run.failed:
            self._finish_batch(run, now)

    def _finish_batch(self, run: _BatchRun, now: float) -> None:
        node_id = run.node.id
        del self._batches[node_id]
        results = run.results
        if run.node.on_error == "skip":
            results = [r for r in results if r is not _SKIPPED]
        self._complete(node_id, results, now)

    # -- recording (durable runs) ---------------------------------------------

    def commit_due(self, now: float, idle: bool = True) -> bool:
        """Whether the faces should commit the journal now.

        Args:
            now: The faces' clock.
            idle: Whether no outcome waits to be handled. A face that is never
                idle still commits once `concurrency` results (or as many as
                the executor runs at once, or 64) wait.
        """
        if self.journal is None:
            return False
        group = self._limit or self._sync_slots or 64
        return self.journal.due(now, idle, group)

    def _wall(self, now: float) -> float:
        return now + self._wall_offset

    def _record_node(self, n: PlanNode, value: Any, now: float) -> bool:
        """Journal a node's output; False (and the node failed) if it cannot
        be stored.

        A batch records no value (its items hold it) unless it came whole
        from the cache. Nothing is recorded once the run is cancelled (a node
        that returns early on a cancel would record a partial value), nor a
        batch gathered after the run halted (some items may not have had all
        their attempts): a resume runs those again.
        """
        journal = self.journal
        assert journal is not None
        if journal.stopped or (n.is_batch and self._halted):
            return True
        attempts = self._attempts.get(n.id, 1)
        key = self._cache_keys.pop(n.id, None)
        whole = not n.is_batch or n.id in self._whole
        try:
            blob = journal.encode(value, n.id, None) if whole else None
            routes = n.id in self._actions
            if key is not None and not routes and n.id not in self._rescued:
                cached = blob if blob is not None else journal.encode(value, n.id, None)
                journal.cache.append(CacheEntry(key, n.id, cached))
        except SerializationError as exc:
            self._fail(n.id, None, exc, now, attempts)
            return False
        started = self._started.get(n.id)
        rescued = self._rescued.get(n.id)
        error_type, error = (
            (None, None) if rescued is None else error_fields(rescued.exception)
        )
        outcome = Outcome(
            n.id, None, "completed", attempts, blob, error_type, error,
            action=self._actions.get(n.id),
            started=None if started is None else self._wall(started),
            finished=self._wall(now),
        )  # fmt: skip
        journal.add(outcome, now)
        if n.is_batch:
            journal.batch_rows = True
        return True

    def _record_item(
        self,
        run: _BatchRun,
        index: int,
        value: Any,
        attempts: int,
        now: float,
        began: float | None = None,
        rescued: BaseException | None = None,
    ) -> bool:
        """Journal a batch item's output; False (and the item failed) if it
        cannot be stored. `began` is when its command was sent; `rescued`,
        what its fallback stood in for."""
        journal = self.journal
        assert journal is not None
        if journal.stopped:
            return True  # cancelled: it may have stopped early
        node_id = run.node.id
        try:
            blob = journal.encode(value, node_id, index)
        except SerializationError as exc:
            self._item_failed(run, index, exc, attempts, now)
            return False
        error_type, error = (None, None) if rescued is None else error_fields(rescued)
        outcome = Outcome(
            node_id, index, "completed", attempts, blob, error_type, error,
            started=None if began is None else self._wall(began),
            finished=self._wall(now),
        )  # fmt: skip
        journal.add(outcome, now)
        return True

    def _from_cache(self, n: PlanNode, kwargs: Mapping[str, Any], now: float) -> bool:
        """Complete a `cache=True` node from the cache if its output is there;
        otherwise remember the key its output will be stored under."""
        assert self._cache is not None
        try:
            key, value = self._cache(n, kwargs)
        except Exception as exc:  # the user's cache_key raised, or bad bytes
            self._started.setdefault(n.id, now)
            self._fail(n.id, None, exc, now)
            return True
        if key is None:
            return False
        if value is MISS:
            self._cache_keys[n.id] = key
            return False
        if self._emit is not None and n.id not in self._started:
            self._emit("node_start", n.id, None, {"cached": True}, 1)
        self._started.setdefault(n.id, now)
        if n.is_batch:
            self._whole.add(n.id)  # its value is recorded whole, not by item
        self._complete(n.id, value, now)
        return True

    def _unit_free(self, is_async: bool) -> bool:
        """Whether the executor (or loop) can take one more command."""
        if is_async:
            return self._async_slots is None or self._async_units < self._async_slots
        return self._sync_slots is None or self._sync_units < self._sync_slots

    def _drop_retries(self) -> None:
        """The run stopped: retries waiting for their time never run."""
        self._retry_due.clear()
        for run in self._batches.values():
            run.in_flight -= len(run.retries)
            self._items -= len(run.retries)
            run.retries.clear()

    def _room(self, is_async: bool) -> int:
        """How many more items may start now (large when unlimited)."""
        if not self._unit_free(is_async):
            return 0
        return 1 << 62 if self._limit is None else self._limit - self._items

    def _command_started(self, is_async: bool, inline: bool) -> int:
        """Count a new command against the executor's capacity; its token."""
        if is_async:
            self._async_units += 1
        elif not inline:
            self._sync_units += 1
        self._token += 1
        return self._token

    def _command_finished(self, command: Work) -> None:
        if runs_async(command):
            self._async_units -= 1
        elif not command.inline:
            self._sync_units -= 1

    def _pump(self, now: float) -> list[Command]:
        """Start whatever may start; returns the commands for the faces."""
        commands: list[Command] = []
        progress = True
        while progress and not self._halted:
            progress = False
            if self._undecided:
                self._decide_all(now)
            if self._retry_due:
                for node_id, due in list(self._retry_due.items()):
                    if due <= now:
                        del self._retry_due[node_id]
                        self._make_ready(node_id)
            while self._ready_batches and not self._halted:
                self._start_batch(self._ready_batches.popleft(), now)
                progress = True
            for ready, is_async in self._ready_queues:
                while ready and not self._halted and self._room(is_async) > 0:
                    command = self._start_node(ready.popleft(), now)
                    if command is not None:  # else it came from the cache
                        commands.append(command)
                    progress = True
            if self._batches:
                for run in list(self._batches.values()):
                    progress = self._pull(run, commands, now) or progress
            while self._fallbacks and not self._halted:
                commands.append(self._start_fallback(self._fallbacks.pop(0)))
                progress = True
        if (
            self._inline_alone
            and len(commands) == 1
            and self._sync_units == 1
            and not self._async_units
        ):
            self._run_here(commands)
        return commands

    def _run_here(self, commands: list[Command]) -> None:
        """The only work in flight runs on the scheduler's thread, when it can:
        a thread hop would buy no parallelism."""
        command = commands[0]
        if (
            isinstance(command, (RunNode, RunItems))
            and not command.inline
            and not command.node.is_async
            and command.node.policy.timeout is None  # a thread can be left behind
        ):
            self._sync_units = 0
            here: Work
            if isinstance(command, RunNode):  # built directly: _replace is slow
                here = RunNode(
                    command.node, command.kwargs, True, command.attempt, command.token
                )
            else:
                here = command._replace(inline=True)
            commands[0] = self._live[command.token] = here

    def _start_fallback(self, command: RunFallback) -> RunFallback:
        self._items += 1
        token = self._command_started(command.node.fallback_async, command.inline)
        command = command._replace(token=token)
        self._live[token] = command
        return command

    def _issue(self, command: RunNode | RunItems, now: float) -> None:
        """Record a new command as live, with its deadline if it has one."""
        self._live[command.token] = command
        if self.journal is not None and type(command) is RunItems:
            self._issued[command.token] = now  # items' start times, recorded
        timeout = command.node.policy.timeout
        if timeout is not None:
            due = self._deadlines[command.token] = now + timeout
            heapq.heappush(self._deadline_heap, (due, command.token))

    def _start_node(self, node_id: str, now: float) -> RunNode | None:
        n = self.plan.nodes[node_id]
        cached = self._cache is not None and n.node.options.cache and n.loop is None
        if cached and self._from_cache(n, self._arguments(n), now):
            return None
        inline = not n.is_async and (n.inline or self._inline_sync)
        self._started.setdefault(node_id, now)  # a loop keeps its first start
        attempt = self._attempts.get(node_id, 1)
        if self._emit is not None:
            self._emit("node_start", node_id, None, None, attempt)
        self._items += 1
        token = self._command_started(n.is_async, inline)
        kwargs = self._next_kwargs.get(node_id) or self._arguments(n)
        command = RunNode(n, kwargs, inline, attempt, token)
        self._issue(command, now)
        return command

    def _arguments(self, n: PlanNode) -> dict[str, Any]:
        """The keyword arguments of `n` (a batch's shared ones, for a batch)."""
        outputs = self._outputs
        kwargs = {param: outputs[key] for param, key in n.sources if key in outputs}
        for param, name in n.inputs:
            if name in self._inputs:  # else the parameter's default applies
                kwargs[param] = self._inputs[name]
        return kwargs

    def _start_batch(self, node_id: str, now: float) -> None:
        n = self.plan.nodes[node_id]
        self._started[node_id] = now
        if self._emit is not None:
            self._emit("node_start", node_id, None, None, 1)
        assert n.batch_input is not None
        value = self._outputs[n.batch_input]
        producer = self.plan.producer_of[n.batch_input]
        problem = None
        if value is None or isinstance(value, (str, bytes, bytearray, AbcMapping)):
            problem = f"a {type(value).__name__}"
        else:
            try:
                iterator = iter(value)
            except TypeError:
                problem = f"a {type(value).__name__}, which is not iterable"
            except Exception as broken:  # a faulty __iter__
                problem = f"a {type(value).__name__} whose iter() raised {broken!r}"
        if problem is not None:
            exc = BatchInputError(
                f"batch {node_id!r} cannot scatter the value of {producer!r}: it is "
                f"{problem}. Make {producer!r} return a list (or another iterable) "
                "of items."
            )
            self._fail(node_id, None, exc, now)
            return
        kwargs = self._arguments(n)
        if self._cache is not None and n.node.options.cache:
            arguments = {**kwargs, n.batch_input: value}
            if self._from_cache(n, arguments, now):
                return
        self._batches[node_id] = _BatchRun(
            n, iterator, kwargs, self._known.pop(node_id, None),
            self._prior.pop(node_id, None),
        )  # fmt: skip

    def _take(self, run: _BatchRun, size: int, now: float) -> list[Any] | None:
        """The next `size` items of the batch's input (fewer at its end);
        None, and the batch failed, if the input raised."""
        try:
            return list(islice(run.iterator, size))
        except Exception as exc:
            n = run.node
            producer = self.plan.producer_of[n.batch_input or ""]
            error = BatchInputError(
                f"batch {n.id!r}: the input from {producer!r} raised "
                f"{exc!r} while yielding item {len(run.results)}."
            )
            error.__cause__ = exc
            run.failed = True
            self._fail(n.id, None, error, now)
            return None

    def _restore_item(self, run: _BatchRun, index: int, now: float) -> None:
        """Fill an item's slot with what an earlier process recorded for it."""
        assert run.known is not None
        known = run.known.pop(index)
        if run.known_order and run.known_order[0] == index:
            run.known_order.popleft()
        run.results.append(_PENDING)
        if known[0] == "ok":
            run.results[index] = known[1]
            run.done += 1
        else:  # a failed item under on_error="skip" or "collect"
            _, exc, attempts = known
            self._item_failed(run, index, exc, attempts, now)

    def _pull(self, run: _BatchRun, commands: list[Command], now: float) -> bool:
        """Send items of `run` while there is room: due retries first, then
        new items pulled from the input."""
        n = run.node
        pulled = False
        inline = not n.is_async and (n.inline or self._inline_sync)
        policy = n.policy
        stop = n.on_error == "raise" and not policy.retries and n.fallback is None
        while not self._halted:
            if run.retries and run.retries[0][0] <= now:
                # A due retry: its place in the limits is already held.
                if not self._unit_free(n.is_async):
                    break
                _, start, item, attempt = heapq.heappop(run.retries)
                token = self._command_started(n.is_async, inline)
                command = RunItems(n, start, [item], run.kwargs, inline, attempt, token)
                self._issue(command, now)
                commands.append(command)
                pulled = True
                continue
            start, attempt = len(run.results), 1
            if run.known is not None and start in run.known:
                chunk = self._take(run, 1, now)
                if chunk is None:
                    return pulled
                if chunk:
                    self._restore_item(run, start, now)
                    pulled = True
                    continue
                run.exhausted = True
                break
            room = self._room(n.is_async)
            if n.concurrency is not None:
                room = min(room, n.concurrency - run.in_flight)
            if room <= 0 or run.exhausted:
                break
            if n.is_async:
                size = 1
            elif self._inline_sync:  # no parallelism to lose: fewer, bigger calls
                size = min(max(n.chunk_size, INLINE_CHUNK), room)
            else:
                size = min(n.chunk_size, room)
            if run.known_order:  # stop short of the next recorded item
                size = min(size, run.known_order[0] - start)
            if run.prior_order:  # an item with recorded attempts goes alone
                if run.prior_order[0] == start:
                    run.prior_order.popleft()
                    assert run.prior is not None
                    size, attempt = 1, run.prior.pop(start) + 1
                else:
                    size = min(size, run.prior_order[0] - start)
            chunk = self._take(run, size, now)
            if chunk is None:
                return pulled
            if len(chunk) < size:
                run.exhausted = True
            if not chunk:
                break
            run.results.extend([_PENDING] * len(chunk))
            run.in_flight += len(chunk)
            self._items += len(chunk)
            token = self._command_started(n.is_async, inline)
            command = RunItems(
                n, start, chunk, run.kwargs, inline, attempt, token, stop
            )
            self._issue(command, now)
            commands.append(command)
            pulled = True
        if run.settled and not run.failed and n.id in self._batches:
            self._finish_batch(run, now)
            pulled = True
        return pulled
