"""The two faces of the engine: thin drivers over one scheduler core.

Both drivers do the same three things: carry out the scheduler's commands
(inline, on an executor, or as tasks on an event loop), turn each outcome back
into a scheduler event, and stop when the scheduler says the run is over.
They differ only in how they wait: `SyncDriver` blocks on a queue that
executor and portal-loop callbacks fill; `AsyncDriver` reacts to callbacks on
the running loop. No scheduling decision is made here.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import queue
import threading
import time
import uuid
from collections import deque
from concurrent.futures import Executor
from typing import Any, Callable, Coroutine, Iterable, Mapping

from ._context import Context, SharedState
from ._events import EventSink, Listener
from ._nodes import BaseNode
from ._plan import Plan, PlanNode
from ._result import RunResult
from ._scheduler import Command, Failure, RunItems, RunNode, Scheduler
from .executors import ExecutorChoice

__all__ = ["AsyncDriver", "SyncDriver"]


def run_node(node: BaseNode, kwargs: Mapping[str, Any]) -> Any:
    """Call a sync node (module-level, so process pools can pickle it)."""
    return node.fn(**kwargs)


def run_chunk(
    node: BaseNode,
    items: Iterable[Any],
    kwargs: Mapping[str, Any] | list[Any],
    stop_on_error: bool,
) -> list[Any]:
    """Call a sync batch worker on each item; a raised exception becomes a Failure.

    `kwargs` is shared by every item, or a list with one mapping per item.
    With `stop_on_error`, the items after a failure are not started, and the
    outcomes end at the failure.
    """
    fn = node.fn
    outcomes: list[Any] = []
    append = outcomes.append
    per_item = kwargs if isinstance(kwargs, list) else itertools.repeat(kwargs)
    for item, item_kwargs in zip(items, per_item):
        try:
            append(fn(item, **item_kwargs))
        except Exception as exc:
            append(Failure(exc))
            if stop_on_error:
                break
    return outcomes


async def _run_async_item(
    node: BaseNode, item: Any, kwargs: Mapping[str, Any]
) -> list[Any]:
    try:
        return [await node.fn(item, **kwargs)]
    except Exception as exc:
        return [Failure(exc)]


class _Driver:
    """What both faces share: command dispatch and outcome settling."""

    def __init__(
        self,
        plan: Plan,
        inputs: Mapping[str, Any],
        *,
        run_id: str | None,
        concurrency: int | None,
        executor: ExecutorChoice,
        resume: tuple[Mapping[str, Any], Mapping[str, Any]] | None = None,
        on_event: Listener | None = None,
    ) -> None:
        if resume is not None:
            inputs, run_id = resume[0]["inputs"], resume[0]["run_id"]
        run_id = run_id if run_id is not None else uuid.uuid4().hex
        self._emit = None if on_event is None else EventSink(run_id, on_event)
        self.state = SharedState(run_id, self._emit)
        self.scheduler = Scheduler(
            plan,
            inputs,
            run_id=run_id,
            concurrency=concurrency,
            sync_slots=executor.slots,
            inline_sync=executor.kind == "inline",
            make_context=lambda node_id: Context(self.state, node_id),
            emit=self._emit,
        )
        if resume is not None:
            state, events = resume
            self.scheduler.resume_from(state, events)
            self.state.values.update(state.get("context", {}))
        self._choice = executor
        self._executor: Executor | None = executor.given
        self._owned_executor: Executor | None = None
        self._started = time.perf_counter()

    def _pool(self) -> Executor:
        if self._executor is None:
            self._executor = self._owned_executor = self._choice.open()
            assert self._executor is not None
        return self._executor

    def _kwargs(
        self, node: PlanNode, kwargs: dict[str, Any], index: int | None
    ) -> dict[str, Any]:
        if not node.context_params:
            return kwargs
        context = Context(self.state, node.id, index)
        return {**kwargs, **dict.fromkeys(node.context_params, context)}

    def _item_kwargs(self, command: RunItems) -> dict[str, Any] | list[Any]:
        node = command.node
        if not node.context_params:
            return command.kwargs
        return [
            self._kwargs(node, command.kwargs, command.start + i)
            for i in range(len(command.items))
        ]

    def _sync_call(
        self, command: Command
    ) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        if isinstance(command, RunNode):
            return run_node, (
                command.node.node,
                self._kwargs(command.node, command.kwargs, None),
            )
        return run_chunk, (
            command.node.node,
            command.items,
            self._item_kwargs(command),
            command.node.on_error == "raise",
        )

    def _coroutine(self, command: Command) -> Coroutine[Any, Any, Any]:
        node = command.node
        if isinstance(command, RunNode):
            result: Coroutine[Any, Any, Any] = node.node.fn(
                **self._kwargs(node, command.kwargs, None)
            )
            return result
        (item,) = command.items
        return _run_async_item(
            node.node, item, self._kwargs(node, command.kwargs, command.start)
        )

    def _dispatch(self, commands: list[Command]) -> None:
        """Carry out commands; inline ones run here, and so do their follow-ups."""
        todo = deque(commands)
        while todo:
            command = todo.popleft()
            if command.inline:
                todo.extend(self._run_inline(command))
            else:
                self._submit(command)

    def _submit(self, command: Command) -> None:
        raise NotImplementedError

    def _run_inline(self, command: Command) -> list[Command]:
        fn, args = self._sync_call(command)
        try:
            value = fn(*args)
        except Exception as exc:
            assert isinstance(command, RunNode)  # chunks catch their own errors
            return self.scheduler.node_failed(command, exc, time.perf_counter())
        return self._feed(command, value)

    def _feed(self, command: Command, value: Any) -> list[Command]:
        if isinstance(command, RunNode):
            return self.scheduler.node_done(command, value, time.perf_counter())
        return self.scheduler.items_done(command, value, time.perf_counter())

    def _settle(self, command: Command, future: Any) -> list[Command]:
        """Turn a finished future into the scheduler's next commands."""
        exc = future.exception()
        if exc is None:
            return self._feed(command, future.result())
        if not isinstance(exc, Exception):
            raise exc  # KeyboardInterrupt, SystemExit: never a node failure
        if isinstance(command, RunNode):
            return self.scheduler.node_failed(command, exc, time.perf_counter())
        # A chunk sent to a process pool that could not run at all.
        outcomes = [Failure(exc)] * len(command.items)
        return self.scheduler.items_done(command, outcomes, time.perf_counter())

    def _start(self) -> None:
        if self._emit is not None:
            self._emit("run_start", data={"flow_id": self.scheduler.plan.flow_id})
        self._dispatch(self.scheduler.start(time.perf_counter(), time.time()))

    def _tick(self) -> None:
        self._dispatch(self.scheduler.tick(time.perf_counter()))

    def _result(self) -> RunResult:
        duration = time.perf_counter() - self._started
        with self.state.lock:
            result = self.scheduler.result(duration, self.state.values)
        if self._emit is not None:
            self._emit("run_finish", data={"status": result.status})
        return result

    def _close_pool(self) -> None:
        if self._owned_executor is not None:
            self._owned_executor.shutdown(wait=True)


