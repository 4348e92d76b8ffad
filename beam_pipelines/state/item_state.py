"""Per-item rolling state: decayed exposures, engagements, rewards; Beta posterior."""

from __future__ import annotations

import numpy as np

from beam_pipelines.state.config import StateConfig
from beam_pipelines.state.decay import DecayedSums, positive_part
from beam_pipelines.state.records import ScoredEvent
from feature_repo import features as f

EXPOSURES, ENGAGED, REWARD, CONVERSIONS = range(4)


class ItemState:
    """Short- and long-term decayed statistics of one item."""

    __slots__ = ("count", "sums")

    def __init__(self, config: StateConfig):
        self.sums = DecayedSums((config.item_short_half_life_s, config.item_long_half_life_s), 4)
        self.count = 0

    def push(self, event: ScoredEvent) -> None:
        x = item_channels([event.exposure], [event.engaged], [event.reward], [event.conversion])
        self.sums.push(event.timestamp_ms, x[0])
        self.count += 1

    def merge(self, other: ItemState) -> None:
        self.sums.merge(other.sums)
        self.count += other.count

    def features(self, config: StateConfig) -> dict:
        """Feature values as of the newest event (see feature_repo.features)."""
        short, long = self.sums.values.tolist()
        return {
            f.ITEM_EVENT_COUNT: self.count,
            **decayed_features(short, long, config),
            f.ITEM_LAST_EVENT_MS: int(self.sums.t_ref_ms or 0),
        }


def item_channels(exposure, engaged, reward, conversion) -> np.ndarray:
    """Rows of (exposure, engaged, reward, conversion) as floats, one per event."""
    return np.array([exposure, engaged, reward, conversion], dtype=np.float64).T


def decayed_features(short, long, config: StateConfig) -> dict:
    """The features of the short- and long-term sums, indexed by channel: one item's
    (a list of floats each) or one per row of the backfill's history (channels × rows
    arrays, giving columns).

    ``item_trending`` compares engagement rates (sum / half-life) of the two
    horizons, each smoothed by one pseudo-engagement per long half-life so a
    brand-new item with one like is not infinitely trending.
    """
    h_short, h_long = config.item_short_half_life_s, config.item_long_half_life_s
    prior = 1.0 / h_long
    trending = (short[ENGAGED] / h_short + prior) / (long[ENGAGED] / h_long + prior)
    # Successes are conversions (at most one per exposure), so alpha + beta
    # tracks exposures; a conversion without a logged exposure adds no failure.
    failures = positive_part(long[EXPOSURES] - long[CONVERSIONS])
    return {
        f.ITEM_IMPRESSIONS_SHORT: short[EXPOSURES],
        f.ITEM_IMPRESSIONS_LONG: long[EXPOSURES],
        f.ITEM_ENGAGEMENTS_SHORT: short[ENGAGED],
        f.ITEM_ENGAGEMENTS_LONG: long[ENGAGED],
        f.ITEM_REWARD_SUM_SHORT: short[REWARD],
        f.ITEM_REWARD_SUM_LONG: long[REWARD],
        f.ITEM_BETA_ALPHA: config.beta_prior_alpha + long[CONVERSIONS],
        f.ITEM_BETA_BETA: config.beta_prior_beta + failures,
        f.ITEM_TRENDING: trending,
    }
