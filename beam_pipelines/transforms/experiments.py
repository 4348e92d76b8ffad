"""ExperimentMetrics: parsed events → per variant and day (and for the whole run)
users, exposures, engagements and the two ratio metrics with their intervals.

Attribution is per user and item, so the events are grouped by user and each
user's exposures and outcomes go through ``experiments.attribution`` as the report
does; the user's sums per ``(experiment, variant, day)`` are then grouped into
``experiments.aggregate.variant_metrics``. One implementation, the report's, on a
bounded log (batch semantics: a user's whole history in one group). Attribution
counts (``late``, ``no_exposure``, ``duplicate_exposures``, ...) are Beam counters.
Output: ``aggregate.metrics_record`` dicts.
"""

from __future__ import annotations

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from beam_pipelines.experiments.aggregate import metrics_record, per_user_rows, variant_metrics
from beam_pipelines.experiments.attribution import (
    DEFAULT_WINDOW_MS,
    EXPOSURE_TYPE,
    attribute,
    split_events,
)
from beam_pipelines.rewards import RewardConfig

COUNTS = (
    "attributed",
    "late",
    "no_exposure",
    "duplicate_exposures",
    "unlogged_exposures",
    "no_reward_rule",
)


class _AttributeUser(beam.DoFn):
    """``(user, events)`` → ``((experiment, variant, day), [exposures, engaged, reward])``."""

    def __init__(self, rewards: RewardConfig, window_ms: int, exposure_type: str):
        self._rewards, self._window_ms, self._exposure_type = rewards, window_ms, exposure_type
        self._counters = {name: Metrics.counter("rtp_experiments", name) for name in COUNTS}

    def process(self, element):
        _, events = element
        exposures, outcomes, skipped = split_events(events, self._rewards, self._exposure_type)
        attributed, counts = attribute(exposures, outcomes, self._window_ms)
        for name, n in {**skipped, **counts}.items():
            self._counters[name].inc(n)
        for key, rows in per_user_rows(attributed).items():
            yield key, rows[0].tolist()


class ExperimentMetrics(beam.PTransform):
    """Per-variant, per-day experiment metrics of ``EngagementEvent``s."""

    def __init__(
        self,
        rewards: RewardConfig,
        window_ms: int = DEFAULT_WINDOW_MS,
        exposure_type: str = EXPOSURE_TYPE,
    ):
        super().__init__()
        self._rewards, self._window_ms, self._exposure_type = rewards, window_ms, exposure_type

    def expand(self, events):
        return (
            events
            | "KeyByUser" >> beam.Map(lambda e: (e.user_id, e))
            | "GroupByUser" >> beam.GroupByKey()
            | "Attribute"
            >> beam.ParDo(_AttributeUser(self._rewards, self._window_ms, self._exposure_type))
            | "GroupByVariantDay" >> beam.GroupByKey()
            | "Metrics"
            >> beam.MapTuple(
                lambda key, rows: metrics_record(key, variant_metrics(np.asarray(list(rows))))
            )
        )
