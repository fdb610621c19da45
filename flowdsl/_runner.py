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
import contextlib
import functools
import logging
import queue
import threading
import time
import uuid
from collections import deque
from concurrent.futures import Executor
from typing import Any, Callable, Coroutine, Iterator, Mapping, Sequence

from ._calls import run_async_item, run_async_node, run_chunk, run_node
from ._cancel import CancelToken
from ._context import Context, SharedState
from ._definition import digest
from ._durable import (
    CURRENT,
    CrashAtBodyStart,
    Durable,
    crash_planned,
    crash_point,
)
from ._events import EventSink, Listener
from ._journal import Journal
from ._middleware import CallInfo, split_middleware
from ._plan import Plan, PlanNode
from ._progress import progress_listener
from ._result import RunResult
from ._scheduler import (
    MISS,
    CancelTasks,
    Command,
    Failure,
    RunFallback,
    RunItems,
    RunNode,
    Scheduler,
    runs_async,
)
from .exceptions import DefinitionError, RunLocked
from .executors import ExecutorChoice
from .store._serialize import SerializationError

__all__ = ["AsyncDriver", "SyncDriver"]

_CANCEL: Any = object()  # queued by a CancelToken for the sync face
_log = logging.getLogger("flowdsl")
_BACKOFF_CRASH = crash_planned("backoff_sleep")  # a test's crash point is set


def _both(first: Listener, second: Listener) -> Listener:
    def listener(event: Any) -> None:
        first(event)
        second(event)

    return listener


