"""WriteFeatures: feature rows → the online store, in batches with bounded retries.

The store sits behind a small sink with a lifecycle (``open``/``write``/``close``);
``sink_factory`` is a picklable callable so each worker connects in ``setup``.
Within a batch only the newest row per entity is written (rows of one entity are
cumulative). Rows that still fail after the retries become dead letters with
reason ``store_write_failed``: nothing is dropped silently.

Streaming bundles can be a single element, and a store write costs a commit, so
with ``max_buffering_s`` rows are first gathered by ``GroupIntoBatches`` on a few
shards (by entity, so one entity's rows stay in one batch) for at most that long.
"""

from __future__ import annotations

import json
import logging
import time
import zlib
from collections.abc import Callable
from typing import Protocol

import apache_beam as beam
from apache_beam import typehints
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindows

from beam_pipelines.transforms.dead_letters import DEAD_LETTER, DeadLetter
from feature_repo.features import EVENT_TIMESTAMP, FEATURE_VIEWS, ITEM_REALTIME, USER_REALTIME

LOG = logging.getLogger(__name__)
STORE_WRITE_FAILED = "store_write_failed"


class FeatureSink(Protocol):
    def open(self) -> None: ...

    def write_rows(self, view: str, rows: list[dict]) -> int: ...

    def close(self) -> None: ...


# The cumulative event count of a row breaks ties between rows of one entity with
# the same newest event time (an older event applied later).
COUNT_COLUMNS = {USER_REALTIME: "user_event_count", ITEM_REALTIME: "item_event_count"}


def _version(row: dict, count_column: str | None) -> tuple:
    return (row[EVENT_TIMESTAMP], row[count_column] if count_column else 0)


class _WriteFn(beam.DoFn):
    def __init__(self, sink_factory, view, batch_size, max_retries, backoff_s):
        self._sink_factory = sink_factory
        self._view = view
        self._key = FEATURE_VIEWS[view][0]
        self._count = COUNT_COLUMNS.get(view)
        self._batch_size = batch_size
        self._max_retries = max_retries
        self._backoff_s = backoff_s
        self._written = Metrics.counter("rtp", f"rows_written_{view}")
        self._retries = Metrics.counter("rtp", f"write_retries_{view}")
        self._failed = Metrics.counter("rtp", f"write_failures_{view}")

    def setup(self):
        self._sink = self._sink_factory()
        self._sink.open()

    def start_bundle(self):
        self._buffer: dict[str, dict] = {}

    def process(self, element):
        """A row, or ``(shard, rows)`` from GroupIntoBatches."""
        for row in element[1] if isinstance(element, tuple) else (element,):
            key = row[self._key]
            previous = self._buffer.get(key)
            if previous is None or _version(row, self._count) >= _version(previous, self._count):
                self._buffer[key] = row
        if len(self._buffer) >= self._batch_size:
            yield from self._flush()

    def finish_bundle(self):
        for letter in self._flush():
            yield beam.pvalue.TaggedOutput(letter.tag, GlobalWindows.windowed_value(letter.value))

    def teardown(self):
        sink = getattr(self, "_sink", None)
        if sink is not None:
            sink.close()

    def _flush(self):
        rows, self._buffer = list(self._buffer.values()), {}
        if not rows:
            return
        error = self._write_with_retries(rows)
        if error is None:
            self._written.inc(len(rows))
            return
        self._failed.inc(len(rows))
        for row in rows:
            payload = json.dumps(row, separators=(",", ":"), default=str).encode()
            yield beam.pvalue.TaggedOutput(
                DEAD_LETTER, DeadLetter.now(STORE_WRITE_FAILED, f"{self._view}: {error}", payload)
            )

    def _write_with_retries(self, rows: list[dict]) -> Exception | None:
        for attempt in range(self._max_retries + 1):
            try:
                self._sink.write_rows(self._view, rows)
                return None
            except Exception as err:  # the sink wraps client errors; any failure retries
                if attempt == self._max_retries:
                    LOG.error("giving up on %d %s rows: %s", len(rows), self._view, err)
                    return err
                self._retries.inc()
                time.sleep(self._backoff_s * 2**attempt)
        return None


class WriteFeatures(beam.PTransform):
    """Write rows of one feature view; the output is the dead letters of failed rows.

    ``backoff_s``: first retry delay in seconds, doubled on each further retry.
    ``max_buffering_s`` (streaming): longest a row waits for its batch, seconds;
    None writes per bundle (bounded input, where bundles are large).
    """

    SHARDS = 4

    def __init__(
        self,
        sink_factory: Callable[[], FeatureSink],
        view: str,
        batch_size: int = 500,
        max_retries: int = 3,
        backoff_s: float = 0.2,
        max_buffering_s: float | None = None,
    ):
        super().__init__()
        if view not in FEATURE_VIEWS:
            raise ValueError(f"view must be one of {sorted(FEATURE_VIEWS)}, got {view!r}")
        if batch_size < 1 or max_retries < 0 or backoff_s < 0:
            raise ValueError("batch_size must be >= 1, max_retries and backoff_s >= 0")
        if max_buffering_s is not None and max_buffering_s <= 0:
            raise ValueError(f"max_buffering_s must be > 0 seconds, got {max_buffering_s}")
        self._fn = _WriteFn(sink_factory, view, batch_size, max_retries, backoff_s)
        self._batch_size = batch_size
        self._max_buffering_s = max_buffering_s
        self._key = FEATURE_VIEWS[view][0]

    def expand(self, rows):
        if self._max_buffering_s is not None:
            key, shards = self._key, self.SHARDS
            rows = (
                rows
                | "ShardByEntity"
                >> beam.Map(lambda row: (_shard(row[key], shards), row)).with_output_types(
                    typehints.KV[int, typehints.Any]
                )
                | "GatherBatches"
                >> beam.GroupIntoBatches(
                    self._batch_size, max_buffering_duration_secs=self._max_buffering_s
                )
            )
        outputs = rows | "WriteBatches" >> beam.ParDo(self._fn).with_outputs(DEAD_LETTER, main="ok")
        return outputs[DEAD_LETTER]


def _shard(entity: str, shards: int) -> int:
    # zlib.crc32 is stable across processes, unlike hash() of a str.
    return zlib.crc32(entity.encode()) % shards
