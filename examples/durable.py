"""A run killed with SIGKILL halfway through a batch resumes where it stopped.

The script starts itself as a worker process that records a 200-item batch
in a SQLite store and is killed partway through, as a crash or a power cut
would stop it (FLOWDSL_CRASH makes flowdsl kill the process after its 20th
commit). Then this process resumes the run by its id: the items the worker
committed are not run again.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import flowdsl as fd

ran: list[int] = []  # the items this process ran


@fd.node
def orders(count: int) -> list[int]:
    return list(range(count))


@fd.batch(input=orders, output="totals", concurrency=4)
def price(order: int) -> int:
    time.sleep(0.002)  # a call to a pricing service
    ran.append(order)
    return order * 3


@fd.node
def revenue(totals: list[int]) -> int:
    return sum(totals)


flow = fd.Flow("revenue", [orders, price, revenue])


def worker(db: str) -> None:
    store = fd.SqliteStore(db, lease=0.5)  # a short lease, to resume sooner
    flow.run({"count": 200}, store=store, run_id="night-1")


def main() -> None:
    db = str(Path(tempfile.mkdtemp()) / "runs.db")
    env = {**os.environ, "FLOWDSL_CRASH": "post_commit:20"}
    killed = subprocess.run([sys.executable, __file__, db], env=env, check=False)
    print("worker exit code:", killed.returncode)  # -9: killed by SIGKILL

    store = fd.SqliteStore(db, lease=0.5)
    time.sleep(0.6)  # the dead worker's lease runs out; until then: RunLocked
    before = store.get_run("night-1")
    recorded = [o for o in before.items("price") if o.status == "completed"]
    print("status after the kill:", before.record.status)
    print("items recorded before the kill:", len(recorded))

    result = flow.resume("night-1", store=store)
    print("status:", result.status, "revenue:", result["revenue"])
    print("items run by the resume:", len(ran))
    assert result["revenue"] == 3 * sum(range(200))
    assert len(ran) == 200 - len(recorded)  # nothing recorded ran again


if __name__ == "__main__":
    if len(sys.argv) > 1:
        worker(sys.argv[1])
    else:
        main()
