"""WriteWindowedParquet on the streaming DirectRunner: rows of a TestStream land in
one Parquet file per window of their event time, once the watermark passes it, in
the view's offline columns (the keyed state a row carries left out)."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from beam_pipelines.experiments.incremental import ExperimentDaySums
from beam_pipelines.history import arrow_schema
from beam_pipelines.transforms.experiment_stream import group_id
from beam_pipelines.transforms.restore import STATE_COLUMN
from beam_pipelines.transforms.windowed_parquet import WriteWindowedParquet
from feature_repo.features import (
    EVENT_TIMESTAMP,
    EXPERIMENT_GROUP_KEY,
    EXPERIMENT_METRICS,
    EXPERIMENT_SRM_P_VALUE,
)
from tests.helpers.pipelines import StreamBuilder, streaming_pipeline

T0_MS = 1_700_000_040_000  # a minute's start: windows of 60 s start here


def rows_at(t_ms: int, users: int) -> list[dict]:
    """An experiment's rows (two variants and the pooled one) computed at ``t_ms``."""
    sums = ExperimentDaySums()
    for k in range(users):
        variant = ("control", "treatment")[k % 2]
        sums.apply(f"e{k}", t_ms, ((variant, None, (2.0, 1.0, 0.5 * k)),), False, None)
    records = sums.records("ab", "")
    records[-1][STATE_COLUMN] = b"state"
    return [{EXPERIMENT_GROUP_KEY: group_id(r), EVENT_TIMESTAMP: t_ms, **r} for r in records]


def test_rows_are_written_per_window_once_it_closes(tmp_path) -> None:
    first = rows_at(T0_MS + 1_000, 4) + rows_at(T0_MS + 30_000, 6)
    second = rows_at(T0_MS + 75_000, 8)
    stream = (
        StreamBuilder(T0_MS)
        .deliver([(row, row[EVENT_TIMESTAMP]) for row in first])
        .watermark(T0_MS + 61_000)
        .deliver([(row, row[EVENT_TIMESTAMP]) for row in second])
    )
    with streaming_pipeline() as p:
        _ = (
            p
            | stream.build()
            | WriteWindowedParquet(str(tmp_path), EXPERIMENT_METRICS, window_s=60.0)
        )

    files = sorted(tmp_path.glob("experiment_metrics-*.parquet"))
    assert len(files) == 2, files
    tables = [pq.read_table(f) for f in files]
    assert all(t.schema.equals(arrow_schema(EXPERIMENT_METRICS)) for t in tables)
    assert [t.num_rows for t in tables] == [len(first), len(second)]
    got = tables[1].to_pylist()
    assert [r["users"] for r in got] == [4, 4, 8]
    assert got[0][EVENT_TIMESTAMP].timestamp() * 1000 == T0_MS + 75_000
    assert got[-1][EXPERIMENT_SRM_P_VALUE] == pytest.approx(1.0)
    assert STATE_COLUMN not in tables[0].column_names


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="window_s"):
        WriteWindowedParquet("out", EXPERIMENT_METRICS, window_s=0)
    with pytest.raises(ValueError, match="view"):
        WriteWindowedParquet("out", "nope")
