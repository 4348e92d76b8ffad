"""Overload: does the service shed instead of queueing without bound?

Setup as ``bench_serving`` (a real export with untrained weights, the default
sequential + co-engagement stack, features in SQLite). ``rtp serve`` runs with
``limits: {workers: W, max_waiting: Q}``. Measured in one run:

* ``unloaded``: closed loop at concurrency 1 (the reference p99);
* ``capacity``: closed loop at min(16, workers + max_waiting) connections (answered
  requests per second it sustains, ``ok_rps``);
* ``overload``: an open loop offering ``--factor`` × capacity for ``--seconds``:
  requests start on schedule whether or not earlier ones finished (a new
  connection when every open one is busy). Reported: offered and achieved rates,
  the share shed (503 ``overloaded``), other errors, and p50/p99 of the accepted
  requests, with their ratio to the unloaded p99.

Prints one JSON object per measure. Run: ``python -m benchmarks.bench_overload``.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.bench_serving import Connection, K, _pct, load, prepare, service
from benchmarks.common import emit, log


async def open_loop(port: int, rate: float, seconds: float, users: int) -> dict[str, Any]:
    """Requests at ``rate`` per second for ``seconds``, on schedule."""
    idle: list[Connection] = []
    accepted: list[float] = []
    counts = {"ok": 0, "shed": 0, "other": 0}
    opened = 0

    async def one(n: int) -> None:
        nonlocal opened
        connection = idle.pop() if idle else None
        if connection is None:
            connection = await Connection.open(port)
            opened += 1
        started = time.perf_counter()
        try:
            status, body = await connection.get(
                f"/v1/recommendations?user_id=user-{n % users}&k={K}"
            )
        except (OSError, asyncio.IncompleteReadError):
            counts["other"] += 1
            return
        if status == 200:
            counts["ok"] += 1
            accepted.append((time.perf_counter() - started) * 1000)
        elif status == 503 and b"overloaded" in body:
            counts["shed"] += 1
        else:
            counts["other"] += 1
        idle.append(connection)

    tasks = []
    started = time.perf_counter()
    n = 0
    while (now := time.perf_counter() - started) < seconds:
        due = n / rate
        if due > now:
            await asyncio.sleep(due - now)
        tasks.append(asyncio.create_task(one(n)))
        n += 1
    sent_s = time.perf_counter() - started
    await asyncio.gather(*tasks)
    for connection in idle:
        connection.close()
    total = sum(counts.values())
    return {
        "offered_rps": rate,
        "sent_rps": n / sent_s,
        "requests": total,
        "shed_share": counts["shed"] / max(total, 1),
        "other_errors": counts["other"],
        "accepted": counts["ok"],
        "accepted_p50_ms": _pct(accepted, 50) if accepted else None,
        "accepted_p99_ms": _pct(accepted, 99) if accepted else None,
        "connections_opened": opened,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_overload")
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--workers", type=int, default=8, help="limits.workers (threads)")
    parser.add_argument("--max-waiting", type=int, default=16, help="limits.max_waiting")
    parser.add_argument("--factor", type=float, default=4.0, help="offered load / capacity")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="rtp-overload-") as tmp:
        models, store_yaml = prepare(Path(tmp), args.items, args.users)
        limits = f"limits: {{workers: {args.workers}, max_waiting: {args.max_waiting}}}\n"
        with service(models, store_yaml, "inprocess", None, limits) as (port, _):
            log("unloaded and capacity ...")
            asyncio.run(load(port, 1, 100, args.users))  # warm-up
            unloaded = asyncio.run(load(port, 1, 300, args.users))
            # Capacity: as many connections as the limits admit, answered requests only.
            admitted = min(16, args.workers + args.max_waiting)
            capacity = asyncio.run(load(port, admitted, 1000, args.users))
            capacity["ok_rps"] = capacity["rps"] * (1 - capacity["errors"] / 1000)
            emit("overload_unloaded", **unloaded)
            emit("overload_capacity", **capacity)
            rate = args.factor * capacity["ok_rps"]
            log(f"open loop at {rate:.0f} requests/s for {args.seconds:.0f} s ...")
            result = asyncio.run(open_loop(port, rate, args.seconds, args.users))
            ratio = (
                result["accepted_p99_ms"] / unloaded["p99_ms"]
                if result["accepted_p99_ms"]
                else None
            )
            emit(
                "overload",
                factor=args.factor,
                workers=args.workers,
                max_waiting=args.max_waiting,
                **result,
                accepted_p99_over_unloaded_p99=ratio,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
