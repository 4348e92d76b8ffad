"""WriteFeatures: feature rows → the online store, in batches with bounded retries.

The store sits behind a small sink with a lifecycle (``open``/``write``/``close``);
``sink_factory`` is a picklable callable so each worker connects in ``setup``.
Within a batch only the newest row per entity is written (rows of one entity are
cumulative). A failed write is retried with exponential back-off (``RetryPolicy``:
at least ``max_retries`` times and for up to ``retry_budget_s`` seconds, so a store
outage of that long loses nothing; meanwhile the bundle waits, which holds back
the stages before it). Rows that still fail become dead letters with reason
``store_write_failed`` carrying the view, the row and its state (``write_letter``),
which ``rtp replay-dead-letters`` writes again: nothing is dropped silently.

Rows that carry their key's encoded state (``restore.STATE_COLUMN``) are written
in two steps: the feature rows, then the state rows (``keyed_state``) with the
flush's progress mark, so a key's stored state never runs ahead of its features
(see ``beam_pipelines.restore``).

Streaming bundles can be a single element, and a store write costs a commit, so
with ``max_buffering_s`` rows are first gathered by ``GroupIntoBatches`` on a few
shards (by entity, so one entity's rows stay in one batch) for at most that long.

Beam's DaskRunner (2.77) runs ``finish_bundle`` but drops what it outputs, so the
dead letters of the bundle's last write would be lost. With ``group_shards`` the
rows are first grouped into that many shards by entity (a ``GroupByKey``) and each
group is written, to its last row, while it is processed.
"""

from __future__ import annotations

import base64
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
from beam_pipelines.transforms.restore import (
    STATE_COLUMN,
    progress_key,
    state_key,
)
from beam_pipelines.transforms.retry import RetryPolicy
from feature_repo.features import (
    ENCODED_STATE,
    EVENT_TIMESTAMP,
    EXPERIMENT_METRICS,
    EXPERIMENT_UPDATES,
    FEATURE_VIEWS,
    ITEM_EVENT_COUNT,
    ITEM_REALTIME,
    KEYED_STATE,
    STATE_KEY,
    USER_EVENT_COUNT,
    USER_EXPERIMENT_EVENTS,
    USER_EXPERIMENTS,
    USER_REALTIME,
)

LOG = logging.getLogger(__name__)
STORE_WRITE_FAILED = "store_write_failed"


class FeatureSink(Protocol):
    def open(self) -> None: ...

    def write_rows(self, view: str, rows: list[dict]) -> int: ...

    def close(self) -> None: ...


# The cumulative event count of a row breaks ties between rows of one entity with
# the same newest event time (an older event applied later).
COUNT_COLUMNS = {
    USER_REALTIME: USER_EVENT_COUNT,
    ITEM_REALTIME: ITEM_EVENT_COUNT,
    EXPERIMENT_METRICS: EXPERIMENT_UPDATES,
    USER_EXPERIMENTS: USER_EXPERIMENT_EVENTS,
}


def row_version(view: str, row: dict) -> tuple:
    """Order of two rows of one entity: the newer one replaces the older."""
    count_column = COUNT_COLUMNS.get(view)
    return (row[EVENT_TIMESTAMP], row[count_column] if count_column else 0)


def write_letter(view: str, row: dict, error: Exception) -> DeadLetter:
    """A row that could not be written: payload ``{"view", "row", "state"}`` (the
    row's encoded state base64, or null), enough to write it again."""
    row = dict(row)
    state = row.pop(STATE_COLUMN, None)
    payload = {
        "view": view,
        "row": row,
        "state": base64.b64encode(state).decode() if state is not None else None,
    }
    data = json.dumps(payload, separators=(",", ":"), default=str).encode()
    return DeadLetter.now(STORE_WRITE_FAILED, f"{view}: {error}", data)


def read_letter(payload: bytes) -> tuple[str, dict]:
    """``(view, row)`` of a ``write_letter`` payload, the state back on the row."""
    data = json.loads(payload)
    row = data["row"]
    if data.get("state") is not None:
        row[STATE_COLUMN] = base64.b64decode(data["state"])
    return data["view"], row


def state_rows(
    view: str, rows: list[dict], started_ms: int | None
) -> tuple[list[dict], list[dict]]:
    """The feature rows without their state, and the ``keyed_state`` rows of that
    state plus the view's progress mark ``started_ms`` (none if None or if no row
    carries state)."""
    key = FEATURE_VIEWS[view][0]
    features, states = [], []
    for row in rows:
        if STATE_COLUMN not in row:
            features.append(row)
            continue
        row = dict(row)
        state = row.pop(STATE_COLUMN)
        features.append(row)
        states.append(
            {
                STATE_KEY: state_key(view, row[key]),
                EVENT_TIMESTAMP: row[EVENT_TIMESTAMP],
                ENCODED_STATE: state,
            }
        )
    if states and started_ms is not None:
        mark = {STATE_KEY: progress_key(view), EVENT_TIMESTAMP: started_ms}
        states.append({**mark, ENCODED_STATE: str(started_ms).encode()})
    return features, states


