"""Per-user rolling state: decayed counts, rates, pooled embeddings, last N events."""

from __future__ import annotations

import bisect
from collections.abc import Callable

import numpy as np

from beam_pipelines.state.columns import key_codes
from beam_pipelines.state.config import StateConfig
from beam_pipelines.state.decay import DecayedSums, decayed_scan, ratio
from beam_pipelines.state.records import ScoredEvent
from feature_repo import features as f

EmbeddingLookup = Callable[[str], "np.ndarray | None"]

# Scalar channels, followed by the embedding dimensions.
EVENTS, REWARD, ENGAGED, EMB_WEIGHT = range(4)
_SCALARS = 4

# (timestamp_ms, event_id, item_id, reward): sorted oldest first, ties by event_id,
# so the kept last-N set does not depend on arrival order.
RecentEvent = tuple[int, str, str, float]


class UserState:
    """Short- and long-term decayed statistics of one user.

    The pooled embedding of a half-life is ``Σ r·e / Σ |r|`` over events whose item
    has an embedding in table ``embedding_version``; see ``features``.
    """

    __slots__ = ("count", "embedding_version", "recent", "sums")

    def __init__(self, config: StateConfig, dim: int, embedding_version: str):
        half_lives = (config.user_short_half_life_s, config.user_long_half_life_s)
        self.sums = DecayedSums(half_lives, _SCALARS + dim)
        self.count = 0
        self.recent: list[RecentEvent] = []
        self.embedding_version = embedding_version

    @property
    def last_event_ms(self) -> int | None:
        return self.sums.t_ref_ms

    def push(self, event: ScoredEvent, embedding: np.ndarray | None, recent_n: int) -> None:
        """Apply one accepted event; ``embedding`` of its item in the current version."""
        reward = np.array([event.reward], dtype=np.float64)
        dim = self.sums.values.shape[1] - _SCALARS
        x = np.concatenate(
            [
                scalar_channels(reward, np.array([event.engaged], dtype=np.float64)),
                embedding_channels(_ONE_CODE, [embedding], reward, dim),
            ],
            axis=1,
        )
        self.sums.push(event.timestamp_ms, x[0])
        self.count += 1
        entry = (event.timestamp_ms, event.event_id, event.item_id, float(event.reward))
        keep_last_n(self.recent, entry, recent_n)

    def merge(self, other: UserState, recent_n: int) -> None:
        """Fold in a state built from a disjoint set of events (same version)."""
        if other.embedding_version != self.embedding_version:
            raise ValueError("merge needs states of the same embedding version")
        self.sums.merge(other.sums)
        self.count += other.count
        for entry in other.recent:
            keep_last_n(self.recent, entry, recent_n)

    def rebuild_embeddings(self, lookup: EmbeddingLookup, version: str, dim: int) -> None:
        """Re-pool the embeddings from the last N events under a new table version.

        Counts and rates keep their full history; the embeddings can only be
        rebuilt from the events still remembered. ``dim`` may differ from before.
        """
        ts, _, items, rewards = zip(*self.recent, strict=True) if self.recent else ((),) * 4
        sums = self.sums
        pooled_sums = rebuilt_embeddings(
            ts, items, rewards, lookup, dim, sums.half_lives_s, sums.t_ref_ms
        )
        sums.values = np.concatenate([sums.values[:, :EMB_WEIGHT], pooled_sums], axis=1)
        self.embedding_version = version

    def features(self) -> dict:
        """Feature values as of the newest event (see feature_repo.features)."""
        v = self.sums.values
        short, long = pooled(v[:, _SCALARS:], v[:, EMB_WEIGHT]).tolist()
        scalars_short, scalars_long = v[:, :_SCALARS].tolist()
        ts, _, items, rewards = (
            zip(*reversed(self.recent), strict=True) if self.recent else ((),) * 4
        )
        return {
            f.USER_EMB_SHORT: short,
            f.USER_EMB_LONG: long,
            f.USER_EMBEDDING_VERSION: self.embedding_version,
            f.USER_EVENT_COUNT: self.count,
            **scalar_features(scalars_short, scalars_long),
            f.USER_LAST_EVENT_MS: int(self.sums.t_ref_ms or 0),
            f.USER_RECENT_ITEMS: list(items),
            f.USER_RECENT_TS_MS: list(ts),
            f.USER_RECENT_REWARDS: list(rewards),
        }