class _Driver:
    """What both faces share: command dispatch and outcome settling."""

    #: Whether the scheduler's thread may run a lone sync command itself.
    inline_alone = False

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
        cancel: CancelToken | None = None,
        middleware: Sequence[Any] | None = None,
        progress: Any = False,
        durable: Durable | None = None,
    ) -> None:
        if crash_planned("body_start"):
            middleware = [CrashAtBodyStart(), *(middleware or ())]
        self._sync_layers, self._async_layers = split_middleware(middleware)
        if resume is not None:
            inputs, run_id = resume[0]["inputs"], resume[0]["run_id"]
        run_id = run_id if run_id is not None else uuid.uuid4().hex
        bar = progress_listener(progress)
        if bar is not None:
            on_event = bar if on_event is None else _both(on_event, bar)
        self._durable = durable
        watched = on_event is not None  # by the caller or a progress bar
        journal = None
        first_seq = 1
        if durable is not None:
            journal = Journal(
                durable.store.serializer, rows=durable.rows, seconds=durable.seconds
            )
            on_event = (
                # The journal first: a failing listener must not cost a row.
                journal.event if on_event is None else _both(journal.event, on_event)
            )
            first_seq = durable.first_seq
        self._journal = journal
        self._closed = False  # the run's final status is recorded
        self._emit = (
            None if on_event is None else EventSink(run_id, on_event, first_seq)
        )
        self.state = SharedState(run_id, self._emit)
        self.scheduler = Scheduler(
            plan,
            inputs,
            run_id=run_id,
            concurrency=concurrency,
            sync_slots=executor.slots,
            inline_sync=executor.kind == "inline",
            inline_alone=self.inline_alone and executor.kind in ("threads", "custom"),
            make_context=lambda node_id: Context(self.state, node_id),
            emit=self._emit,
            batch_events=watched,
            journal=journal,
            cache=None if durable is None else self._cache_lookup,
        )
        if resume is not None:
            state, events = resume
            self.scheduler.resume_from(state, events)
            self.state.values.update(state.get("context", {}))
        self._token = cancel
        self._choice = executor
        self._executor: Executor | None = executor.given
        self._owned_executor: Executor | None = None
        self._tasks: dict[int, tuple[bool, Any]] = {}  # token -> (async?, future)
        self._started = time.perf_counter()
        self._cancelling = False
        self._inline: RunNode | RunItems | RunFallback | None = None  # running here

    # -- durable runs -------------------------------------------------------------

    def _cache_lookup(
        self, n: PlanNode, kwargs: Mapping[str, Any]
    ) -> tuple[str | None, Any]:
        """The scheduler's cache: `(key, value)`, value `MISS` if not cached."""
        assert self._durable is not None
        store = self._durable.store
        user_key = n.node.options.cache_key
        if user_key is not None:
            try:
                arguments = str(user_key(**kwargs)).encode()
            except Exception as exc:
                raise DefinitionError(
                    f"node {n.id!r}: its cache_key raised {exc!r}; make it return "
                    "a str for any arguments the node can get."
                ) from exc
        else:
            try:
                arguments = store.serializer.dumps(dict(kwargs), node_id=n.id)
            except SerializationError:
                _log.info("node %r: arguments cannot be serialized; not cached", n.id)
                return None, MISS
        key = digest(self._durable.codes[n.id].encode(), arguments)
        blob = store.cache_get(key)
        return key, MISS if blob is None else store.serializer.loads(blob)

    def _commit(self, status: str | None = None, state: bytes | None = None) -> None:
        """Write what the journal holds, in one transaction."""
        durable, journal = self._durable, self._journal
        assert durable is not None
        assert journal is not None
        outcomes, events, cache, batch = journal.take()
        crash_point("pre_commit")
        if batch:
            crash_point("batch_flush")
        store = durable.store
        store.commit(
            durable.run_id, durable.owner, time.time(), outcomes, events,
            status=status, state=state,
        )  # fmt: skip
        crash_point("post_commit")
        for entry in cache:
            store.cache_put(entry)

    @contextlib.contextmanager
    def _recording(self, cancel: Callable[[], None]) -> Iterator[Callable[[], None]]:
        """The span of a run, for both faces: subflows see the run's store,
        its lease is kept (a lost lease calls `cancel`), and an exception
        leaving the run still records how it ended.

        Yields:
            Stops the lease renewals (before the final commit).
        """
        current = CURRENT.set(self._durable)
        stop_lease = self._keep_lease(cancel)
        try:
            yield stop_lease
        except BaseException:
            stop_lease()
            self._abandon()
            raise
        finally:
            stop_lease()
            CURRENT.reset(current)

    def _keep_lease(self, lost: Callable[[], Any]) -> Callable[[], None]:
        """Renew the run's lease every third of its length until stopped.

        A thread of its own: a node running on the scheduler's thread (inline,
        or alone in a sync run) must not let the lease lapse. If the lease is
        lost to another process anyway, `lost` is called (it cancels the run)
        and the final commit raises `RunLocked`.

        Returns:
            Stops the renewals (and waits for the thread).
        """
        durable = self._durable
        lease = None if durable is None else durable.store.lease
        if durable is None or lease is None or not durable.renew:
            return lambda: None
        store, run_id, owner = durable.store, durable.run_id, durable.owner
        stop = threading.Event()

        def renew() -> None:
            renewed = time.monotonic()
            while not stop.wait(lease / 3):
                try:
                    store.commit(run_id, owner, time.time())
                    renewed = time.monotonic()
                except RunLocked:
                    _log.error("run %r: lost its lease to another process", run_id)
                    lost()
                    return
                except Exception:  # the store failed this once: try again
                    if time.monotonic() - renewed >= lease:
                        _log.exception("run %r: could not renew its lease", run_id)
                        lost()
                        return
                    _log.warning(
                        "run %r: renewing its lease failed; retrying",
                        run_id,
                        exc_info=True,
                    )

        thread = threading.Thread(target=renew, name="flowdsl-lease", daemon=True)
        thread.start()

        def stop_renewing() -> None:
            stop.set()
            thread.join()

        return stop_renewing

    def _before_waiting(self) -> None:
        """The face is about to wait: the `backoff_sleep` crash point."""
        if _BACKOFF_CRASH and self.scheduler.retrying:
            crash_point("backoff_sleep")

    def _maybe_commit(self, idle: bool = True) -> None:
        if self._journal is not None and self.scheduler.commit_due(
            time.perf_counter(), idle
        ):
            self._commit()

    def _final_commit(self, result: RunResult) -> None:
        """Record how the run ended, with what a resume needs of its state."""
        assert self._durable is not None
        serializer = self._durable.store.serializer
        state = {k: result.state[k] for k in ("wakes", "context")}
        try:
            blob = serializer.dumps(state, node_id="<run state>")
        except SerializationError as exc:
            _log.warning("run %r: context not recorded: %s", result.run_id, exc)
            state["context"] = {}
            blob = serializer.dumps(state, node_id="<run state>")
        self._closed = True
        try:
            self._commit(result.status, blob)
        except BaseException:
            self._give_up(result.status)
            raise

    def _abandon(self) -> None:
        """The run stops on an exception: record what the journal holds and
        how the run ended, and give up its lease, as far as the store allows."""
        if self._durable is None or self._closed:
            return
        self._closed = True
        status = "cancelled" if self._cancelling else "failed"
        try:
            self._commit(status)
        except Exception:
            self._give_up(status)

    def _give_up(self, status: str) -> None:
        """A final commit failed: record the status alone, or at least free
        the lease, so that the run can be resumed at once."""
        durable = self._durable
        assert durable is not None
        _log.warning("run %r: could not record its end", durable.run_id)
        store, run_id, owner = durable.store, durable.run_id, durable.owner
        try:
            store.commit(run_id, owner, time.time(), status=status)
        except Exception:
            with contextlib.suppress(Exception):
                store.release(run_id, owner)

    # -- carrying out commands --------------------------------------------------

    def _dispatch(self, commands: list[Command]) -> None:
        """Carry out commands; inline ones run here, and so do their follow-ups."""
        todo = deque(commands)
        while todo:
            command = todo.popleft()
            if isinstance(command, CancelTasks):
                for token in command.tokens:
                    self._stop(token)
            elif command.inline:
                todo.extend(self._run_inline(command))
                if self._journal is not None:
                    self._maybe_commit()
            else:
                self._submit(command)

    def _submit(self, command: RunNode | RunItems | RunFallback) -> None:
        """Start a command: async ones on the event loop, sync ones on the
        executor; its outcome comes back through `_watch`."""
        if runs_async(command):
            future: Any = self._start_task(self._coroutine(command))
        else:
            fn, args = self._sync_call(command)
            future = self._pool().submit(fn, *args)
        self._track(command, future)  # the executor's own future, to stop it
        self._watch(command, future)

    def _start_task(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        """Run a coroutine on the face's event loop; its future."""
        raise NotImplementedError

    def _watch(self, command: RunNode | RunItems | RunFallback, future: Any) -> None:
        """Have the outcome of `future` fed back to the scheduler."""
        raise NotImplementedError

    def _stop(self, token: int) -> None:
        """Cancel an async command; stop a sync one if the executor can."""
        entry = self._tasks.get(token)
        if entry is None:
            return
        is_async, future = entry
        terminate = getattr(self._executor, "terminate", None)
        if is_async:
            future.cancel()
        elif terminate is not None:
            terminate(future)

    def _track(self, command: RunNode | RunItems | RunFallback, future: Any) -> None:
        """Remember a submitted command until its outcome is settled."""
        self._tasks[command.token] = (runs_async(command), future)

    def _run_inline(self, command: RunNode | RunItems | RunFallback) -> list[Command]:
        fn, args = self._sync_call(command)
        self._inline = command  # left set if a KeyboardInterrupt escapes
        try:
            value = fn(*args)
        except Exception as exc:
            self._inline = None
            if self.state.cancelled.is_set():  # perhaps raised because of it
                self._cancel()
            return self._feed_error(command, exc)
        self._inline = None
        if self.state.cancelled.is_set():  # cancelled while it ran: say so first
            self._cancel()
        return self._feed(command, value)

    def _context(self, node: PlanNode, index: int | None, attempt: int) -> Context:
        return Context(self.state, node.id, index, attempt)

    def _kwargs(self, command: RunNode | RunItems, index: int | None) -> dict[str, Any]:
        node = command.node
        if not node.context_params:
            return command.kwargs
        context = self._context(node, index, command.attempt)
        return {**command.kwargs, **dict.fromkeys(node.context_params, context)}

    def _fallback_args(self, command: RunFallback) -> tuple[Any, ...]:
        node = command.node
        if node.fallback_context:
            return (command.exception, self._context(node, command.item_index, 1))
        return (command.exception,)

    def _sync_call(
        self, command: RunNode | RunItems | RunFallback
    ) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        if isinstance(command, RunFallback):
            return command.node.fallback, self._fallback_args(command)
        info = self._info(command)
        if isinstance(command, RunNode):
            kwargs = self._kwargs(command, None)
            return run_node, (command.node.node, kwargs, self._sync_layers, info)
        per_item: dict[str, Any] | list[Any] = command.kwargs
        if command.node.context_params:
            per_item = [
                self._kwargs(command, command.start + i)
                for i in range(len(command.items))
            ]
        return run_chunk, (
            command.node.node,
            command.items,
            per_item,
            command.stop_on_error,
            self._sync_layers,
            info,
        )

    def _coroutine(
        self, command: RunNode | RunItems | RunFallback
    ) -> Coroutine[Any, Any, Any]:
        node = command.node
        result: Coroutine[Any, Any, Any]
        if isinstance(command, RunFallback):
            result = node.fallback(*self._fallback_args(command))
        elif isinstance(command, RunNode):
            kwargs = self._kwargs(command, None)
            if self._async_layers:
                info = self._info(command)
                result = run_async_node(node.node, kwargs, self._async_layers, info)
            else:
                result = node.node.fn(**kwargs)
        else:
            (item,) = command.items
            kwargs = self._kwargs(command, command.start)
            info = self._info(command)
            result = run_async_item(node.node, item, kwargs, self._async_layers, info)
        return result

    def _info(self, command: RunNode | RunItems) -> CallInfo | None:
        if not (self._sync_layers or self._async_layers):
            return None
        index = command.start if isinstance(command, RunItems) else None
        return CallInfo(self.state.run_id, command.node.id, index, command.attempt)

    # -- outcomes back to the scheduler ------------------------------------------

    def _feed(
        self, command: RunNode | RunItems | RunFallback, value: Any
    ) -> list[Command]:
        now = time.perf_counter()
        if isinstance(command, RunNode):
            return self.scheduler.node_done(command, value, now)
        if isinstance(command, RunFallback):
            return self.scheduler.fallback_done(command, value, now)
        return self.scheduler.items_done(command, value, now)

    def _feed_error(
        self, command: RunNode | RunItems | RunFallback, exc: BaseException
    ) -> list[Command]:
        now = time.perf_counter()
        if isinstance(command, RunNode):
            return self.scheduler.node_failed(command, exc, now)
        if isinstance(command, RunFallback):
            return self.scheduler.fallback_failed(command, exc, now)
        outcomes = [Failure(exc)] * len(command.items)
        return self.scheduler.items_done(command, outcomes, now)

    def _settle(
        self, command: RunNode | RunItems | RunFallback, future: Any
    ) -> list[Command]:
        """Turn a finished future into the scheduler's next commands."""
        self._tasks.pop(command.token, None)
        if future.cancelled():
            return self._feed_error(command, asyncio.CancelledError())
        exc = future.exception()
        if exc is None:
            return self._feed(command, future.result())
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise exc  # never a node failure
        return self._feed_error(command, exc)

    # -- the run's edges ---------------------------------------------------------

    def _start(self) -> None:
        if self._emit is not None:
            self._emit("run_start", data={"flow_id": self.scheduler.plan.flow_id})
        if self.state.cancelled.is_set():  # a token cancelled before the run
            self._cancel()
        self._dispatch(self.scheduler.start(time.perf_counter(), time.time()))

    def _tick(self) -> None:
        self._dispatch(self.scheduler.tick(time.perf_counter()))

    def _cancel(self) -> None:
        """Stop the run: async nodes are cancelled, sync ones told to stop."""
        if not self._cancelling:
            self._cancelling = True
            self.state.cancelled.set()
            self._dispatch(self.scheduler.cancel(time.perf_counter()))

    def _result(self) -> RunResult:
        duration = time.perf_counter() - self._started
        with self.state.lock:
            result = self.scheduler.result(duration, self.state.values)
        if self._emit is not None:
            self._emit("run_finish", data={"status": result.status})
        if self._durable is not None:
            self._final_commit(result)
        level = logging.WARNING if result.status == "failed" else logging.INFO
        if _log.isEnabledFor(level):
            _log.log(
                level,
                "flow %r run %r %s in %.3f s%s",
                result.flow_id,
                result.run_id,
                result.status,
                duration,
                "".join(f"; {e.describe()}" for e in result.errors[:3]),
            )
        return result

    def _pool(self) -> Executor:
        if self._executor is None:
            self._executor = self._owned_executor = self._choice.open()
            assert self._executor is not None
        return self._executor

    def _close_pool(self) -> None:
        if self._owned_executor is not None:
            # Threads still running after a timeout or a cancel's grace
            # period are left to finish on their own rather than block.
            wait = self.scheduler.finished and not self.scheduler.abandoned
            self._owned_executor.shutdown(wait=wait)


class SyncDriver(_Driver):
    """The synchronous face: blocks the calling thread until the run ends.

    Sync nodes run on the executor (or inline); async nodes run on a private
    event loop in a portal thread, started only when needed, so `run()` also
    works where the calling thread already runs a loop.
    """

    inline_alone = True  # the calling thread would only wait meanwhile

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._done: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def run(self) -> RunResult:

        def wake() -> None:  # on whichever thread cancels
            self.state.cancelled.set()  # seen at once, even by inline nodes
            self._done.put(_CANCEL)

        remove = None if self._token is None else self._token.on_cancel(wake)
        interrupted: KeyboardInterrupt | None = None
        try:
            with self._recording(wake):
                try:
                    self._start()
                    self._wait()
                except KeyboardInterrupt as exc:  # Ctrl-C: cancel, then re-raise
                    interrupted = exc
                    self._cancel()
                    if self._inline is not None:  # interrupted inside a node body
                        self._dispatch(self._feed_error(self._inline, exc))
                    self._wait()
        finally:
            if remove is not None:
                remove()
            self._close_pool()
            self._close_portal()
        if interrupted is not None:
            interrupted.result = self._result()  # type: ignore[attr-defined]
            raise interrupted
        return self._result()

    def _wait(self) -> None:
        """Act on outcomes (and the scheduler's timers) until the run is over."""
        while not self.scheduler.finished:
            if self._cancelling and not self._tasks and self._done.empty():
                # Cancelled with nothing left to report back: a Ctrl-C that
                # landed between two steps may have cut an outcome short.
                return
            self._step()

    def _step(self) -> None:
        """Wait for one outcome (or the next timer) and act on it."""
        wakeup = self.scheduler.next_wakeup
        timeout = None if wakeup is None else max(0.0, wakeup - time.perf_counter())
        if _BACKOFF_CRASH:
            self._before_waiting()
        try:
            item = self._done.get(timeout=timeout)
        except queue.Empty:
            self._tick()
            self._maybe_commit()
            return
        if item is _CANCEL:
            self._cancel()
            return
        command, future = item
        self._dispatch(self._settle(command, future))
        if wakeup is not None and time.perf_counter() >= wakeup:
            self._tick()
        if self._journal is not None:
            self._maybe_commit(idle=self._done.empty())  # what finished meanwhile

    def _start_task(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._portal())

    def _watch(self, command: RunNode | RunItems | RunFallback, future: Any) -> None:
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
        loop = self._loop

        async def drain() -> None:  # cancelled tasks finish unwinding first
            tasks = [
                t for t in asyncio.all_tasks(loop) if t is not asyncio.current_task()
            ]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(drain(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join()
        loop.close()


class AsyncDriver(_Driver):
    """The asynchronous face: runs on the caller's event loop.

    Async nodes are tasks on that loop; sync nodes run on the executor (or
    inline). Completions arrive as callbacks on the loop, which feed the
    scheduler and dispatch what it answers. Cancelling the task awaiting
    `run()` cancels the run, then re-raises `CancelledError`.
    """

    async def run(self) -> RunResult:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._finished: asyncio.Future[None] = loop.create_future()
        self._timer: asyncio.TimerHandle | None = None
        self._commit_soon: asyncio.Handle | None = None

        def wake() -> None:  # on whichever thread cancels
            self.state.cancelled.set()
            loop.call_soon_threadsafe(self._guarded, self._cancel)

        remove = None if self._token is None else self._token.on_cancel(wake)
        try:
            with self._recording(wake) as stop_lease:
                self._start()
                self._after_dispatch()
                try:
                    await asyncio.shield(self._finished)
                except asyncio.CancelledError:
                    self._guarded(self._cancel)
                    with contextlib.suppress(asyncio.CancelledError):
                        await asyncio.shield(self._finished)  # the grace, at most
                    if self._durable is not None and self.scheduler.finished:
                        stop_lease()
                        self._result()  # records the cancelled run
                    raise
        finally:
            if remove is not None:
                remove()
            if self._timer is not None:
                self._timer.cancel()
            if self._commit_soon is not None:
                self._commit_soon.cancel()
            leftover = [f for a, f in self._tasks.values() if a and not f.done()]
            for task in leftover:  # after an internal error: leave nothing behind
                task.cancel()
            if leftover:
                await asyncio.gather(*leftover, return_exceptions=True)
            self._close_pool()
        return self._result()

    def _after_dispatch(self) -> None:
        """Finish, or keep a timer armed for the scheduler's next wakeup."""
        if self._journal is not None and self._commit_soon is None:
            if self.scheduler.commit_due(time.perf_counter()):
                # After the callbacks already queued: one commit for them all.
                self._commit_soon = self._loop.call_soon(self._group_commit)
            else:
                self._before_waiting()
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

    def _group_commit(self) -> None:
        self._commit_soon = None
        self._guarded(self._maybe_commit)

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

    def _start_task(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return self._loop.create_task(coroutine)

    def _watch(self, command: RunNode | RunItems | RunFallback, future: Any) -> None:
        if not isinstance(future, asyncio.Future):  # an executor's future
            future = asyncio.wrap_future(future)
        future.add_done_callback(functools.partial(self._on_done, command))

    def _on_done(
        self, command: RunNode | RunItems | RunFallback, future: asyncio.Future[Any]
    ) -> None:
        self._guarded(lambda: self._dispatch(self._settle(command, future)))
