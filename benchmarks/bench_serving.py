"""Recommendation service latency and throughput, against a bare in-process ranker call.

Setup (in a temporary directory): a real export (``models.export``, the layer sizes
of ``rtp train``, untrained weights: two-tower retrieval, DCN ranker and the
sequential retriever) over ``--items`` items whose retrieval returns 500 candidates;
``user_realtime``, ``item_realtime``, ``user_coengagement`` (50 interacted items) and
``item_coengagement`` (200 neighbours with pair counts) rows for ``--users`` users and
every item in the embedded SQLite store. Then, for each ``--stacks`` entry, each
model path and each ``--workers`` count, ``rtp serve --workers N`` runs as a
subprocess on a loopback port. Stacks (the same export, ``models.retrieval_model``):

* ``sequential``: the default, the sequential retriever's and the co-engagement
  source's candidates blended (``serving.recommender._blended``; no ranker call);
* ``two_tower``: two-tower retrieval + DCN ranker on 500 candidates (what a version
  exported without the sequential model serves).

Model paths:

* ``inprocess``: the embedded default (SavedModels in the service process);
* ``grpc``: TF Serving over gRPC, served by the local stand-in
  (``rtp/tfserving_standin``) in another process on the same machine.

The default is 2 workers: what a 2-core deployment runs (one process per core, each
with its models and its GIL; ``serving/README.md``).

A closed-loop load generator (asyncio, raw HTTP/1.1 keep-alive connections, so the
client costs little CPU next to the server) sends ``GET /v1/recommendations`` for
random users at concurrency 1 and 16 (``--concurrency 1,2,4,8,16,32`` for a latency
curve), a bounded number of requests each, after a warm-up. An error is any non-200
answer, and a 200 served by a fallback is counted apart (``fallbacks``). The reference
is a bare ranker call (the SavedModel's ``serving_default`` on 500 prebuilt rows, no
features, no HTTP) timed in this process, again right before each measure
(``bare_*``): ``ratio_p50``/``ratio_p99`` are service latency over it, ``ratio_cpu``
CPU per request over CPU per call; the same for both stacks, so their ratios compare.
``bare_sequential_*`` is the sequential retriever's ``candidate_rows`` on one user's
50 events, timed the same way. Medians over ``--repeats`` runs.
``server_cpu_ms_per_request`` is the CPU time the service and the model server (the
stand-in, for ``grpc``) spent per request, read from ``/proc``,
``service_cpu_ms_per_request`` the service's alone, and ``client_cpu_ms_per_request``
the load generator's: on a shared machine these say what latency and throughput
cannot, and ``cpu_bound_rps_2_cores`` = 2000 / (server + client CPU ms) bounds the
requests per second two dedicated cores could serve. Prints one JSON object per
measure.

Run: ``python -m benchmarks.bench_serving [--repeats 3] [--workers 1,2] [--concurrency 1,4,16,32]
[--stacks sequential,two_tower]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import random
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import emit, log
from feature_repo import features as f
from feature_repo.store import FeatureStoreClient
from rtp import local_servers as servers
from serving.backends import prepare_tensorflow

CANDIDATES = 500
K = 20
DIM = f.EMBEDDING_DIM
RECENT_N = 50
NEIGHBOURS = 200  # beam_pipelines.state.coengagement.MAX_NEIGHBOURS
VERSION = 1
STACKS = {"sequential": "sequential", "two_tower": "retrieval"}  # → models.retrieval_model


def user_rows(n: int, items: list[str], now_ms: int, rng: np.random.Generator) -> list[dict]:
    rows = []
    for i in range(n):
        recent = rng.choice(items, RECENT_N, replace=False).tolist()
        rows.append(
            {
                f.USER_KEY: f"user-{i}",
                f.EVENT_TIMESTAMP: now_ms,
                f.USER_EMB_SHORT: rng.standard_normal(DIM).tolist(),
                f.USER_EMB_LONG: rng.standard_normal(DIM).tolist(),
                f.USER_EMBEDDING_VERSION: str(VERSION),
                f.USER_EVENT_COUNT: int(rng.integers(1, 500)),
                f.USER_EVENTS_SHORT: float(rng.random() * 10),
                f.USER_EVENTS_LONG: float(rng.random() * 100),
                f.USER_REWARD_RATE_SHORT: float(rng.random()),
                f.USER_REWARD_RATE_LONG: float(rng.random()),
                f.USER_ENGAGEMENT_RATE_SHORT: float(rng.random()),
                f.USER_ENGAGEMENT_RATE_LONG: float(rng.random()),
                f.USER_LAST_EVENT_MS: now_ms - int(rng.integers(0, 3_600_000)),
                f.USER_RECENT_ITEMS: recent,
                f.USER_RECENT_TS_MS: [now_ms - 1000 * j for j in range(RECENT_N)],
                f.USER_RECENT_REWARDS: rng.random(RECENT_N).round(3).tolist(),
            }
        )
    return rows


def item_rows(items: list[str], now_ms: int, rng: np.random.Generator) -> list[dict]:
    rows = []
    for item in items:
        values = {n: float(rng.random() * 50) for n, k in f.ITEM_FEATURES.items() if k == f.FLOAT}
        rows.append(
            {
                **values,
                f.ITEM_KEY: item,
                f.EVENT_TIMESTAMP: now_ms,
                f.ITEM_EVENT_COUNT: int(rng.integers(1, 1000)),
                f.ITEM_LAST_EVENT_MS: now_ms - int(rng.integers(0, 3_600_000)),
            }
        )
    return rows


def coengagement_rows(
    users: list[dict], items: list[str], now_ms: int, rng: np.random.Generator
) -> tuple[list[dict], list[dict]]:
    """``user_coengagement`` (each user's recent items as its pair window) and
    ``item_coengagement`` rows (``NEIGHBOURS`` other items, largest count first)."""
    user_pairs = [
        {
            f.USER_KEY: u[f.USER_KEY],
            f.EVENT_TIMESTAMP: now_ms,
            f.USER_INTERACTED_ITEMS: u[f.USER_RECENT_ITEMS],
        }
        for u in users
    ]
    item_pairs = []
    for i, item in enumerate(items):
        picks = rng.choice(len(items) - 1, NEIGHBOURS, replace=False)
        picks += picks >= i  # never the item itself
        counts = np.sort(rng.zipf(2.0, NEIGHBOURS).clip(max=1000))[::-1]
        item_pairs.append(
            {
                f.ITEM_KEY: item,
                f.EVENT_TIMESTAMP: now_ms,
                f.ITEM_NEIGHBORS: [items[j] for j in picks],
                f.ITEM_NEIGHBOR_PAIRS: counts.astype(float).tolist(),
            }
        )
    return user_pairs, item_pairs


def item_ids(n: int) -> list[str]:
    return [f"item-{i:06d}" for i in range(n)]


def prepare(work: Path, n_items: int, n_users: int) -> tuple[Path, Path]:
    """(model base, store config YAML)."""
    from rtp.tfserving_standin.tiny_export import export_tiny

    rng = np.random.default_rng(0)
    items = item_ids(n_items)
    models = work / "models"
    log(f"exporting models for {n_items} items (retrieval top-{CANDIDATES}) ...")
    export_tiny(models, items, dim=DIM, k=CANDIDATES + RECENT_N, version=VERSION, full_size=True)
    store_yaml = work / "store.yaml"
    store_yaml.write_text(
        f"type: sqlite\npath: {work / 'online.db'}\nregistry_path: {work / 'registry.db'}\n"
        f"offline_dir: {work / 'offline'}\ntimeout_s: 0.5\n"
    )
    now_ms = int(time.time() * 1000)
    log(f"writing features of {n_users} users and {n_items} items ...")
    from feature_repo.store import load_store_config

    users = user_rows(n_users, items, now_ms, rng)
    user_pairs, item_pairs = coengagement_rows(users, items, now_ms, rng)
    with FeatureStoreClient(load_store_config(store_yaml)) as store:
        store.write_rows(f.USER_REALTIME, users)
        store.write_rows(f.ITEM_REALTIME, item_rows(items, now_ms, rng))
        store.write_rows(f.USER_COENGAGEMENT, user_pairs)
        store.write_rows(f.ITEM_COENGAGEMENT, item_pairs)
    return models, store_yaml


class BareRanker:
    """The ranker's serving_default on 500 prebuilt rows, in this process (TensorFlow's
    default threads, as a plain ``tf.saved_model.load`` gets them)."""

    def __init__(self, model_base: Path) -> None:
        prepare_tensorflow()
        import tensorflow as tf

        self.loaded = tf.saved_model.load(str(model_base / "ranker" / str(VERSION)))
        self.function = self.loaded.signatures["serving_default"]
        _, specs = self.function.structured_input_signature
        rng = np.random.default_rng(1)
        self.inputs = {
            name: tf.constant(
                rng.random((CANDIDATES, *spec.shape.as_list()[1:])).astype(
                    spec.dtype.as_numpy_dtype
                )
            )
            for name, spec in specs.items()
        }
        self.output = "engagement_probability"
        for _ in range(20):
            self.function(**self.inputs)

    def measure(self, calls: int) -> dict[str, float]:
        """p50/p99 (ms) and CPU ms per call."""
        times = []
        cpu_started = time.process_time()
        for _ in range(calls):
            started = time.perf_counter()
            self.function(**self.inputs)[self.output].numpy()
            times.append((time.perf_counter() - started) * 1000)
        cpu_ms = (time.process_time() - cpu_started) * 1000 / calls
        return {"p50_ms": _pct(times, 50), "p99_ms": _pct(times, 99), "cpu_ms_per_call": cpu_ms}


class BareSequential(BareRanker):
    """The sequential retriever's ``candidate_rows`` on one user's ``RECENT_N`` events,
    in this process, timed like ``BareRanker``."""

    def __init__(self, model_base: Path, items: list[str]) -> None:
        prepare_tensorflow()
        import tensorflow as tf

        self.loaded = tf.saved_model.load(str(model_base / "sequential" / str(VERSION)))
        self.function = self.loaded.signatures["candidate_rows"]
        rng = np.random.default_rng(2)
        self.inputs = {
            f.USER_RECENT_ITEMS: tf.constant([rng.choice(items, RECENT_N).tolist()]),
            f.USER_RECENT_TS_MS: tf.constant(
                [[10**12 - 1000 * j for j in range(RECENT_N)]], tf.int64
            ),
            f.USER_RECENT_REWARDS: tf.constant(rng.random((1, RECENT_N)), tf.float32),
        }
        self.output = "item_rows"
        for _ in range(20):
            self.function(**self.inputs)


def cpu_s(pids: Sequence[int]) -> float:
    """User + system CPU seconds used so far by processes ``pids`` (all threads)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / ticks


