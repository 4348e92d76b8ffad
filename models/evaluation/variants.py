"""The non-neural variants of EVALUATION.md and the interface every variant follows.

A variant scores the whole catalogue for one user from the replay's ``World`` as
of strictly before the event; the replay then applies the event to the world.
Higher scores rank first; the replay removes already-seen items.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from models.evaluation.world import World

KNN_DECAY = 0.9
KNN_POPULARITY_WEIGHT = 1e-6


class Variant(Protocol):
    name: str

    def fit(self, world: World) -> None:
        """Called once, when ``world`` holds exactly the training period."""

    def scores(self, world: World, user: int) -> np.ndarray:
        """Scores over the catalogue for ``user`` (float64, one per item)."""


class Popularity:
    """Interaction counts of the training period, fixed."""

    name = "popularity"

    def fit(self, world: World) -> None:
        assert world.train_counts is not None
        self._counts = world.train_counts.copy()

    def scores(self, world: World, user: int) -> np.ndarray:
        return self._counts


class RollingPopularity:
    """Interaction counts so far: training plus the stream before the event."""

    name = "popularity_rolling"

    def fit(self, world: World) -> None:
        pass

    def scores(self, world: World, user: int) -> np.ndarray:
        return world.counts


class ItemKNNRecent:
    """Item-item cosine of the binary training matrix over the user's recent items.

    cos(i, j) = co-count / sqrt(count_i · count_j), fixed after training. Score of
    item j: Σ over the last 20 distinct items (training and stream, newest age 0)
    of 0.9^age · cos(item, j), plus 1e-6 × rolling popularity. The item×item
    matrix is kept (float32) when it fits in ``max_matrix_bytes``; otherwise each
    score is computed as ((Σ_a w_a X[:, a] / √c_a) · X) / √c from the user×item matrix.
    """

    name = "itemknn_recent"

    def __init__(self, max_matrix_bytes: int = 1 << 30):
        self.max_matrix_bytes = max_matrix_bytes

    def fit(self, world: World) -> None:
        log = world.log
        train = slice(0, log.n_train)
        mask = log.interaction[train]
        matrix = np.zeros((log.n_users, log.n_items), dtype=np.float32)
        matrix[log.user_idx[train][mask], log.item_idx[train][mask]] = 1.0
        counts = matrix.sum(axis=0, dtype=np.float64)
        inv_sqrt = np.divide(1.0, np.sqrt(counts), out=np.zeros_like(counts), where=counts > 0)
        self._cosine: np.ndarray | None = None
        if 4 * log.n_items**2 <= self.max_matrix_bytes:
            normalized = matrix * inv_sqrt.astype(np.float32)
            self._cosine = normalized.T @ normalized
        else:
            self._matrix = matrix.astype(np.float64)
            self._inv_sqrt = inv_sqrt

    def scores(self, world: World, user: int) -> np.ndarray:
        recent = list(world.recent[user])
        if not recent:
            return world.counts
        weights = KNN_DECAY ** np.arange(len(recent) - 1, -1, -1, dtype=np.float64)
        if self._cosine is not None:
            similarity = weights @ self._cosine[recent].astype(np.float64)
        else:
            profile = self._matrix[:, recent] @ (weights * self._inv_sqrt[recent])
            similarity = (profile @ self._matrix) * self._inv_sqrt
        return similarity + KNN_POPULARITY_WEIGHT * world.counts


BASELINES: dict[str, type] = {v.name: v for v in (Popularity, RollingPopularity, ItemKNNRecent)}
