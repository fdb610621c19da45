"""flowdsl's process pool: runs calls in workers, and can stop one call."""

from __future__ import annotations

import os
import pickle
import signal
import threading
import time

import pytest

import flowdsl as fd
from flowdsl.executors import ProcessPool, resolve_executor


def square(x: int) -> int:
    return x * x


def fail(message: str) -> None:
    raise ValueError(message)


class Unloadable(Exception):
    """Pickles, but unpickling calls __init__ with too few arguments."""

    def __init__(self, first: str, second: str) -> None:
        super().__init__(first)


def make_unloadable() -> Unloadable:
    return Unloadable("a", "b")


def make_lock() -> threading.Lock:
    return threading.Lock()


def nap(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


class TestProcessPool:
    """A `concurrent.futures.Executor` whose running calls can be terminated."""

    def test_results_and_errors_come_back(self) -> None:
        pool = ProcessPool(2)
        try:
            futures = [pool.submit(square, i) for i in range(10)]
            assert [i * i for i in range(10)] == [f.result(10) for f in futures]
            with pytest.raises(ValueError, match="boom"):
                pool.submit(fail, "boom").result(10)
        finally:
            pool.shutdown()

    def test_terminate_stops_one_call_and_the_pool_goes_on(self) -> None:
        pool = ProcessPool(1)
        try:
            first_worker = pool.submit(os.getpid).result(10)
            stuck = pool.submit(nap, 10)
            time.sleep(0.2)  # let it start
            started = time.perf_counter()
            assert pool.terminate(stuck)
            with pytest.raises(TimeoutError):
                stuck.result(1)
            assert time.perf_counter() - started < 1
            with pytest.raises(ProcessLookupError):
                os.kill(first_worker, 0)  # that worker is gone...
            assert first_worker != pool.submit(nap, 0).result(10)  # ...replaced
            assert not pool.terminate(stuck)  # nothing left to stop
        finally:
            pool.shutdown()

    def test_a_worker_that_died_idle_is_replaced(self) -> None:
        pool = ProcessPool(1)
        try:
            worker = pool.submit(os.getpid).result(10)
            os.kill(worker, signal.SIGKILL)
            time.sleep(0.1)
            assert 4 == pool.submit(abs, -4).result(10)
        finally:
            pool.shutdown()

    def test_outcomes_that_cannot_travel_fail_cleanly(self) -> None:
        pool = ProcessPool(1)
        try:
            with pytest.raises(RuntimeError, match="cannot be sent back"):
                pool.submit(make_lock).result(10)
            # The wording differs between Pythons; the kind of error does not.
            with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
                pool.submit(square, lambda: 1).result(10)
            assert 9 == pool.submit(square, 3).result(10)  # the pool goes on
            with pytest.raises(RuntimeError, match="does not load here"):
                pool.submit(make_unloadable).result(10)
            assert 16 == pool.submit(square, 4).result(10)
        finally:
            pool.shutdown()

    def test_flowdsl_errors_survive_the_trip(self) -> None:
        for error in [
            fd.BlueprintError("f", ["a problem"]),
            fd.MissingInputError("f", {"x": ("node",)}),
            fd.NodeTimeout("n", 0.2, 3),
            fd.LoopLimitExceeded("loop", 5),
        ]:
            assert str(error) == str(pickle.loads(pickle.dumps(error)))

    def test_calls_queue_beyond_the_workers(self) -> None:
        pool = ProcessPool(2)
        try:
            pids = {f.result(10) for f in [pool.submit(nap, 0.05) for _ in range(6)]}
            assert 1 <= len(pids) <= 2
        finally:
            pool.shutdown()

    def test_no_submit_after_shutdown(self) -> None:
        pool = ProcessPool(1)
        pool.shutdown()
        with pytest.raises(RuntimeError, match="shut down"):
            pool.submit(square, 2)

    def test_processes_choice_opens_this_pool(self) -> None:
        choice = resolve_executor("processes")
        pool = choice.open()
        try:
            assert isinstance(pool, ProcessPool)
        finally:
            assert pool is not None
            pool.shutdown()