def _pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


@contextlib.contextmanager
def service(
    models: Path,
    store_yaml: Path,
    backend: str,
    address: str | None,
    settings: str,
    workers: int = 1,
    stack: str = "sequential",
    model_settings: str = "",
) -> Iterator[tuple[int, list[int]]]:
    """``rtp serve`` (``python -m serving.app``) on a free loopback port, serving
    ``stack`` (a key of ``STACKS``)."""
    port = servers.free_port()
    args = [sys.executable, "-m", "serving.app", "--models", str(models), "--port", str(port)]
    args += ["--store-config", str(store_yaml), "--log-level", "warning"]
    args += ["--workers", str(workers)]
    config = Path(store_yaml).parent / f"serving-{backend}-{stack}-{os.getpid()}.yaml"
    # Seeded exploration, and a generous model timeout: a noisy machine should not
    # turn a slow call into a fallback in the middle of a measurement.
    timeout = "" if backend == "inprocess" else ", timeout_s: 2.0"
    if model_settings:
        timeout += f", {model_settings}"
    config.write_text(
        f"model_base: {models}\n"
        f"models: {{type: {backend}, retrieval_model: {STACKS[stack]}{timeout}}}\n"
        f"ranking: {{seed: 1}}\n{settings}"
    )
    args += ["--config", str(config)]
    if address:
        args += ["--tfserving", address]

    def ready() -> bool:
        # Every worker listens on a socket of its own once it has loaded the models.
        answers = servers.http_answers(f"http://{servers.HOST}:{port}/readyz")
        return answers and (workers == 1 or listening_sockets(port) >= workers)

    server = servers.start_server(args, port, ready=ready, timeout_s=300)
    try:
        yield port, process_tree(server.process.pid)
    finally:
        servers.stop_server(server)


