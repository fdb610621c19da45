"""Where sync nodes run: inline, on threads, on processes, or any `Executor`.

Executors are plain `concurrent.futures.Executor`s, so users can pass their
own pools. Async nodes always run as tasks on an event loop.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import threading
import time
from collections import deque
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any, Callable, Literal, Union

import attrs

from .exceptions import DefinitionError

__all__ = [
    "ExecutorChoice",
    "ExecutorSpec",
    "ProcessPool",
    "default_workers",
    "resolve_executor",
]

#: What `run(executor=...)` accepts.
ExecutorSpec = Union[Literal["inline", "threads", "processes"], Executor, None]

# A user's executor whose size cannot be read is given this many commands at
# once, so that a huge batch is not queued into it all at once.
_UNKNOWN_POOL_SLOTS = 64


def default_workers() -> int:
    """The default pool size: the stdlib thread pool's own formula."""
    return min(32, (os.cpu_count() or 1) + 4)


@attrs.frozen
class ExecutorChoice:
    """A resolved `executor=` argument.

    Attributes:
        kind: `"inline"`, `"threads"`, `"processes"` or `"custom"`.
        slots: How many sync commands may be in flight at once.
        given: The user's own executor, for `"custom"`.
    """

    kind: Literal["inline", "threads", "processes", "custom"]
    slots: int | None
    given: Executor | None = None

    def open(self) -> Executor | None:
        """A new pool for one run (None for inline or a user's executor)."""
        if self.kind == "threads":
            return ThreadPoolExecutor(self.slots, thread_name_prefix="flowdsl")
        if self.kind == "processes":
            return ProcessPool(self.slots)
        return None


def resolve_executor(spec: object) -> ExecutorChoice:
    """Interpret the `executor=` argument of `run()`.

    Raises:
        DefinitionError: `spec` is not a known name nor an `Executor`.
    """
    if spec is None or spec == "threads":
        return ExecutorChoice("threads", default_workers())
    if spec == "inline":
        return ExecutorChoice("inline", 1)
    if spec == "processes":
        return ExecutorChoice("processes", os.cpu_count() or 1)
    if isinstance(spec, Executor):
        slots = getattr(spec, "_max_workers", None)
        if not isinstance(slots, int) or slots < 1:
            slots = _UNKNOWN_POOL_SLOTS
        return ExecutorChoice("custom", slots, spec)
    raise DefinitionError(
        f"executor must be 'inline', 'threads', 'processes' or a "
        f"concurrent.futures.Executor, got {spec!r}."
    )


