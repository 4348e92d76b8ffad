"""The new stack's variants: rolling co-engagement, the sequential retriever, and ``full``.

- ``coengagement_rolling``: the streaming co-engagement source alone
  (``beam_pipelines.state.coengagement``, counts updated by every event).
- ``sequential_static`` / ``sequential_streaming``: the sequential retriever's
  next-item scores from the user's last N events frozen at the end of training /
  as of just before each event.
- ``full``: the service's order. Candidates are the union of each source's top
  ``candidates`` unseen items; they are ordered by the blend
  ``cosine co-engagement + weight · P_seq(item)`` (``BlendConfig``), the rest of
  the catalogue follows below them by the same blend.

The model enters through the small ``SequenceScorer`` interface, so the replay
logic is tested with NumPy stand-ins. Query vectors are computed in batches at
``fit`` (the state never depends on what was recommended); histories come from
the log in protocol order: the user's last N events strictly before the event.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Protocol

import numpy as np

from models.blend import BLEND_CANDIDATES, BLEND_WEIGHT, blend
from models.evaluation.data import EventLog
from models.evaluation.progress import progress
from models.evaluation.world import World

POPULARITY_TIE_BREAK = 1e-6
_CANDIDATE_OFFSET = 1e9  # the ranked candidates sit above the rest of the catalogue


class SequenceScorer(Protocol):
    """A trained sequential retriever over the log's item order."""

    max_len: int

    def item_table(self) -> np.ndarray:
        """``[n_items, d]`` output vectors, row per ``log.items`` entry."""

    def queries(self, rows: np.ndarray, ts_ms: np.ndarray, rewards: np.ndarray) -> np.ndarray:
        """``[B, d]`` query vectors of right-aligned histories (row -1 = padding)."""


@dataclasses.dataclass(frozen=True)
class BlendConfig:
    """How ``full`` orders candidates. ``weight`` multiplies the sequential model's
    softmax probability, added to the co-engagement cosine (both in [0, 1])."""

    weight: float = BLEND_WEIGHT
    candidates: int = BLEND_CANDIDATES