def listening_sockets(port: int) -> int:
    """IPv4 TCP sockets listening on local ``port`` (Linux ``/proc/net/tcp``)."""
    rows = [line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:]]
    return sum(int(r[1].split(":")[1], 16) == port and r[3] == "0A" for r in rows)


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (the worker processes of ``--workers``)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += children.get(current, [])
    return found


class Connection:
    """One keep-alive HTTP/1.1 connection: the cheapest client Python offers."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        return cls(*await asyncio.open_connection(servers.HOST, port))

    async def get(self, path: str) -> tuple[int, bytes]:
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
        status_line = await self.reader.readline()
        if not status_line:  # the server closed the connection
            raise asyncio.IncompleteReadError(b"", None)
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        body = await self.reader.readexactly(length)
        return int(status_line.split()[1]), body

    def close(self) -> None:
        self.writer.close()


async def load(port: int, concurrency: int, requests: int, users: int) -> dict[str, Any]:
    """Closed loop: ``concurrency`` connections share ``requests`` requests."""
    connections = [await Connection.open(port) for _ in range(concurrency)]
    rng = random.Random(concurrency)
    paths = [
        f"/v1/recommendations?user_id=user-{rng.randrange(users)}&k={K}" for _ in range(requests)
    ]
    latencies: list[float] = []
    errors = fallbacks = 0
    queue = iter(paths)

    async def worker(connection: Connection) -> None:
        nonlocal errors, fallbacks
        for path in queue:
            started = time.perf_counter()
            try:
                status, body = await connection.get(path)
            except (OSError, asyncio.IncompleteReadError):
                errors += 1
                continue
            latencies.append((time.perf_counter() - started) * 1000)
            if status != 200:
                errors += 1
            elif b'"fallback":null' not in body:
                fallbacks += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in connections))
    wall = time.perf_counter() - started
    for connection in connections:
        connection.close()
    return {
        "p50_ms": _pct(latencies, 50),
        "p99_ms": _pct(latencies, 99),
        "rps": len(latencies) / wall,
        "errors": errors,
        "fallbacks": fallbacks,
    }


def measure(
    port: int,
    service_pids: Sequence[int],
    model_pids: Sequence[int],
    concurrency: int,
    requests: int,
    users: int,
    repeats: int,
) -> dict:
    """Median latency and throughput over ``repeats`` runs, and CPU milliseconds per
    request of the service, of the service and the model server, and of this client:
    costs that depend less on what else the machine runs."""
    asyncio.run(load(port, concurrency, max(50, requests // 5), users))  # warm-up
    runs = []
    for _ in range(repeats):
        service_before, model_before = cpu_s(service_pids), cpu_s(model_pids)
        client_before = time.process_time()
        run = asyncio.run(load(port, concurrency, requests, users))
        service = cpu_s(service_pids) - service_before
        model = cpu_s(model_pids) - model_before
        run["server_cpu_ms_per_request"] = (service + model) * 1000 / requests
        run["service_cpu_ms_per_request"] = service * 1000 / requests
        run["client_cpu_ms_per_request"] = (time.process_time() - client_before) * 1000 / requests
        runs.append(run)
    keys = ("p50_ms", "p99_ms", "rps", "server_cpu_ms_per_request", "service_cpu_ms_per_request")
    result: dict[str, Any] = {
        key: round(statistics.median(r[key] for r in runs), 2)
        for key in (*keys, "client_cpu_ms_per_request")
    }
    result["cpu_bound_rps_2_cores"] = round(
        2000 / (result["server_cpu_ms_per_request"] + result["client_cpu_ms_per_request"]), 1
    )
    result["errors"] = sum(r["errors"] for r in runs)
    result["fallbacks"] = sum(r["fallbacks"] for r in runs)
    result["mean_batch_calls"] = mean_batch_calls(port)
    result["runs"] = [{k: round(v, 2) for k, v in r.items()} for r in runs]
    return result


def mean_batch_calls(port: int) -> float | None:
    """Requests per batched model call so far, from ``/metrics`` of whichever worker
    answers (one worker's sample); None without request batching."""
    url = f"http://{servers.HOST}:{port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    found = dict(
        line.rsplit(" ", 1)
        for line in text.splitlines()
        if line.startswith("rtp_serving_model_batch_calls_")
    )
    count = float(found.get("rtp_serving_model_batch_calls_count", 0))
    total = float(found.get("rtp_serving_model_batch_calls_sum", 0))
    return round(total / count, 2) if count else None