def _worker(conn: Any, parent_pid: int) -> None:  # pragma: no cover - a child
    """A worker process: run each call it receives, send back the outcome.

    It ignores Ctrl-C (the parent decides what a Ctrl-C means) and exits when
    its parent is gone, even if a pipe end stays open somewhere.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        try:
            while not conn.poll(0.5):
                if os.getppid() != parent_pid:
                    return
            task = conn.recv_bytes()
        except (EOFError, OSError):
            return
        if not task:
            return
        try:
            fn, args = pickle.loads(task)
            outcome: tuple[str, Any] = ("ok", fn(*args))
        except BaseException as exc:
            outcome = ("err", exc)
        try:
            data = pickle.dumps(outcome)
        except Exception as exc:  # an outcome that cannot make the trip
            problem = RuntimeError(
                f"the outcome cannot be sent back: {exc!r}; it was {outcome[1]!r}"
            )
            data = pickle.dumps(("err", problem))
        try:
            conn.send_bytes(data)
        except OSError:
            return


class ProcessPool(Executor):
    """A process pool whose running calls can be stopped one by one.

    `concurrent.futures.ProcessPoolExecutor` cannot stop a call that is
    running; this pool can: `terminate(future)` kills the worker process
    running it and starts a fresh one. flowdsl uses it for
    `executor="processes"`, so a timed-out attempt really stops.

    Args:
        max_workers: Worker processes; the number of CPUs by default.
    """

    def __init__(self, max_workers: int | None = None) -> None:
        self._max_workers = max_workers or os.cpu_count() or 1
        self._context = multiprocessing.get_context()
        self._lock = threading.Lock()
        self._idle: list[tuple[Any, Any]] = []  # (process, connection)
        self._busy: dict[Any, tuple[Any, Any, Future[Any]]] = {}  # conn -> ...
        self._pending: deque[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]]]
        self._pending = deque()
        self._shutdown = False
        self._wake_r, self._wake_w = self._context.Pipe(duplex=False)
        self._started = 0
        self._collector = threading.Thread(
            target=self._collect, name="flowdsl-process-pool", daemon=True
        )
        self._collector.start()

    def submit(
        self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> Future[Any]:
        """Run `fn(*args)` in a worker process."""
        if kwargs:
            fn = functools.partial(fn, **kwargs)
        future: Future[Any] = Future()
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot submit to a pool that was shut down")
            self._pending.append((future, fn, args))
            self._dispatch()
        return future

    def terminate(self, future: Future[Any]) -> bool:
        """Kill the worker running `future`, fail the future, start a new worker.

        Returns:
            Whether a running call was stopped.
        """
        with self._lock:
            found = next(
                ((c, p) for c, (p, _, f) in self._busy.items() if f is future), None
            )
            if found is None:
                return False
            conn, process = found
            del self._busy[conn]
        process.kill()
        process.join()
        conn.close()
        future.set_exception(TimeoutError("the worker process was terminated"))
        with self._lock:
            self._started -= 1
            self._dispatch()
        self._wake_w.send(None)
        return True

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop the workers; running calls finish first when `wait` is true."""
        with self._lock:
            self._shutdown = True
            if cancel_futures or not wait:
                for future, _, _ in self._pending:
                    future.cancel()
                self._pending.clear()
        if wait:
            while True:
                with self._lock:
                    if not self._busy and not self._pending:
                        break
                time.sleep(0.005)
        with self._lock:
            workers = list(self._idle) + [(p, c) for c, (p, _, _) in self._busy.items()]
            self._idle.clear()
        for _, conn in workers:
            with contextlib.suppress(OSError):
                conn.send_bytes(b"")  # asks the worker to exit
        deadline = time.monotonic() + (0.5 if wait else 0.0)
        for process, conn in workers:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()
            conn.close()
        self._wake_w.send(None)
        self._collector.join()

    def _dispatch(self) -> None:
        """Hand pending calls to idle workers, starting workers as needed."""
        while self._pending:
            if not self._idle and self._started < self._max_workers:
                parent, child = self._context.Pipe()
                process = self._context.Process(
                    target=_worker, args=(child, os.getpid()), daemon=True
                )
                process.start()
                child.close()
                self._idle.append((process, parent))
                self._started += 1
            if not self._idle:
                return
            future, fn, args = self._pending[0]
            try:
                task = pickle.dumps((fn, args))
            except Exception as exc:  # the call cannot be pickled
                self._pending.popleft()
                if future.set_running_or_notify_cancel():
                    future.set_exception(exc)
                continue
            process, conn = self._idle.pop()
            try:
                conn.send_bytes(task)
            except OSError:  # the worker died while idle: replace it, try again
                conn.close()
                process.join(0)
                self._started -= 1
                continue
            self._pending.popleft()
            if not future.set_running_or_notify_cancel():
                # Cancelled meanwhile: the worker still runs it; ignore the result.
                future = Future()
                future.set_running_or_notify_cancel()
            self._busy[conn] = (process, conn, future)
        if self._busy:
            self._wake_w.send(None)

    def _collect(self) -> None:
        """Read outcomes from busy workers (a thread of its own)."""
        while True:
            with self._lock:
                conns = list(self._busy)
                done = self._shutdown and not self._busy
            if done:
                return
            try:
                ready = multiprocessing.connection.wait(
                    [*conns, self._wake_r], timeout=0.5
                )
            except (OSError, ValueError):  # a connection closed by terminate()
                continue
            for conn in ready:
                if conn is self._wake_r:
                    with contextlib.suppress(EOFError, OSError):
                        while self._wake_r.poll():
                            self._wake_r.recv()
                    continue
                with self._lock:
                    entry = self._busy.pop(conn, None)
                if entry is None:
                    continue  # terminated meanwhile
                process, connection, future = entry
                value: Any
                try:
                    data = connection.recv_bytes()
                except (EOFError, OSError):
                    kind, value = "err", RuntimeError("a worker process died")
                    process.join()
                    with self._lock:
                        self._started -= 1
                else:
                    with self._lock:
                        self._idle.append((process, connection))
                    try:
                        kind, value = pickle.loads(data)
                    except Exception as exc:  # it pickled, but does not unpickle
                        kind, value = (
                            "err",
                            RuntimeError(
                                f"the outcome cannot be sent back: it does not load "
                                f"here ({exc!r})"
                            ),
                        )
                if kind == "ok":
                    future.set_result(value)
                else:
                    future.set_exception(value)
                with self._lock:
                    self._dispatch()
