"""Rolling item-to-item co-engagement: the streaming candidate source.

When a user interacts with an item for the first time, the item is paired with
the user's previous distinct items within the last ``window`` (the user state's
last-N list), and each pair's count goes up by one; the item's own interaction
count goes up by one. Nothing is trained: a new item co-engaged by a few
streaming users is a neighbour of their other items at the next request.

Scoring a user (``score``): the cosine ``co(a, j) / sqrt(n_a · n_j)`` summed over
the user's last ``recent`` distinct items ``a`` with weight ``decay^age`` (age 0
for the newest), divided by the sum of the weights. Counts are exact integers,
so the order in which pairs arrive does not matter (streaming and replay agree).

Storage: a dense ``float32`` matrix while ``n_items² · 4`` bytes fits in
``max_dense_bytes``, else one ``dict`` of neighbour counts per item.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PAIR_WINDOW = 50  # previous distinct items an interaction pairs with (the state's N)
RECENT_ITEMS = 20  # newest distinct items a user is scored from
DECAY = 0.7  # weight of the item one step older


class CoEngagement:
    """Pair counts over a fixed catalogue of ``n_items`` rows."""

    def __init__(self, n_items: int, max_dense_bytes: int = 4 << 30):
        self.n_items = n_items
        self.counts = np.zeros(n_items, dtype=np.float64)
        self._dense = 4 * n_items * n_items <= max_dense_bytes
        if self._dense:
            self._matrix = np.zeros((n_items, n_items), dtype=np.float32)
        else:
            self._pairs: list[dict[int, float]] = [{} for _ in range(n_items)]

    def push(self, item: int, previous: Sequence[int], window: int = PAIR_WINDOW) -> None:
        """A first interaction with ``item``; ``previous``: the user's earlier distinct
        items, oldest first (only the newest ``window`` pair with it)."""
        others = [p for p in list(previous)[-window:] if p != item] if window > 0 else []
        self.counts[item] += 1.0
        if not others:
            return
        if self._dense:
            self._matrix[item, others] += 1.0
            self._matrix[others, item] += 1.0
        else:
            row = self._pairs[item]
            for p in others:
                row[p] = row.get(p, 0.0) + 1.0
                col = self._pairs[p]
                col[item] = col.get(item, 0.0) + 1.0

    def rows(self, items: Sequence[int]) -> np.ndarray:
        """``[len(items), n_items]`` pair counts."""
        if self._dense:
            return self._matrix[list(items)].astype(np.float64)
        out = np.zeros((len(items), self.n_items), dtype=np.float64)
        for r, item in enumerate(items):
            row = self._pairs[item]
            if row:
                out[r, np.fromiter(row.keys(), np.int64, len(row))] = np.fromiter(
                    row.values(), np.float64, len(row)
                )
        return out

    def score(
        self, recent: Sequence[int], n_recent: int = RECENT_ITEMS, decay: float = DECAY
    ) -> np.ndarray:
        """``[n_items]`` decayed cosine similarity to the user's recent items (oldest
        first); zeros for a user with none."""
        recent = list(recent)[-n_recent:]
        if not recent:
            return np.zeros(self.n_items, dtype=np.float64)
        inv = 1.0 / np.sqrt(np.maximum(self.counts, 1.0))
        weights = decay ** np.arange(len(recent) - 1, -1, -1, dtype=np.float64)
        idx = np.asarray(recent, dtype=np.int64)
        mixed = (weights * inv[idx]) @ self.rows(recent)
        return mixed * inv / weights.sum()
