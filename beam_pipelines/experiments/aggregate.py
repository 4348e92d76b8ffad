"""Per variant (and per variant and day): users, exposures, engagements and the two
ratio metrics with their intervals, from attributed exposures.

The unit is the user: exposures are summed per ``(experiment, variant, day, user)``
(a Beam job's ``CombinePerKey``), then each group's per-user rows give the metrics
(``stats.ratio_estimate``). ``engagements`` counts engaged exposures (one or more
attributed engaged events), so ``engagement_rate`` is in [0, 1];
``reward_per_exposure`` sums every attributed event's reward. A day is the UTC date
of the exposure.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
from collections.abc import Iterable
from typing import Any

import numpy as np

from beam_pipelines.experiments.attribution import Attributed
from beam_pipelines.experiments.stats import Estimate, ratio_estimate

EXPOSURES, ENGAGED, REWARD = range(3)
METRICS = ("engagement_rate", "reward_per_exposure")
ALL_DAYS = ""
"""The ``day`` of the whole run's group."""

GroupKey = tuple[str, str, str]
"""``(experiment, variant, day)``; day ``ALL_DAYS`` for the whole run."""


def utc_day(timestamp_ms: int) -> str:
    return dt.datetime.fromtimestamp(timestamp_ms / 1000, dt.UTC).date().isoformat()


@dataclasses.dataclass(frozen=True)
class VariantMetrics:
    users: int
    exposures: int
    engagements: int
    reward: float
    engagement_rate: Estimate
    reward_per_exposure: Estimate


def per_user_rows(attributed: Iterable[Attributed]) -> dict[GroupKey, np.ndarray]:
    """Group → ``[users, 3]`` rows of (exposures, engaged exposures, reward), one per
    user of the group, for each day and for the whole run."""
    sums: dict[GroupKey, dict[str, list[float]]] = collections.defaultdict(dict)
    for a in attributed:
        e = a.exposure
        day = utc_day(e.timestamp_ms)
        for experiment, variant in e.pairs:
            for key in ((experiment, variant, day), (experiment, variant, ALL_DAYS)):
                row = sums[key].setdefault(e.user_id, [0.0, 0.0, 0.0])
                row[EXPOSURES] += 1
                row[ENGAGED] += float(a.engaged)
                row[REWARD] += a.reward
    return {key: np.asarray(list(users.values())) for key, users in sums.items()}


def variant_metrics(rows: np.ndarray) -> VariantMetrics:
    """The metrics of one group's per-user rows (``per_user_rows``)."""
    rows = np.asarray(rows, dtype=np.float64).reshape(-1, 3)
    exposures = rows[:, EXPOSURES]
    return VariantMetrics(
        users=len(rows),
        exposures=int(exposures.sum()),
        engagements=int(rows[:, ENGAGED].sum()),
        reward=float(rows[:, REWARD].sum()),
        engagement_rate=ratio_estimate(rows[:, ENGAGED], exposures),
        reward_per_exposure=ratio_estimate(rows[:, REWARD], exposures),
    )


def metrics_record(key: GroupKey, metrics: VariantMetrics) -> dict[str, Any]:
    """One flat row (a Parquet or online-store row) of a group's metrics; ``day`` is
    ``ALL_DAYS`` for the whole run. NaN where the data give no interval."""
    experiment, variant, day = key
    row: dict[str, Any] = {
        "experiment": experiment,
        "variant": variant,
        "day": day,
        "users": metrics.users,
        "exposures": metrics.exposures,
        "engagements": metrics.engagements,
        "reward": metrics.reward,
    }
    for metric in METRICS:
        estimate = getattr(metrics, metric)
        row[metric] = estimate.value
        row[f"{metric}_ci_low"] = estimate.ci_low
        row[f"{metric}_ci_high"] = estimate.ci_high
    return row
