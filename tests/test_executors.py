"""flowdsl's process pool: runs calls in workers, and can stop one call."""

from __future__ import annotations

import os
import time

import pytest

from flowdsl.executors import ProcessPool, resolve_executor


def square(x: int) -> int:
    return x * x


def fail(message: str) -> None:
    raise ValueError(message)


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
            stuck = pool.submit(nap, 10)
            time.sleep(0.2)  # let it start
            started = time.perf_counter()
            assert pool.terminate(stuck)
            with pytest.raises(TimeoutError):
                stuck.result(1)
            assert time.perf_counter() - started < 1
            assert os.getpid() != pool.submit(nap, 0).result(10)  # a new worker
            assert not pool.terminate(stuck)  # nothing left to stop
        finally:
            pool.shutdown()

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
