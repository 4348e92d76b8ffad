"""Online store throughput and latency per backend, against a raw client reference.

For sqlite, redis (``redis-server``) and bigtable (``cbtemulator``), started on free
local ports: write throughput of ``user_realtime`` rows (32-float embeddings, 50-long
recent lists) in batches of 500, median over repeats, through
``FeatureStoreClient.write_rows``, Feast's ``write_to_online_store`` and ``push``;
then read latency p50/p99 for 1 and 200 entities through ``FeatureStoreClient.read``
and the service's ``serving.features.FastReader``.
The reference is the same store driven by its raw client with the same serialized
values (no Feast), measured in the same run. ``ratio`` is throughput / reference
throughput for writes (below 1: Feast is slower) and latency / reference latency
for reads (above 1: Feast is slower).

Prints one JSON object per measure. Run: ``python -m benchmarks.store_throughput``.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import emit
from feature_repo import features as f
from feature_repo.store import FeatureStoreClient
from rtp import local_servers as servers

BATCH = 500
RECENT_N = 50
Payload = list[tuple[bytes, dict[bytes, bytes]]]


def user_rows(n: int, ts_ms: int, seed: int) -> list[dict[str, Any]]:
    """``n`` full ``user_realtime`` rows at event time ``ts_ms`` (epoch ms)."""
    rng = random.Random(seed)
    _, schema = f.FEATURE_VIEWS[f.USER_REALTIME]
    rows = []
    for i in range(n):
        row = {name: _value(rng, name, kind, ts_ms) for name, kind in schema.items()}
        rows.append({f.USER_KEY: f"user-{i}", f.EVENT_TIMESTAMP: ts_ms, **row})
    return rows


def _value(rng: random.Random, name: str, kind: str, ts_ms: int) -> Any:
    length = f.EMBEDDING_DIM if "emb" in name else RECENT_N
    make = {
        f.FLOAT: lambda: rng.random(),
        f.INT: lambda: ts_ms - rng.randrange(10**6),
        f.STRING: lambda: f"v{rng.randrange(10**6)}",
    }
    if kind in make:
        return make[kind]()
    element = kind.removesuffix("_list")
    return [_value(rng, name, element, ts_ms) for _ in range(length)]


def payload(rows: Sequence[dict[str, Any]]) -> Payload:
    """The rows as (key, {feature: serialized Feast value}) for the raw references."""
    from feast.type_map import python_values_to_proto_values

    from feature_repo.definitions import FEAST_TYPES

    _, schema = f.FEATURE_VIEWS[f.USER_REALTIME]
    out: Payload = []
    for row in rows:
        cells = {}
        for name, kind in schema.items():
            value_type = FEAST_TYPES[kind].to_value_type()
            proto = python_values_to_proto_values([row[name]], value_type)[0]
            cells[name.encode()] = proto.SerializeToString()
        out.append((f"raw:{row[f.USER_KEY]}".encode(), cells))
    return out


class RawSqlite:
    """Feast's sqlite layout (one row per entity and feature) written directly."""

    def __init__(self, path: str) -> None:
        self.conn = sqlite3.connect(path)  # one transaction a batch, as Feast
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS raw (entity_key BLOB, feature_name TEXT,"
            " value BLOB, event_ts timestamp, PRIMARY KEY(entity_key, feature_name))"
        )

    def write(self, batch: Payload) -> None:
        now = time.time()
        cells = [(k, n.decode(), v, now) for k, c in batch for n, v in c.items()]
        with self.conn:
            self.conn.executemany(
                "INSERT INTO raw VALUES (?, ?, ?, ?) ON CONFLICT(entity_key,"
                " feature_name) DO UPDATE SET value=excluded.value,"
                " event_ts=excluded.event_ts",
                cells,
            )

    def read(self, keys: list[bytes]) -> Any:
        marks = ",".join("?" * len(keys))
        sql = f"SELECT entity_key, feature_name, value FROM raw WHERE entity_key IN ({marks})"
        return self.conn.execute(sql, keys).fetchall()