def concurrency_levels(text: str) -> list[int]:
    """``"1,4,16"`` → ``[1, 4, 16]``: positive, in the order given."""
    levels = [int(part) for part in text.split(",") if part.strip()]
    if not levels or min(levels) < 1:
        raise ValueError(f"concurrency levels must be positive integers: {text!r}")
    return levels


def requests_at(concurrency: int, requests: int) -> int:
    """Requests per run: ``requests`` from concurrency 16 up, ``requests × c / 16``
    below it, but at least a quarter of ``requests`` and 100 (as at concurrency 1)."""
    return max(100, requests * min(concurrency, 16) // 16, requests // 4)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument(
        "--requests",
        type=int,
        default=1000,
        help="Per run at concurrency 16 and above (a quarter, at least 100, at 1).",
    )
    parser.add_argument(
        "--concurrency",
        type=concurrency_levels,
        default=concurrency_levels("1,16"),
        help="Comma-separated concurrency levels, e.g. 1,2,4,8,16,32,64 for a latency "
        "curve (default 1,16).",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backends", default="inprocess,grpc")
    parser.add_argument(
        "--workers", default="2", help="rtp serve --workers, comma-separated (default 2)."
    )
    parser.add_argument(
        "--model-settings",
        default="",
        help="';'-separated sets of extra 'models:' settings, one service each, e.g. "
        "'batching: {enabled: false};batching: {enabled: true}' (with --settings "
        "'limits: {workers: 8}' for batches to form). Default: the service's own.",
    )
    parser.add_argument(
        "--stacks",
        default="sequential,two_tower",
        help=f"Comma-separated, of {sorted(STACKS)} (default both, in one session).",
    )
    parser.add_argument(
        "--settings", default="", help="Extra serving YAML lines, e.g. 'limits: {workers: 4}'."
    )
    args = parser.parse_args(argv)
    stacks = args.stacks.split(",")
    if unknown := set(stacks) - set(STACKS):
        parser.error(f"--stacks: unknown {sorted(unknown)}, expected some of {sorted(STACKS)}")
    from rtp.tfserving_standin.launch import standin

    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        models, store_yaml = prepare(Path(tmp), args.items, args.users)
        bare = {"ranker": BareRanker(models)}
        if "sequential" in stacks:
            bare["sequential"] = BareSequential(models, item_ids(args.items))
        for name, model in bare.items():
            reference = model.measure(300)
            emit(
                f"bare_{name}_call",
                **({"candidates": CANDIDATES} if name == "ranker" else {"events": RECENT_N}),
                **{k: round(v, 3) for k, v in reference.items()},
            )
        for backend in args.backends.split(","):
            for workers in (int(n) for n in args.workers.split(",")):
                with contextlib.ExitStack() as resources:
                    address, model_pids = None, []
                    if backend != "inprocess":
                        log("starting the TF Serving stand-in ...")
                        server, rest_port = resources.enter_context(standin(models, rest=True))
                        address = server.address if backend == "grpc" else f"127.0.0.1:{rest_port}"
                        model_pids.append(server.process.pid)
                    model_settings = [m.strip() for m in args.model_settings.split(";")]
                    for stack, extra in itertools.product(stacks, model_settings):
                        log(
                            f"starting rtp serve ({backend}, {stack}, {workers} workers"
                            f"{', ' + extra if extra else ''}) ..."
                        )
                        with service(
                            models,
                            store_yaml,
                            backend,
                            address,
                            args.settings,
                            workers,
                            stack,
                            extra,
                        ) as (port, service_pids):
                            for concurrency in args.concurrency:
                                requests = requests_at(concurrency, args.requests)
                                log(
                                    f"{backend}, {stack}, {workers} workers: concurrency "
                                    f"{concurrency}, {requests} requests x {args.repeats}"
                                )
                                references = {n: m.measure(200) for n, m in bare.items()}
                                result = measure(
                                    port,
                                    service_pids,
                                    model_pids,
                                    concurrency,
                                    requests,
                                    args.users,
                                    args.repeats,
                                )
                                emit(
                                    "serving_latency",
                                    backend=backend,
                                    stack=stack,
                                    workers=workers,
                                    model_settings=extra,
                                    concurrency=concurrency,
                                    candidates=CANDIDATES,
                                    k=K,
                                    requests_per_run=requests,
                                    **result,
                                    **against(result, references),
                                )
    return 0


def against(result: dict[str, Any], references: dict[str, dict[str, float]]) -> dict[str, float]:
    """The bare calls measured right before ``result`` and the ratios to the ranker's."""
    out = {}
    for name, reference in references.items():
        prefix = "bare" if name == "ranker" else f"bare_{name}"
        out[f"{prefix}_p50_ms"] = round(reference["p50_ms"], 3)
        out[f"{prefix}_p99_ms"] = round(reference["p99_ms"], 3)
        out[f"{prefix}_cpu_ms_per_call"] = round(reference["cpu_ms_per_call"], 3)
    ranker = references["ranker"]
    out["ratio_p50"] = round(result["p50_ms"] / ranker["p50_ms"], 2)
    out["ratio_p99"] = round(result["p99_ms"] / ranker["p99_ms"], 2)
    out["ratio_cpu"] = round(result["server_cpu_ms_per_request"] / ranker["cpu_ms_per_call"], 2)
    return out


if __name__ == "__main__":
    sys.exit(main())
