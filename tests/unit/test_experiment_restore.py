"""Restart-safe experiment metrics on a real (SQLite) store: a streaming run killed
with part of its writes lost, then restarted on a redelivery of the messages since
shortly before the kill, ends with the same ``experiment_metrics`` rows as one
uninterrupted run: each user's changes applied once to its experiment and day.

As ``test_restore_state``: the job runs with a ``StateRestore``; the kill is a
first run over the events up to ``SPLIT`` whose writes of the ``lost`` views
after ``STORED`` never land (what a kill loses of the writes in flight); the
restart replays from ``REPLAY_FROM``, before ``STORED``, as the seek to the
progress marks does, so it sees events that every stage had stored (redeliveries
and restored duplicates) and events that some had not.
"""

from __future__ import annotations

import math

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from beam_pipelines.options import StreamingOptions
from beam_pipelines.resume import progress_marks
from beam_pipelines.rewards import SHORT_VIDEO
from beam_pipelines.sinks import FeastSinkFactory
from beam_pipelines.streaming import WriteAllFeatures, written_views
from beam_pipelines.transforms.experiment_stream import (
    RECORDS,
    USER_EXPERIMENT_ROWS,
    ExperimentMetricRows,
    StreamExperimentMetrics,
    group_id,
)
from beam_pipelines.transforms.graph import ACCEPTED_EVENTS, ComputeFeatures, FeatureSettings
from beam_pipelines.transforms.restore import StateRestore
from beam_pipelines.transforms.retry import RetryPolicy
from beam_pipelines.transforms.write import WriteFeatures
from feature_repo.features import (
    EXPERIMENT_ALL_VARIANTS,
    EXPERIMENT_METRICS,
    EXPERIMENT_SRM_P_VALUE,
    EXPERIMENT_UPDATES,
    ITEM_REALTIME,
    USER_EXPERIMENTS,
    USER_REALTIME,
)
from feature_repo.store import FeatureStoreClient, sqlite_settings
from rtp.simulator.experiment_log import (
    MINUTE_MS,
    arrival_order,
    experiment,
    synthetic_log,
    with_duplicates,
)
from tests.helpers.pipelines import streaming_pipeline
from tests.unit.test_experiments_incremental import batch_records
from tests.unit.test_restore_state import LosingSinkFactory
from tests.unit.test_transforms_experiment_stream import stream_clock, stream_of

WINDOW_MS = 10 * MINUTE_MS
LATENESS_S = 4 * 3600.0  # more than the replay spans in event time: no redelivery is late
EVENTS = with_duplicates(synthetic_log(experiment("ab"), 40, seed=7, days=1), every=4)
ARRIVALS = arrival_order(EVENTS, 20 * MINUTE_MS, seed=7)
STORED, SPLIT = 150, 210  # the kill: the writes of arrivals STORED..SPLIT may be lost
REPLAY_FROM = 130  # the restart's first redelivery


def _run(config: dict, arrivals, lost: tuple[str, ...] = ()) -> None:
    restore = StateRestore(FeastSinkFactory(config), RetryPolicy(max_retries=0, backoff_s=0))
    sink = LosingSinkFactory(config, lost)
    p = streaming_pipeline()
    features = (
        p
        | stream_of(arrivals).build()
        | ComputeFeatures(
            FeatureSettings(rewards=SHORT_VIDEO, allowed_lateness_s=LATENESS_S, restore=restore)
        )
    )
    _ = features | WriteAllFeatures(sink, batch_size=500, max_retries=0, backoff_s=0)
    metrics = (
        features[ACCEPTED_EVENTS]
        | beam.Map(lambda scored: scored.source)
        | StreamExperimentMetrics(
            SHORT_VIDEO, WINDOW_MS, LATENESS_S, 8.0, clock=stream_clock, restore=restore
        )
    )
    _ = (
        metrics[RECORDS]
        | ExperimentMetricRows()
        | "WriteMetrics" >> WriteFeatures(sink, EXPERIMENT_METRICS, max_retries=0)
    )
    _ = metrics[USER_EXPERIMENT_ROWS] | "WriteUsers" >> WriteFeatures(
        sink, USER_EXPERIMENTS, max_retries=0
    )
    p.run().wait_until_finish()


