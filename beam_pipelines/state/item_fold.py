"""The bounded replay of item state, every item's events at once (NumPy).

The state after each event of each item, as folding them one by one through
``ItemState`` gives it (up to float rounding), as the columns of
``ItemState.features``: decayed exposures, engagements, rewards and conversions
are prefix sums (``state.prefix``), the Beta posterior and trending follow.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from beam_pipelines.state.columns import ScoredColumns
from beam_pipelines.state.config import StateConfig
from beam_pipelines.state.item_state import CONVERSIONS, ENGAGED, EXPOSURES
from beam_pipelines.state.prefix import decayed_prefix
from beam_pipelines.state.user_fold import groups, replay_order


class ItemHistory(NamedTuple):
    """One row per event, items one after another in replay order; ``sums``: rows ×
    half-lives × (exposures, engaged, reward, conversions)."""

    items: list[str]
    item_of_row: np.ndarray
    newest_ms: np.ndarray
    count: np.ndarray
    sums: np.ndarray

    def features(self, config: StateConfig) -> dict[str, np.ndarray]:
        """The feature columns of ``ItemState.features`` (float64, int64)."""
        v = self.sums
        h_short, h_long = config.item_short_half_life_s, config.item_long_half_life_s
        prior = 1.0 / h_long
        trending = (v[:, 0, ENGAGED] / h_short + prior) / (v[:, 1, ENGAGED] / h_long + prior)
        failures = np.maximum(v[:, 1, EXPOSURES] - v[:, 1, CONVERSIONS], 0.0)
        return {
            "item_event_count": self.count,
            "item_impressions_short": v[:, 0, EXPOSURES],
            "item_impressions_long": v[:, 1, EXPOSURES],
            "item_engagements_short": v[:, 0, ENGAGED],
            "item_engagements_long": v[:, 1, ENGAGED],
            "item_reward_sum_short": v[:, 0, 2],
            "item_reward_sum_long": v[:, 1, 2],
            "item_beta_alpha": config.beta_prior_alpha + v[:, 1, CONVERSIONS],
            "item_beta_beta": config.beta_prior_beta + failures,
            "item_trending": trending,
            "item_last_event_ms": self.newest_ms,
        }


def fold_items(columns: ScoredColumns, config: StateConfig, order: str) -> ItemHistory:
    """Replay every item in ``columns`` (accepted events) in ``order``."""
    half_lives = np.array([config.item_short_half_life_s, config.item_long_half_life_s])
    indices = replay_order(columns, order, columns.item_id)
    n = len(indices)
    ts = np.fromiter((columns.timestamp_ms[i] for i in indices), np.int64, n)
    x = np.empty((n, 4))
    x[:, EXPOSURES] = np.fromiter((columns.exposure[i] for i in indices), np.float64, n)
    x[:, ENGAGED] = np.fromiter((columns.engaged[i] for i in indices), np.float64, n)
    x[:, 2] = np.fromiter((columns.reward[i] for i in indices), np.float64, n)
    x[:, CONVERSIONS] = np.fromiter((columns.conversion[i] for i in indices), np.float64, n)
    items, sizes = [], []
    for item, run in groups(indices, columns.item_id):
        items.append(item)
        sizes.append(len(run))
    sums = np.empty((n, 2, 4))
    newest = np.empty(n, dtype=np.int64)
    count = np.empty(n, dtype=np.int64)
    start = 0
    for size in sizes:
        stop = start + size
        sums[start:stop], newest[start:stop] = decayed_prefix(
            ts[start:stop], x[start:stop], half_lives
        )
        count[start:stop] = np.arange(1, size + 1)
        start = stop
    item_of_row = np.repeat(np.arange(len(items)), sizes)
    return ItemHistory(items, item_of_row, newest, count, sums)
