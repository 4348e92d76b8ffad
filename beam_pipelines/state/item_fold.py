"""The bounded replay of item state, every item's events at once (NumPy).

The state after each event of each item, as folding them one by one through
``ItemState`` gives it (up to float rounding), as the columns of
``ItemState.features``: decayed exposures, engagements, rewards and conversions
are the streaming job's scan (``decay.decayed_scan``) over every item at once,
the Beta posterior and trending follow.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from beam_pipelines.state.columns import ScoredColumns
from beam_pipelines.state.config import StateConfig
from beam_pipelines.state.decay import decayed_scan
from beam_pipelines.state.item_state import decayed_features, item_channels
from beam_pipelines.state.user_fold import replay_groups
from feature_repo import features as f


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
        return {
            f.ITEM_EVENT_COUNT: self.count,
            **decayed_features(self.sums[:, 0].T, self.sums[:, 1].T, config),
            f.ITEM_LAST_EVENT_MS: self.newest_ms,
        }


def fold_items(columns: ScoredColumns, config: StateConfig, order: str) -> ItemHistory:
    """Replay every item in ``columns`` (accepted events) in ``order``."""
    half_lives = np.array([config.item_short_half_life_s, config.item_long_half_life_s])
    groups = replay_groups(columns, order, columns.item_id)
    by = groups.order
    fields = (columns.exposure, columns.engaged, columns.reward, columns.conversion)
    x = item_channels(*(np.asarray(field, dtype=np.float64)[by] for field in fields))
    ts = np.asarray(columns.timestamp_ms, dtype=np.int64)[by]
    sums, newest = decayed_scan(ts, x, half_lives, groups.starts)
    sizes = np.diff(np.append(groups.starts, len(by)))
    count = np.arange(len(by)) - np.repeat(groups.starts, sizes) + 1
    item_of_row = np.repeat(np.arange(len(groups.names)), sizes)
    return ItemHistory(groups.names, item_of_row, newest, count, sums)
