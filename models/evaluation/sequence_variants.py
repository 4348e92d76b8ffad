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
from collections.abc import Callable
from typing import Protocol

import numpy as np

from models import candidate_training
from models.blend import BLEND_CANDIDATES, BLEND_WEIGHT, blend
from models.candidate_features import candidate_features
from models.candidate_training import top_unseen
from models.evaluation.data import ReplayLog
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
    log: ReplayLog, positions: np.ndarray, max_len: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The user's last ``max_len`` events strictly before each position (right-aligned)."""
    return candidate_training.histories(log.arrays(), positions, max_len)


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
        self.candidates_memo: tuple[tuple[int, ...], Candidates] | None = None

    def fit(self, world: World) -> None:
        log = world.log
        if getattr(self, "_fitted", None) == (id(log), world.applied):
            return  # ``full`` and ``full_ranker`` share this variant's queries
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
        self._fitted = (id(log), world.applied)

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
    log: ReplayLog, n_train: int, max_len: int
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

    def candidates(self, world: World, user: int) -> Candidates:
        """Both sources' rows for ``user`` now, as the service computes them (computed
        once per event for every variant sharing ``sequential``: ``full`` and
        ``full_ranker`` rank the same candidates)."""
        key = (id(world), world.applied, user, self.blend.candidates)
        memo = self.sequential.candidates_memo
        if memo is None or memo[0] != key:
            memo = self.sequential.candidates_memo = (key, self._candidates(world, user))
        return memo[1]

    def _candidates(self, world: World, user: int) -> Candidates:
        assert world.coengagement is not None
        logits = self.sequential.scores(world, user)
        co = world.coengagement.score(world.windows[user].recent(), world.item_events)
        seen = world.seen_items(user)
        n = self.blend.candidates
        seq_rows = top_unseen(logits, seen, n)
        co[seen] = 0.0
        co_rows = top_unseen(co, seen, n, positive=True)
        probability = np.zeros_like(logits)
        probability[seq_rows] = softmax(logits)[seq_rows]
        return Candidates(logits, probability, seq_rows, co, co_rows)

    def scores(self, world: World, user: int) -> np.ndarray:
        c = self.candidates(world, user)
        rows, blended = blend(
            c.seq_rows, c.probability[c.seq_rows], c.co_rows, c.co, self.blend.weight
        )
        return self._below(world, c, rows, blended)

    def _below(
        self, world: World, c: Candidates, rows: np.ndarray, ordered: np.ndarray
    ) -> np.ndarray:
        """The candidates by ``ordered``, the rest of the catalogue below by the blend."""
        out = POPULARITY_TIE_BREAK * world.counts + c.probability * self.blend.weight + c.co
        out[rows] = _CANDIDATE_OFFSET + ordered + POPULARITY_TIE_BREAK * world.counts[rows]
        return out


@dataclasses.dataclass
class Candidates:
    logits: np.ndarray  # sequential logits, every row
    probability: np.ndarray  # softmax probability on the sequential rows, 0 elsewhere
    seq_rows: np.ndarray
    co: np.ndarray  # co-engagement cosine, every row (0 on seen rows)
    co_rows: np.ndarray


class FullRanked(Full):
    """The same candidates ordered by the candidate ranker (``models.candidate_ranker``)."""

    name = "full_ranker"

    def __init__(
        self,
        sequential: SequentialStreaming,
        score: Callable[[np.ndarray], np.ndarray],
        blend: BlendConfig | None = None,
    ):
        super().__init__(sequential, blend)
        self.score = score

    def fit(self, world: World) -> None:
        super().fit(world)
        log = world.log
        before = np.zeros(len(log.events), dtype=np.int64)
        seen: collections.Counter[int] = collections.Counter()
        for k, u in enumerate(log.user_idx.tolist()):
            before[k] = seen[u]
            seen[u] += 1
        self._user_events_before = before

    def scores(self, world: World, user: int) -> np.ndarray:
        c = self.candidates(world, user)
        log_prob = c.logits[c.seq_rows] - _logsumexp(c.logits)
        rows, x = candidate_features(
            c.seq_rows,
            log_prob,
            c.co_rows,
            c.co,
            world.item_events,
            float(self._user_events_before[world.applied]),
            self.blend.candidates,
        )
        return self._below(world, c, rows, self.score(x))


def _logsumexp(x: np.ndarray) -> float:
    m = x.max()
    return float(m + np.log(np.exp(x - m).sum()))