class RawRedis:
    """One HSET per entity in a non-transactional pipeline, as Feast does."""

    def __init__(self, address: str) -> None:
        import redis

        host, port = address.rsplit(":", 1)
        self.client = redis.Redis(host=host, port=int(port))
        self.fields: list[bytes] = []

    def write(self, batch: Payload) -> None:
        self.fields = list(batch[0][1])
        with self.client.pipeline(transaction=False) as pipe:
            for key, cells in batch:
                pipe.hset(key, mapping=cells)
            pipe.execute()

    def read(self, keys: list[bytes]) -> Any:
        with self.client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hmget(key, self.fields)
            return pipe.execute()


class RawBigtable:
    """Bulk mutations and a row-key read on the table Feast created."""

    def __init__(self, address: str, instance: str, table_id: str) -> None:
        import os

        from google.cloud.bigtable.data import BigtableDataClient

        os.environ["BIGTABLE_EMULATOR_HOST"] = address
        self.client = BigtableDataClient(project="bench")
        self.table = self.client.get_table(instance, table_id)

    def write(self, batch: Payload) -> None:
        from google.cloud.bigtable.data import RowMutationEntry, SetCell

        entries = [
            RowMutationEntry(key, [SetCell("features", n, v) for n, v in cells.items()])
            for key, cells in batch
        ]
        self.table.bulk_mutate_rows(entries)

    def read(self, keys: list[bytes]) -> Any:
        from google.cloud.bigtable.data import ReadRowsQuery, row_filters

        # The same request as Feast: its qualifier regex filter makes the emulator
        # about 13x slower on 200 rows than no filter (~640 ms vs ~50 ms here).
        names = "|".join(f.FEATURE_VIEWS[f.USER_REALTIME][1])
        only = row_filters.ColumnQualifierRegexFilter(f"^({names}|event_ts)$".encode())
        return self.table.read_rows(ReadRowsQuery(row_keys=keys, row_filter=only))


def rows_per_s(writers: dict[str, tuple[Callable, list]], repeats: int) -> dict[str, float]:
    """Median rows/s of each ``name: (write, batches)``, ``BATCH`` rows a batch.

    The writers take turns within each repeat so that a noisy neighbour slows all
    of them alike instead of whichever happened to run at the time.
    """
    rates: dict[str, list[float]] = {name: [] for name in writers}
    for _ in range(repeats):
        for name, (write, batches) in writers.items():
            started = time.perf_counter()
            for batch in batches:
                write(batch)
            rates[name].append(BATCH * len(batches) / (time.perf_counter() - started))
    return {name: statistics.median(r) for name, r in rates.items()}


def latency_ms(readers: dict[str, Callable[[], Any]], n: int) -> dict[str, tuple[float, float]]:
    """p50 and p99 in milliseconds of ``n`` calls of each reader (taking turns)."""
    times: dict[str, list[float]] = {name: [] for name in readers}
    for i in range(n + 5):  # the first 5 rounds warm up
        for name, read in readers.items():
            started = time.perf_counter()
            read()
            if i >= 5:
                times[name].append((time.perf_counter() - started) * 1000)
    cuts = {name: statistics.quantiles(t, n=100, method="inclusive") for name, t in times.items()}
    return {name: (c[49], c[98]) for name, c in cuts.items()}


def store_setup(backend: str, tmp: Path, stack: contextlib.ExitStack) -> tuple[dict, Any]:
    """Store settings and raw reference of ``backend``; starts its server."""
    common = {"registry_path": str(tmp / "registry.db"), "timeout_s": 30.0}
    if backend == "sqlite":
        path = str(tmp / "online.db")
        return {"type": "sqlite", "path": path, **common}, RawSqlite(str(tmp / "raw.db"))
    if backend == "redis":
        server = stack.enter_context(servers.redis_server())
        settings = {"type": "redis", "connection_string": server.address}
        return {**settings, **common}, RawRedis(server.address)
    server = stack.enter_context(servers.bigtable_emulator())
    settings = {"type": "bigtable", "project": "bench", "instance": "bench"}
    settings["emulator_host"] = server.address
    return {**settings, **common}, server.address


