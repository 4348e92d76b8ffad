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
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from beam_pipelines.experiments.attribution import Attributed
from beam_pipelines.experiments.stats import Estimate, ratio_from_sums

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
    return GroupSums.of(rows).metrics()


@dataclasses.dataclass
class GroupSums:
    """Sufficient statistics of one group's per-user rows: the number of users, the
    column sums and the sums of products of columns (``products[i, j] = Σ row_i·row_j``),
    enough for the metrics and their clustered intervals (``stats.ratio_from_sums``).
    A stream keeps them exactly by replacing a user's old row with the new one."""

    users: int = 0
    sums: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(3))
    products: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((3, 3)))
    updates: int = 0
    """Rows replaced so far: orders two snapshots of one group."""

    @classmethod
    def of(cls, rows: np.ndarray) -> GroupSums:
        rows = np.asarray(rows, dtype=np.float64).reshape(-1, 3)
        return cls(len(rows), rows.sum(axis=0), rows.T @ rows, len(rows))

    @classmethod
    def pooled(cls, parts: Iterable[GroupSums]) -> GroupSums:
        """The sums of the union of disjoint groups (an experiment's variants)."""
        total = cls()
        for part in parts:
            total.users += part.users
            total.sums = total.sums + part.sums
            total.products = total.products + part.products
            total.updates += part.updates
        return total

    def replace(self, old: Sequence[float] | None, new: Sequence[float] | None) -> None:
        """A user's row went from ``old`` to ``new`` (None: the user was, or is no
        longer, in the group)."""
        for row, sign in ((old, -1), (new, 1)):
            if row is not None:
                row = np.asarray(row, dtype=np.float64)
                self.users += sign
                self.sums += sign * row
                self.products += sign * np.outer(row, row)
        self.updates += 1

    def metrics(self) -> VariantMetrics:
        def ratio(x: int) -> Estimate:
            s, p, y = self.sums.tolist(), self.products.tolist(), EXPOSURES  # plain floats
            return ratio_from_sums(self.users, s[x], s[y], p[x][x], p[y][y], p[x][y])

        return VariantMetrics(
            users=self.users,
            exposures=round(self.sums[EXPOSURES]),
            engagements=round(self.sums[ENGAGED]),
            reward=float(self.sums[REWARD]),
            engagement_rate=ratio(ENGAGED),
            reward_per_exposure=ratio(REWARD),
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
