"""The streaming job's experiment branch, on a TestStream through ComputeFeatures:
its last record per group equals the batch ``ExperimentMetrics`` on the same events,
delivered out of order within the lateness, with duplicate exposures and one
redelivered event."""

from __future__ import annotations

import apache_beam as beam
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.util import assert_that, equal_to

from beam_pipelines.rewards import SHORT_VIDEO
from beam_pipelines.sinks import FeastSinkFactory
from beam_pipelines.transforms.experiment_stream import (
    RECORDS,
    ExperimentMetricRows,
    StreamExperimentMetrics,
)
from beam_pipelines.transforms.experiments import ExperimentMetrics
from beam_pipelines.transforms.graph import ACCEPTED_EVENTS, ComputeFeatures, FeatureSettings
from beam_pipelines.transforms.windowed_parquet import WriteWindowedParquet
from beam_pipelines.transforms.write import WriteFeatures
from feature_repo.features import (
    EVENT_TIMESTAMP,
    EXPERIMENT_ALL_VARIANTS,
    EXPERIMENT_GROUP_KEY,
    EXPERIMENT_METRICS,
    EXPERIMENT_UPDATES,
    FEATURE_VIEWS,
)
from feature_repo.store import FeatureStoreClient, sqlite_settings
from rtp.simulator.experiment_log import (
    MINUTE_MS,
    arrival_order,
    experiment,
    synthetic_log,
    with_duplicates,
)
from tests.helpers.pipelines import Collect, StreamBuilder, batch_pipeline, streaming_pipeline
from tests.unit.test_experiments_incremental import assert_same_records

WINDOW_MS = 10 * MINUTE_MS
LATENESS_S = 1200.0
BUNDLE = 40


def stream_clock() -> float:
    """Processing time as the TestStream's clock starts it (0); a timer set at
    ``0 + emit_every_s`` fires once the stream has advanced that far."""
    return 0.0


def batch(events) -> dict:
    with batch_pipeline() as p:
        collect = Collect()
        _ = p | beam.Create(events) | ExperimentMetrics(SHORT_VIDEO, WINDOW_MS) | collect
    return {(r["experiment"], r["variant"], r["day"]): r for r in collect.collected()}


def stream_of(arrivals) -> StreamBuilder:
    """Bundles of the arrivals; the watermark stays at the oldest event still to
    come, and processing time moves 5 s per bundle (an emission every other one)."""
    watermark = min(e.timestamp_ms for e in arrivals) - 1
    stream = StreamBuilder(watermark)
    for start in range(0, len(arrivals), BUNDLE):
        bundle = arrivals[start : start + BUNDLE]
        stream.deliver([(e.to_json(), e.timestamp_ms) for e in bundle]).processing_time(5.0)
        rest = arrivals[start + BUNDLE :]
        if rest and min(e.timestamp_ms for e in rest) > watermark:
            watermark = min(e.timestamp_ms for e in rest)
            stream.watermark(watermark)
    return stream


def test_streamed_metrics_end_equal_to_the_batch_ones(tmp_path) -> None:
    events = with_duplicates(synthetic_log(experiment("ab"), 16, seed=4), every=5)
    arrivals = arrival_order(events, int(LATENESS_S * 1000), seed=4)
    arrivals.insert(len(arrivals) // 2, arrivals[3])  # a redelivery: dead-lettered, not counted

    store = sqlite_settings(tmp_path / "online.db")
    with streaming_pipeline() as p:
        collect = Collect()
        features = (
            p
            | stream_of(arrivals).build()
            | ComputeFeatures(FeatureSettings(rewards=SHORT_VIDEO, allowed_lateness_s=LATENESS_S))
        )
        metrics = (
            features[ACCEPTED_EVENTS]
            | beam.Map(lambda scored: scored.source)
            | StreamExperimentMetrics(
                SHORT_VIDEO, WINDOW_MS, LATENESS_S, emit_every_s=8.0, clock=stream_clock
            )
        )
        rows = metrics[RECORDS] | ExperimentMetricRows()
        _ = rows | collect
        _ = rows | WriteWindowedParquet(str(tmp_path / "files"), EXPERIMENT_METRICS)
        failed = rows | WriteFeatures(FeastSinkFactory(store), EXPERIMENT_METRICS, batch_size=10)
        assert_that(failed, equal_to([]))

    rows = collect.collected()
    variant_rows = [r for r in rows if r["variant"] != EXPERIMENT_ALL_VARIANTS]
    last: dict = {}
    for row in variant_rows:
        key = (row["experiment"], row["variant"], row["day"])
        if key not in last or row[EXPERIMENT_UPDATES] > last[key][EXPERIMENT_UPDATES]:
            last[key] = row
    assert len(variant_rows) > len(last)  # emitted while streaming, not only at the end
    expected = batch(events)
    assert len(expected) >= 6
    group_key, columns = FEATURE_VIEWS[EXPERIMENT_METRICS]
    assert set(next(iter(last.values()))) == {group_key, EVENT_TIMESTAMP, *columns}
    assert_same_records(
        {k: {c: v for c, v in r.items() if c in expected[k]} for k, r in last.items()}, expected
    )
    assert all(r[EXPERIMENT_GROUP_KEY] == "/".join(k) for k, r in last.items())
    files = pq.read_table(tmp_path / "files").to_pylist()  # every emitted row, as Parquet
    assert sorted((r[EXPERIMENT_GROUP_KEY], r[EXPERIMENT_UPDATES]) for r in files) == sorted(
        (r[EXPERIMENT_GROUP_KEY], r[EXPERIMENT_UPDATES]) for r in rows
    )
    with FeatureStoreClient(store) as client:  # the dashboard's view holds the last rows
        stored = client.read(EXPERIMENT_METRICS, [r[EXPERIMENT_GROUP_KEY] for r in last.values()])
    for row in last.values():
        got = stored[row[EXPERIMENT_GROUP_KEY]]
        assert (got[EXPERIMENT_UPDATES], got["users"]) == (row[EXPERIMENT_UPDATES], row["users"])
        assert got["engagement_rate"] == pytest.approx(
            row["engagement_rate"], rel=1e-6, nan_ok=True
        )


def test_emit_every_must_be_positive() -> None:
    with pytest.raises(ValueError, match="emit_every_s"):
        StreamExperimentMetrics(SHORT_VIDEO, emit_every_s=0)