def bench_backend(backend: str, repeats: int, reads: int) -> Iterator[dict[str, Any]]:
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        settings, raw = store_setup(backend, tmp, stack)
        client = stack.enter_context(FeatureStoreClient(settings))
        if isinstance(raw, str):  # bigtable: the table exists once Feast applied
            raw = RawBigtable(raw, "bench", f"{client.config.feast_project}.user")
        yield from bench_writes(backend, client, raw, repeats)
        yield from bench_reads(backend, client, raw, reads)


def bench_writes(
    backend: str, client: FeatureStoreClient, raw: Any, repeats: int
) -> Iterator[dict[str, Any]]:
    rows = user_rows(2 * BATCH, int(time.time() * 1000), seed=1)
    batches = [rows[i : i + BATCH] for i in range(0, len(rows), BATCH)]
    writers = {name: (write, batches) for name, write in feast_writers(client).items()}
    writers["reference"] = (raw.write, [payload(b) for b in batches])
    rates = rows_per_s(writers, repeats)
    reference = rates.pop("reference")
    for path, rate in rates.items():
        yield {
            "backend": backend,
            "measure": "store_write_throughput",
            "path": path,
            "unit": "rows/s",
            "value": round(rate, 1),
            "reference": round(reference, 1),
            "ratio": round(rate / reference, 4),
            "batch": BATCH,
            "rows_per_repeat": len(rows),
            "repeats": repeats,
        }


def feast_writers(client: FeatureStoreClient) -> dict[str, Callable[[list], Any]]:
    """Write paths by name; each call moves event time forward by 1 ms because the
    redis store skips rows not newer than the stored ones."""
    import pandas as pd
    from feast.data_source import PushMode

    clock = iter(range(1, 10**9))

    def newer(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        tick = next(clock)
        return [{**r, f.EVENT_TIMESTAMP: r[f.EVENT_TIMESTAMP] + tick} for r in batch]

    def frame(batch: list[dict[str, Any]]) -> pd.DataFrame:
        data = pd.DataFrame(newer(batch))
        ts = pd.to_datetime(data[f.EVENT_TIMESTAMP], unit="ms", utc=True)
        return data.assign(**{f.EVENT_TIMESTAMP: ts})

    store = client.store
    return {
        "write_rows": lambda b: client.write_rows(f.USER_REALTIME, newer(b)),
        "feast_write_to_online_store": lambda b: store.write_to_online_store(
            f.USER_REALTIME, frame(b)
        ),
        "feast_push": lambda b: store.push(f.USER_PUSH_SOURCE, frame(b), to=PushMode.ONLINE),
    }


def bench_reads(
    backend: str, client: FeatureStoreClient, raw: Any, reads: int
) -> Iterator[dict[str, Any]]:
    from serving.features import FastReader

    fast = FastReader(client)
    raw_keys = [f"raw:user-{i}".encode() for i in range(200)]
    for n in (1, 200):
        ids = [f"user-{i}" for i in range(n)]
        readers = {
            "read": lambda ids=ids: client.read(f.USER_REALTIME, ids),
            "fast_read": lambda ids=ids: fast.read(f.USER_REALTIME, ids),
            "reference": lambda n=n: raw.read(raw_keys[:n]),
        }
        latencies = latency_ms(readers, reads)
        ref50, ref99 = latencies.pop("reference")
        for path, (p50, p99) in latencies.items():
            yield {
                "backend": backend,
                "measure": "store_read_latency",
                "path": path,
                "entities": n,
                "unit": "ms",
                "p50": round(p50, 3),
                "p99": round(p99, 3),
                "reference_p50": round(ref50, 3),
                "reference_p99": round(ref99, 3),
                "ratio_p50": round(p50 / ref50, 2),
                "reads": reads,
            }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=["sqlite", "redis", "bigtable"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--reads", type=int, default=200)
    args = parser.parse_args(argv)
    for backend in args.backends:
        try:
            for fields in bench_backend(backend, args.repeats, args.reads):
                emit(fields.pop("measure"), **fields)
        except servers.ComponentMissing as missing:
            emit("store_skipped", backend=backend, reason=str(missing))


if __name__ == "__main__":
    main()
