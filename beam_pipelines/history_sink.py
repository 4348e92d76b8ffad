"""WriteHistoryTables: ``(shard, table)`` → one Parquet file per shard.

Each shard's table becomes ``<prefix>-SSSSS-of-NNNNN.parquet``, written under a
temporary name and renamed when complete, so a retried task rewrites the same
file and a reader never sees half of one. Beam's own file sinks (``beam.io.Write``)
gather their temporary files through side inputs and ``finish_bundle`` outputs in
a finalize step, which the DaskRunner (2.77) does not run: on Dask they wrote
nothing. A plain DoFn with a deterministic name per shard writes the same on
every runner and needs no finalize.

Beam's ``WriteToParquetBatched`` dictionary-encodes every column. The history's
numeric list columns (last-N times and rewards, embeddings) are nearly unique,
so that only cost time: encoding only the string columns (entity ids, versions,
recent items) and compressing with Snappy writes the same values in about half
the time and half the bytes. Writes run on a background thread (Arrow releases
the GIL), overlapping the replay of the next shard; the bundle ends when they
are done.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import uuid

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems


def string_columns(schema: pa.Schema) -> list[str]:
    """Columns of strings or lists of strings: the ones a dictionary makes smaller."""
    return [
        field.name
        for field in schema
        if field.type == pa.string()
        or (pa.types.is_list(field.type) and field.type.value_type == pa.string())
    ]


def shard_path(prefix: str, shard: int, shards: int) -> str:
    return f"{prefix}-{shard:05d}-of-{shards:05d}.parquet"


class _WriteShardFiles(beam.DoFn):
    """``(shard, table)`` → the shard's Parquet file; outputs its path."""

    def __init__(self, prefix: str, schema: pa.Schema, shards: int, codec: str = "snappy"):
        self._prefix = prefix
        self._schema = schema
        self._shards = shards
        self._codec = codec

    def setup(self):
        # On the worker; another worker may create the directory first.
        with contextlib.suppress(OSError):
            FileSystems.mkdirs(FileSystems.split(self._prefix)[0])
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="parquet")

    def start_bundle(self):
        self._pending: list[concurrent.futures.Future] = []

    def process(self, element):
        shard, table = element
        path = shard_path(self._prefix, shard, self._shards)
        self._pending.append(self._pool.submit(self._write, table, path))
        yield path

    def finish_bundle(self):
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()  # re-raises a failed write here

    def teardown(self):
        self._pool.shutdown()

    def _write(self, table: pa.Table, path: str) -> None:
        temp = f"{path}.{uuid.uuid4().hex}.tmp"
        with FileSystems.create(temp) as handle:
            pq.write_table(
                table,
                handle,
                compression=self._codec,
                use_dictionary=string_columns(self._schema),
            )
        with contextlib.suppress(OSError):  # a retried task wrote it already
            FileSystems.delete([path])
        FileSystems.rename([temp], [path])


class WriteHistoryTables(beam.PTransform):
    """``(shard, table)`` in ``schema`` → ``<prefix>-SSSSS-of-NNNNN.parquet`` files
    (``shards``: NNNNN); the output is the paths written."""

    def __init__(self, prefix: str, schema: pa.Schema, shards: int):
        super().__init__()
        self._write = _WriteShardFiles(prefix, schema, shards)

    def expand(self, tables):
        return tables | "Write" >> beam.ParDo(self._write).with_output_types(str)
