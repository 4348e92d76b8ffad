"""ExperimentMetrics in a Beam pipeline gives the report's numbers on the same events."""

from __future__ import annotations

import math

import apache_beam as beam
from apache_beam.testing.util import assert_that

from beam_pipelines.experiments.aggregate import metrics_record, per_user_rows, variant_metrics
from beam_pipelines.experiments.attribution import attribute, split_events
from beam_pipelines.rewards import SHORT_VIDEO
from beam_pipelines.transforms.experiments import ExperimentMetrics
from rtp.simulator.experiment_log import experiment, synthetic_log
from tests.helpers.pipelines import batch_pipeline


def rounded(record: dict) -> tuple:
    return tuple(
        sorted(
            (k, None if isinstance(v, float) and math.isnan(v) else round(v, 9))
            if isinstance(v, float)
            else (k, v)
            for k, v in record.items()
        )
    )


def test_pipeline_matches_the_report_computation() -> None:
    events = synthetic_log(experiment("ab"), 60, seed=3, lifts={"treatment": 0.5})
    exposures, outcomes, _ = split_events(events, SHORT_VIDEO)
    attributed, _ = attribute(exposures, outcomes)
    expected = [
        rounded(metrics_record(key, variant_metrics(rows)))
        for key, rows in per_user_rows(attributed).items()
    ]
    assert len(expected) == 2 * 5  # 2 variants x (4 UTC days + the whole run)

    with batch_pipeline() as p:
        records = p | beam.Create(events) | ExperimentMetrics(SHORT_VIDEO)
        got = records | beam.Map(rounded)

        def check(actual):
            assert sorted(actual) == sorted(expected)

        assert_that(got, check)
