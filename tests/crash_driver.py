"""The child process of the crash tests: runs or resumes one flow in a store.

    python -m tests.crash_driver FLOW DB RUN_ID [options]

FLOW names a flow of `tests.crash_flows.FLOWS`; DB is a SQLite file. With
`FLOWDSL_CRASH=point:n` in the environment, flowdsl kills this process at
that point. The driver prints one line per step, flushed at once:

    WAITING            with --wait-go: imported, waiting for a line on stdin
    READY <pid>        about to call the engine
    RESULT <json>      the run returned: {"status", "outputs", "locked"}
    LOCKED <json>      RunLocked: {"latency" (s from the call), "expires"}

and exits 0 after RESULT, 3 after LOCKED.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from typing import Any

import flowdsl as fd
from flowdsl.store import SqliteStore

from .crash_flows import FLOWS

LOCKED_EXIT = 3


def say(tag: str, payload: Any) -> None:
    sys.stdout.write(f"{tag} {json.dumps(payload)}\n")
    sys.stdout.flush()


def call(args: argparse.Namespace, store: SqliteStore) -> fd.RunResult:
    """One call into the engine, on the face the arguments ask for."""
    flow = FLOWS[args.flow]
    options: dict[str, Any] = {"store": store, "check": False}
    if args.concurrency is not None:
        options["concurrency"] = args.concurrency
    if args.mode == "run":
        inputs = json.loads(args.inputs)
        if args.face == "sync":
            return flow.run(inputs, run_id=args.run_id, **options)
        return asyncio.run(flow.arun(inputs, run_id=args.run_id, **options))
    if args.mode == "fd-resume":
        assert args.face == "sync", "fd.resume is the sync face"
        return fd.resume(args.run_id, **options)
    if args.face == "sync":
        return flow.resume(args.run_id, **options)
    return asyncio.run(flow.aresume(args.run_id, **options))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.crash_driver")
    parser.add_argument("flow", choices=sorted(FLOWS))
    parser.add_argument("db")
    parser.add_argument("run_id")
    parser.add_argument("--face", choices=("sync", "async"), default="sync")
    parser.add_argument("--mode", choices=("run", "resume", "fd-resume"), default="run")
    parser.add_argument("--inputs", default="{}", help="flow inputs as JSON")
    parser.add_argument("--lease", type=float, default=30.0)
    parser.add_argument("--concurrency", type=int, default=None)
    parser.add_argument(
        "--wait-go", action="store_true", help='wait for "go" on stdin first'
    )
    parser.add_argument(
        "--retry-locked",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="on RunLocked, try again for up to this long",
    )
    args = parser.parse_args(argv)
    store = SqliteStore(args.db, lease=args.lease)
    try:
        if args.wait_go:
            sys.stdout.write("WAITING\n")
            sys.stdout.flush()
            sys.stdin.readline()
        say("READY", os.getpid())
        deadline = time.monotonic() + args.retry_locked
        locked = 0
        while True:
            started = time.perf_counter()
            try:
                result = call(args, store)
            except fd.RunLocked as exc:
                latency = time.perf_counter() - started
                if time.monotonic() < deadline:
                    locked += 1
                    time.sleep(0.01)
                    continue
                say("LOCKED", {"latency": latency, "expires": exc.expires})
                return LOCKED_EXIT
            break
        outputs = dict(result.outputs)
        say("RESULT", {"status": result.status, "outputs": outputs, "locked": locked})
        return 0
    finally:
        store.close()


if __name__ == "__main__":
    sys.exit(main())