def histories(
    log: EventLog, positions: np.ndarray, max_len: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The user's last ``max_len`` events strictly before each position (right-aligned)."""
    rows = np.full((len(positions), max_len), -1, dtype=np.int64)
    ts = np.zeros((len(positions), max_len), dtype=np.int64)
    rewards = np.zeros((len(positions), max_len), dtype=np.float32)
    past: dict[int, collections.deque[int]] = collections.defaultdict(
        lambda: collections.deque(maxlen=max_len)
    )
    wanted = iter(np.sort(positions))
    out_row = {int(p): i for i, p in enumerate(positions)}
    nxt = next(wanted, None)
    for k in range(len(log.events)):
        if nxt is None:
            break
        while nxt is not None and nxt == k:
            user = int(log.user_idx[k])
            h = list(past[user])
            if h:
                i = out_row[k]
                rows[i, -len(h) :] = log.item_idx[h]
                ts[i, -len(h) :] = log.ts_ms[h]
                rewards[i, -len(h) :] = [log.events[j].reward for j in h]
            nxt = next(wanted, None)
        past[int(log.user_idx[k])].append(k)
    return rows, ts, rewards


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max()
    p = np.exp(z)
    return p / p.sum()


class CoEngagementRolling:
    """Co-engagement cosine over the user's recent items; rolling popularity when none."""

    name = "coengagement_rolling"

    def fit(self, world: World) -> None:
        if world.coengagement is None:
            raise ValueError("coengagement_rolling needs World(coengagement=True)")

    def scores(self, world: World, user: int) -> np.ndarray:
        assert world.coengagement is not None
        recent = world.windows[user].recent()
        if not recent:
            return world.counts
        co = world.coengagement.score(recent, world.item_events)
        return co + POPULARITY_TIE_BREAK * world.counts


class SequentialStreaming:
    """Next-item scores from the last N events as of just before each event."""

    name = "sequential_streaming"

    def __init__(self, model: SequenceScorer, show_progress: bool = False):
        self.model = model
        self.show_progress = show_progress

    def fit(self, world: World) -> None:
        log = world.log
        self._table = self.model.item_table().astype(np.float64)
        positions = np.arange(world.applied, len(log.events))
        rows, ts, rewards = histories(log, positions, self.model.max_len)
        parts = [
            self.model.queries(rows[s : s + 1024], ts[s : s + 1024], rewards[s : s + 1024])
            for s in progress(
                range(0, len(positions), 1024), "sequence queries", self.show_progress
            )
        ]
        self._queries = np.concatenate(parts).astype(np.float64)
        self._start = world.applied

    def scores(self, world: World, user: int) -> np.ndarray:
        return self._table @ self._queries[world.applied - self._start]


class SequentialStatic:
    """The same model, each user's history frozen at the end of training."""

    name = "sequential_static"

    def __init__(self, model: SequenceScorer):
        self.model = model

    def fit(self, world: World) -> None:
        log = world.log
        self._table = self.model.item_table().astype(np.float64)
        rows, ts, rewards = _frozen_histories(log, world.applied, self.model.max_len)
        self._queries = self.model.queries(rows, ts, rewards).astype(np.float64)
        self._scores: dict[int, np.ndarray] = {}

    def scores(self, world: World, user: int) -> np.ndarray:
        cached = self._scores.get(user)
        if cached is None:
            cached = self._scores[user] = self._table @ self._queries[user]
        return cached


def _frozen_histories(
    log: EventLog, n_train: int, max_len: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every user's last ``max_len`` training events (right-aligned, row per user)."""
    rows = np.full((log.n_users, max_len), -1, dtype=np.int64)
    ts = np.zeros((log.n_users, max_len), dtype=np.int64)
    rewards = np.zeros((log.n_users, max_len), dtype=np.float32)
    past: dict[int, collections.deque[int]] = collections.defaultdict(
        lambda: collections.deque(maxlen=max_len)
    )
    for k in range(n_train):
        past[int(log.user_idx[k])].append(k)
    for user, h in past.items():
        idx = list(h)
        rows[user, -len(idx) :] = log.item_idx[idx]
        ts[user, -len(idx) :] = log.ts_ms[idx]
        rewards[user, -len(idx) :] = [log.events[j].reward for j in idx]
    return rows, ts, rewards


class Full:
    """The service's stack (``serving.blend``): both sources' candidates, blended."""

    name = "full"

    def __init__(self, sequential: SequentialStreaming, blend: BlendConfig | None = None):
        self.sequential = sequential
        self.blend = blend or BlendConfig()
        self.coengagement = CoEngagementRolling()

    def fit(self, world: World) -> None:
        self.coengagement.fit(world)
        self.sequential.fit(world)

    def scores(self, world: World, user: int) -> np.ndarray:
        assert world.coengagement is not None
        logits = self.sequential.scores(world, user)
        co = world.coengagement.score(world.windows[user].recent(), world.item_events)
        seen = world.seen_items(user)
        n = self.blend.candidates
        seq_rows = top_unseen(logits, seen, n)
        co_rows = top_unseen(co, seen, n, positive=True)
        probability = np.zeros_like(logits)
        probability[seq_rows] = softmax(logits)[seq_rows]
        rows, blended = blend(seq_rows, probability[seq_rows], co_rows, co, self.blend.weight)
        out = POPULARITY_TIE_BREAK * world.counts + probability * self.blend.weight + co
        out[rows] = _CANDIDATE_OFFSET + blended + POPULARITY_TIE_BREAK * world.counts[rows]
        return out


def top_unseen(scores: np.ndarray, seen: np.ndarray, n: int, positive: bool = False) -> np.ndarray:
    """The ``n`` best rows outside ``seen`` (only scores > 0 with ``positive``), best first."""
    masked = scores.astype(np.float64, copy=True)
    masked[seen] = -np.inf
    if positive:
        masked[masked <= 0] = -np.inf
    k = min(n, masked.size)
    top = np.argpartition(-masked, k - 1)[:k]
    top = top[np.isfinite(masked[top])]
    return top[np.argsort(-masked[top], kind="stable")]