def _entities() -> list[str]:
    keys = set(batch_records(EVENTS, WINDOW_MS))
    keys |= {(e, EXPERIMENT_ALL_VARIANTS, d) for e, _, d in keys}
    return sorted(group_id({"experiment": e, "variant": v, "day": d}) for e, v, d in keys)


def _stored(config: dict) -> dict:
    """The stored rows without what differs between any two runs (when, how many changes)."""
    with FeatureStoreClient(config) as client:
        rows = client.read(EXPERIMENT_METRICS, _entities())
    return {
        entity: {c: v for c, v in row.items() if c != EXPERIMENT_UPDATES}
        for entity, row in rows.items()
    }


def _same(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for entity, row in want.items():
        for column, value in row.items():
            expected = value if isinstance(value, str | None) else pytest.approx(value, nan_ok=True)
            assert got[entity][column] == expected, (entity, column)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    config = sqlite_settings(tmp_path_factory.mktemp("whole") / "online.db")
    _run(config, ARRIVALS)
    return _stored(config)


def test_the_uninterrupted_rows_are_the_batch_metrics(uninterrupted) -> None:
    expected = batch_records(EVENTS, WINDOW_MS)
    assert len(expected) >= 4
    for (e, v, d), record in expected.items():
        row = uninterrupted[group_id({"experiment": e, "variant": v, "day": d})]
        assert row["users"] == record["users"] and row["exposures"] == record["exposures"]
    assert all(r is not None for r in uninterrupted.values())
    assert all(0 <= r[EXPERIMENT_SRM_P_VALUE] <= 1 for r in uninterrupted.values())


@pytest.mark.parametrize(
    "lost",
    [
        (),
        (EXPERIMENT_METRICS,),
        (USER_EXPERIMENTS,),
        (USER_REALTIME,),
        (USER_EXPERIMENTS, USER_REALTIME, ITEM_REALTIME),
        (EXPERIMENT_METRICS, USER_REALTIME),
    ],
)
def test_a_restart_after_lost_writes_ends_as_an_uninterrupted_run(lost, uninterrupted, tmp_path):
    config = sqlite_settings(tmp_path / "online.db")
    _run(config, ARRIVALS[:STORED])
    _run(config, ARRIVALS[STORED:SPLIT], lost)  # killed: the writes of ``lost`` never landed
    _run(config, ARRIVALS[REPLAY_FROM:])  # restarted: redeliveries, then new events
    _same(_stored(config), uninterrupted)


def test_without_restore_a_restart_forgets(uninterrupted, tmp_path):
    """The failure restoring prevents: each experiment and day restarts from nothing,
    and its rows count only the users seen since."""
    config = sqlite_settings(tmp_path / "online.db")
    _run(config, ARRIVALS[:SPLIT])
    p = streaming_pipeline()
    events = (
        p
        | stream_of(ARRIVALS[SPLIT:]).build()
        | ComputeFeatures(FeatureSettings(rewards=SHORT_VIDEO, allowed_lateness_s=LATENESS_S))
    )
    _ = (
        (
            events[ACCEPTED_EVENTS]
            | beam.Map(lambda scored: scored.source)
            | StreamExperimentMetrics(SHORT_VIDEO, WINDOW_MS, LATENESS_S, 8.0, clock=stream_clock)
        )[RECORDS]
        | ExperimentMetricRows()
        | WriteFeatures(FeastSinkFactory(config), EXPERIMENT_METRICS)
    )
    p.run().wait_until_finish()
    restarted = _stored(config)
    whole = next(e for e in uninterrupted if e.endswith(f"/{EXPERIMENT_ALL_VARIANTS}/"))
    assert restarted[whole]["users"] != uninterrupted[whole]["users"]
    assert not math.isnan(restarted[whole]["engagement_rate"])


class _Marks:
    """A store whose every view has a progress mark: the experiment views' oldest."""

    def read_bytes(self, view, feature, keys):
        return {k: b"1000" if "experiment" in k else b"5000" for k in keys}


@pytest.mark.parametrize("enabled, oldest", [("true", 1000), ("false", 5000)])
def test_a_restart_resumes_from_the_marks_of_the_views_it_writes(enabled, oldest) -> None:
    options = PipelineOptions([f"--experiment_metrics={enabled}"]).view_as(StreamingOptions)
    marks = progress_marks(_Marks(), written_views(options))
    assert (EXPERIMENT_METRICS in marks, USER_REALTIME in marks) == (enabled == "true", True)
    assert min(marks.values()) == oldest