def keep_last_n(window: list, entry: tuple, n: int) -> None:
    """Insert ``entry`` (time ms, event_id, ...) into ``window`` (sorted oldest first)
    and keep the newest ``n``: ties in time go by event_id, so the kept set does not
    depend on arrival order."""
    bisect.insort(window, entry)
    if len(window) > n:
        del window[: len(window) - n]


def scalar_channels(reward: np.ndarray, engaged: np.ndarray) -> np.ndarray:
    """Rows of (1, r, engaged): the channels an event adds to the counts and rates."""
    x = np.empty((len(reward), 3))
    x[:, EVENTS], x[:, REWARD], x[:, ENGAGED] = 1.0, reward, engaged
    return x


_ONE_CODE = np.zeros(1, dtype=np.int64)


def embedding_channels(
    codes: np.ndarray, vectors: list[np.ndarray | None], reward: np.ndarray, dim: int
) -> np.ndarray:
    """Rows of (|r|, r·e) for events with reward ``r`` whose item's embedding is
    ``vectors[codes[k]]`` (None: not in the table): zero without an embedding or reward."""
    zero = np.zeros(dim)
    matrix = np.array([zero if v is None else v for v in vectors], dtype=np.float64)
    known = np.array([v is not None for v in vectors], dtype=bool)
    weight = np.where(known[codes], reward, 0.0)
    x = np.empty((len(codes), 1 + dim))
    x[:, 0] = np.abs(weight)
    x[:, 1:] = weight[:, None] * matrix.reshape(len(vectors), dim)[codes]
    return x


def rebuilt_embeddings(
    ts, items, rewards, lookup: EmbeddingLookup, dim: int, half_lives_s, t_ref_ms: int | None
) -> np.ndarray:
    """The (|r|, r·e) sums (half-lives × (1 + dim)) at ``t_ref_ms`` of the remembered
    events (times in ms, items, rewards) under the table ``lookup``: what a table
    version change re-pools a user's embeddings from."""
    if not ts:
        return np.zeros((len(half_lives_s), 1 + dim))
    codes, distinct = key_codes(items)
    x = embedding_channels(codes, [lookup(i) for i in distinct], np.array(rewards, float), dim)
    carry = np.zeros((1, len(half_lives_s), 1 + dim))
    sums, _ = decayed_scan(np.array(ts), x, half_lives_s, None, carry, [t_ref_ms])
    return sums[-1]


def scalar_features(short, long) -> dict:
    """Decayed event counts and rates from the short- and long-term sums, indexed by
    channel: one user's (a list of floats each) or one per row of the backfill's
    history (channels × rows arrays, giving columns)."""
    return {
        f.USER_EVENTS_SHORT: short[EVENTS],
        f.USER_EVENTS_LONG: long[EVENTS],
        f.USER_REWARD_RATE_SHORT: ratio(short[REWARD], short[EVENTS]),
        f.USER_REWARD_RATE_LONG: ratio(long[REWARD], long[EVENTS]),
        f.USER_ENGAGEMENT_RATE_SHORT: ratio(short[ENGAGED], short[EVENTS]),
        f.USER_ENGAGEMENT_RATE_LONG: ratio(long[ENGAGED], long[EVENTS]),
    }


# A weight decayed into the subnormals has too few bits left to divide by: the
# quotient would depend on the order the events arrived in.
_TINY = float(np.finfo(np.float64).tiny)


def pooled(weighted_sums: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Pooled embeddings ``Σ r·e / Σ |r|`` (float32) from weighted sums (… × dims) and
    their weights (…); zero where the weight is too small to divide by."""
    ok = (weights >= _TINY)[..., None]
    out = np.zeros_like(weighted_sums)
    return np.divide(weighted_sums, weights[..., None], out=out, where=ok).astype(np.float32)
