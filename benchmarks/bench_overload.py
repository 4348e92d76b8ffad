"""Overload: does the service shed instead of queueing without bound?

Setup as ``bench_serving`` (a real export with untrained weights, the default
sequential + co-engagement stack, features in SQLite). ``rtp serve`` runs with its
default ``limits`` unless ``--limits`` gives some. Each of ``--repeats`` rounds
measures, against the same server:

* ``unloaded``: closed loop at concurrency 1 (the reference p99);
* ``capacity``: the most answered (200) requests per second a closed loop sustains
  at 1, 2, 4 or 8 connections (``ok_rps``; shed requests do not count);
* ``overload``: an open loop offering ``--factor`` x that capacity for
  ``--seconds``: requests start on schedule whether or not earlier ones finished
  (a new connection when every open one is busy), and a shed request is not
  retried. Reported: offered and achieved rates, the share shed (503
  ``overloaded``), other errors, p50/p99 of the accepted requests and their ratio
  to the round's unloaded p99, and the CPU milliseconds per request of the service
  and of this client (both share the machine's cores);
* ``half_capacity``: the same open loop at half the capacity for half as long: what
  the limits shed, and the p99, when the service is not overloaded.

Prints one JSON object per round and one with the medians over the rounds.
Run: ``python -m benchmarks.bench_overload``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from benchmarks.bench_serving import Connection, K, _pct, cpu_s, load, prepare, service
from benchmarks.common import emit, log
from serving.config import LimitsConfig

# Reuse a keep-alive connection only if idle for less than this, seconds: uvicorn
# closes one idle for 5 s (``timeout_keep_alive``), which is no error of the service.
IDLE_S = 4.0


async def open_loop(port: int, rate: float, seconds: float, users: int) -> dict[str, Any]:
    """Requests at ``rate`` per second for ``seconds``, on schedule."""
    idle: list[tuple[Connection, float]] = []  # and when it was last used
    accepted: list[float] = []
    counts = {"ok": 0, "shed": 0, "other": 0}
    opened = 0

    async def one(n: int) -> None:
        nonlocal opened
        connection = None
        while idle and connection is None:
            connection, used = idle.pop()
            if time.perf_counter() - used > IDLE_S:  # the server may have closed it
                connection.close()
                connection = None
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
        idle.append((connection, time.perf_counter()))

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
    for connection, _ in idle:
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


def overload_round(port: int, pids: list[int], args: argparse.Namespace) -> dict[str, Any]:
    unloaded = asyncio.run(load(port, 1, 1000, args.users))
    capacity = {}
    for connections in (1, 2, 4, 8):
        run = asyncio.run(load(port, connections, 600, args.users))
        capacity[connections] = run["rps"] * (1 - run["errors"] / 600)
    ok_rps = max(capacity.values())
    rate = args.factor * ok_rps
    log(f"open loop at {rate:.0f} requests/s for {args.seconds:.0f} s ...")
    service_before, client_before = cpu_s(pids), time.process_time()
    result = asyncio.run(open_loop(port, rate, args.seconds, args.users))
    service_cpu, client_cpu = cpu_s(pids) - service_before, time.process_time() - client_before
    light = asyncio.run(open_loop(port, ok_rps / 2, args.seconds / 2, args.users))
    p99 = result["accepted_p99_ms"]
    return {
        "unloaded_p50_ms": unloaded["p50_ms"],
        "unloaded_p99_ms": unloaded["p99_ms"],
        "capacity_ok_rps": ok_rps,
        "capacity_ok_rps_by_connections": {n: round(v, 1) for n, v in capacity.items()},
        **result,
        "accepted_p99_over_unloaded_p99": p99 / unloaded["p99_ms"] if p99 else None,
        "service_cpu_ms_per_request": service_cpu * 1000 / result["requests"],
        "client_cpu_ms_per_request": client_cpu * 1000 / result["requests"],
        "half_capacity_shed_share": light["shed_share"],
        "half_capacity_p99_ms": light["accepted_p99_ms"],
    }


MEDIANS = (
    "unloaded_p99_ms",
    "capacity_ok_rps",
    "offered_rps",
    "shed_share",
    "accepted_p50_ms",
    "accepted_p99_ms",
    "accepted_p99_over_unloaded_p99",
    "service_cpu_ms_per_request",
    "client_cpu_ms_per_request",
    "half_capacity_shed_share",
    "half_capacity_p99_ms",
)


def _median(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_overload")
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument(
        "--limits",
        default="",
        help="Serving limits, e.g. 'workers: 1, max_waiting: 0' (default: the service's defaults).",
    )
    parser.add_argument(
        "--settings", default="", help="Other serving YAML lines, e.g. 'items: {refresh_s: 3600}'."
    )
    parser.add_argument("--factor", type=float, default=4.0, help="offered load / capacity")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    settings = f"limits: {{{args.limits}}}\n" if args.limits else ""
    limits = LimitsConfig.model_validate(yaml.safe_load(settings or "{}").get("limits") or {})
    settings += f"{args.settings}\n" if args.settings else ""
    with tempfile.TemporaryDirectory(prefix="rtp-overload-") as tmp:
        models, store_yaml = prepare(Path(tmp), args.items, args.users)
        with service(models, store_yaml, "inprocess", None, settings) as (port, pids):
            asyncio.run(load(port, 1, 200, args.users))  # warm-up
            rounds = []
            for n in range(args.repeats):
                log(f"round {n + 1} of {args.repeats} ...")
                rounds.append(overload_round(port, pids, args))
                emit("overload_round", round=n + 1, **rounds[-1])
    emit(
        "overload",
        factor=args.factor,
        seconds=args.seconds,
        repeats=args.repeats,
        limits=limits.model_dump(include={"workers", "max_waiting", "max_wait_ms"}),
        settings=args.settings,
        **{f"median_{k}": _median(r[k] for r in rounds) for k in MEDIANS},
        other_errors=sum(r["other_errors"] for r in rounds),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