class _WriteFn(beam.DoFn):
    def __init__(self, sink_factory, view, batch_size, retry: RetryPolicy, flush_groups=False):
        self._sink_factory = sink_factory
        self._flush_groups = flush_groups
        self._view = view
        self._key = FEATURE_VIEWS[view][0]
        self._batch_size = batch_size
        self._retry = retry
        self._written = Metrics.counter("rtp", f"rows_written_{view}")
        self._retries = Metrics.counter("rtp", f"write_retries_{view}")
        self._failed = Metrics.counter("rtp", f"write_failures_{view}")

    def setup(self):
        self._sink = self._sink_factory()
        self._sink.open()

    def start_bundle(self):
        self._buffer: dict[str, dict] = {}

    def process(self, element):
        """A row, or ``(shard, rows)`` from GroupIntoBatches or GroupByKey (written
        to the last row here with ``flush_groups``)."""
        for row in element[1] if isinstance(element, tuple) else (element,):
            key = row[self._key]
            previous = self._buffer.get(key)
            if previous is None or row_version(self._view, row) >= row_version(
                self._view, previous
            ):
                self._buffer[key] = row
        if self._flush_groups:  # the group's newest rows, in batches
            rows, self._buffer = list(self._buffer.values()), {}
            for start in range(0, len(rows), self._batch_size):
                yield from self._write(rows[start : start + self._batch_size])
        elif len(self._buffer) >= self._batch_size:
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
        yield from self._write(rows)

    def _write(self, rows: list[dict]):
        if not rows:
            return
        # Rows in the buffer were produced before this moment: the progress mark.
        features, states = state_rows(self._view, rows, int(time.time() * 1000))
        error = self._write_with_retries(self._view, features)
        if error is None and states:
            error = self._write_with_retries(KEYED_STATE, states)
        if error is None:
            self._written.inc(len(rows))
            return
        self._failed.inc(len(rows))
        for row in rows:
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, write_letter(self._view, row, error))

    def _write_with_retries(self, view: str, rows: list[dict]) -> Exception | None:
        try:
            self._retry.call(
                lambda: self._sink.write_rows(view, rows), on_retry=lambda _: self._retries.inc()
            )
        except Exception as err:  # the sink wraps client errors
            LOG.error("giving up on %d %s rows: %s", len(rows), view, err)
            return err
        return None


class WriteFeatures(beam.PTransform):
    """Write rows of one feature view; the output is the dead letters of failed rows.

    ``backoff_s``: first retry delay in seconds, doubled on each further retry (up
    to 5 s); a write is retried ``max_retries`` times and until ``retry_budget_s``
    seconds have passed. ``max_buffering_s`` (streaming): longest a row waits for
    its batch, seconds; None writes per bundle (bounded input, where bundles are large).
    ``group_shards`` (bounded input, on a runner that drops ``finish_bundle``'s
    outputs: the DaskRunner): rows are grouped by entity into that many shards and
    each shard written while it is processed, so every failed row's dead letter
    reaches the output.
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
        retry_budget_s: float = 0.0,
        group_shards: int | None = None,
    ):
        super().__init__()
        if view not in FEATURE_VIEWS:
            raise ValueError(f"view must be one of {sorted(FEATURE_VIEWS)}, got {view!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_buffering_s is not None and max_buffering_s <= 0:
            raise ValueError(f"max_buffering_s must be > 0 seconds, got {max_buffering_s}")
        if group_shards is not None and (group_shards < 1 or max_buffering_s is not None):
            raise ValueError(
                f"group_shards must be >= 1 and without max_buffering_s, got {group_shards}"
            )
        retry = RetryPolicy(max_retries, backoff_s, retry_budget_s, max(backoff_s, 5.0))
        self._fn = _WriteFn(sink_factory, view, batch_size, retry, group_shards is not None)
        self._batch_size = batch_size
        self._max_buffering_s = max_buffering_s
        self._group_shards = group_shards
        self._key = FEATURE_VIEWS[view][0]

    def expand(self, rows):
        if self._max_buffering_s is not None:
            rows = (
                rows
                | "ShardByEntity" >> self._by_shard(self.SHARDS)
                | "GatherBatches"
                >> beam.GroupIntoBatches(
                    self._batch_size, max_buffering_duration_secs=self._max_buffering_s
                )
            )
        elif self._group_shards is not None:
            rows = (
                rows
                | "ShardByEntity" >> self._by_shard(self._group_shards)
                | "GroupShards" >> beam.GroupByKey()
            )
        outputs = rows | "WriteBatches" >> beam.ParDo(self._fn).with_outputs(DEAD_LETTER, main="ok")
        return outputs[DEAD_LETTER]

    def _by_shard(self, shards: int):
        key = self._key
        return beam.Map(lambda row: (_shard(row[key], shards), row)).with_output_types(
            typehints.KV[int, typehints.Any]
        )


def _shard(entity: str, shards: int) -> int:
    # zlib.crc32 is stable across processes, unlike hash() of a str.
    return zlib.crc32(entity.encode()) % shards
