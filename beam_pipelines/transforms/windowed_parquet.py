"""WriteWindowedParquet: a stream of feature rows → Parquet files, one set per window.

For a view whose rows are re-written as they change (``experiment_metrics``), the
online store keeps only the newest row; these files keep every emitted row, a
history a dashboard or a notebook can read. Each row is placed in time at its
``event_timestamp`` (for ``experiment_metrics``, when it was computed), windowed
into fixed windows of ``window_s`` seconds, and each window's rows are written by
Beam's ``fileio.WriteToFiles`` once the watermark passes the window's end, as
``<prefix>-<window start>-<window end>-SSSSS-of-NNNNN.parquet`` in the columns of
``history.arrow_schema`` (the layout of Feast's offline files: the directory can be
``features.offline_view_dir`` of the view).
"""

from __future__ import annotations

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io import fileio
from apache_beam.transforms.window import FixedWindows, TimestampedValue

from beam_pipelines.history import arrow_schema
from feature_repo.features import EVENT_TIMESTAMP, FEATURE_VIEWS


class ParquetFileSink(fileio.FileSink):
    """One Parquet file of ``schema`` per file handle: rows are buffered and the
    table written at ``flush`` (columns not in the schema, such as a row's keyed
    state, are left out)."""

    def __init__(self, schema: pa.Schema):
        self._schema = schema

    def open(self, fh) -> None:
        self._fh = fh
        self._rows: list[dict] = []

    def write(self, record: dict) -> None:
        self._rows.append({name: record.get(name) for name in self._schema.names})

    def flush(self) -> None:
        if self._rows:
            pq.write_table(pa.Table.from_pylist(self._rows, schema=self._schema), self._fh)
            self._rows = []
        self._fh.flush()


def _at_event_time(row: dict) -> TimestampedValue:
    return TimestampedValue(row, row[EVENT_TIMESTAMP] / 1000)


class WriteWindowedParquet(beam.PTransform):
    """Rows of ``view`` → Parquet files under ``directory`` per ``window_s`` seconds
    of their ``event_timestamp`` (epoch ms); returns ``fileio.FileResult``s."""

    def __init__(
        self, directory: str, view: str, window_s: float = 60.0, shards: int = 1, prefix: str = ""
    ):
        super().__init__()
        if view not in FEATURE_VIEWS:
            raise ValueError(f"view must be one of {sorted(FEATURE_VIEWS)}, got {view!r}")
        if window_s <= 0:
            raise ValueError(f"window_s must be > 0 seconds, got {window_s}")
        if shards < 1:
            raise ValueError(f"shards must be >= 1, got {shards}")
        self._directory = directory
        self._schema = arrow_schema(view)
        self._window_s = window_s
        self._shards = shards
        self._prefix = prefix or view

    def expand(self, rows):
        schema = self._schema
        return (
            rows
            | "AtEventTime" >> beam.Map(_at_event_time)
            | "Window" >> beam.WindowInto(FixedWindows(self._window_s))
            | "WriteFiles"
            >> fileio.WriteToFiles(
                self._directory,
                file_naming=fileio.default_file_naming(self._prefix, ".parquet"),
                sink=lambda _destination: ParquetFileSink(schema),
                shards=self._shards,
            )
        )