class SyncDriver(_Driver):
    """The synchronous face: blocks the calling thread until the run ends.

    Sync nodes run on the executor (or inline); async nodes run on a private
    event loop in a portal thread, started only when needed, so `run()` also
    works where the calling thread already runs a loop.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._done: queue.SimpleQueue[tuple[Command, Any]] = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def run(self) -> RunResult:
        try:
            self._start()
            while not self.scheduler.finished:
                wakeup = self.scheduler.next_wakeup
                timeout = None if wakeup is None else wakeup - time.perf_counter()
                try:
                    command, future = self._done.get(timeout=timeout)
                except queue.Empty:
                    self._tick()
                else:
                    self._dispatch(self._settle(command, future))
                    if wakeup is not None and time.perf_counter() >= wakeup:
                        self._tick()
        finally:
            self._close_pool()
            self._close_portal()
        return self._result()

    def _submit(self, command: Command) -> None:
        if command.node.is_async:
            coroutine = self._coroutine(command)
            future: Any = asyncio.run_coroutine_threadsafe(coroutine, self._portal())
        else:
            fn, args = self._sync_call(command)
            future = self._pool().submit(fn, *args)
        future.add_done_callback(lambda f: self._done.put((command, f)))

    def _portal(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(
                target=self._loop.run_forever, name="flowdsl-portal", daemon=True
            )
            self._thread.start()
        return self._loop

    def _close_portal(self) -> None:
        if self._loop is None or self._thread is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


class AsyncDriver(_Driver):
    """The asynchronous face: runs on the caller's event loop.

    Async nodes are tasks on that loop; sync nodes run on the executor (or
    inline). Completions arrive as callbacks on the loop, which feed the
    scheduler and dispatch what it answers.
    """

    async def run(self) -> RunResult:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._finished: asyncio.Future[None] = loop.create_future()
        self._timer: asyncio.TimerHandle | None = None
        try:
            self._start()
            self._after_dispatch()
            if not self.scheduler.finished:
                await self._finished
        finally:
            if self._timer is not None:
                self._timer.cancel()
            self._close_pool()
        return self._result()

    def _after_dispatch(self) -> None:
        """Finish, or keep a timer armed for the scheduler's next wakeup."""
        if self.scheduler.finished:
            if not self._finished.done():
                self._finished.set_result(None)
            return
        wakeup = self.scheduler.next_wakeup
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if wakeup is not None:
            delay = max(0.0, wakeup - time.perf_counter())
            self._timer = self._loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._guarded(self._tick)

    def _guarded(self, step: Callable[[], None]) -> None:
        if self._finished.done():
            return
        try:
            step()
        except BaseException as exc:
            self._finished.set_exception(exc)
            return
        self._after_dispatch()

    def _submit(self, command: Command) -> None:
        if command.node.is_async:
            future: asyncio.Future[Any] = self._loop.create_task(
                self._coroutine(command)
            )
        else:
            fn, args = self._sync_call(command)
            future = self._loop.run_in_executor(self._pool(), fn, *args)
        future.add_done_callback(functools.partial(self._on_done, command))

    def _on_done(self, command: Command, future: asyncio.Future[Any]) -> None:
        self._guarded(lambda: self._dispatch(self._settle(command, future)))
