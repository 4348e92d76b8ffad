"""Rolling item-to-item co-engagement: the streaming candidate source.

Per user, a ``PairWindow`` keeps the last ``PAIR_WINDOW`` distinct items the user
interacted with (newest last). An interaction with an item that is not in the
window pairs it with every item there: each pair's count goes up by one on both
items' neighbour rows (``ItemNeighbours``, keyed by item). A repeat interaction
only moves the item to the newest place. Nothing is trained: a new item
co-engaged by a few streaming users is a neighbour of their other items at the
next request.

Scoring a user (``cosine_scores``): ``pairs(a, j) / sqrt(n_a · n_j)`` summed over
the user's newest ``RECENT_ITEMS`` window items ``a`` with weight ``DECAY^age``
(age 0 for the newest), divided by the sum of the weights, where ``n`` is the
item's accepted event count (``item_event_count``). Pair counts are integers
added one at a time, so the order in which pairs arrive does not matter:
streaming, the backfill and the replay agree. A neighbour row is written with
its ``MAX_NEIGHBOURS`` largest counts (ties by id).

``CoEngagement`` holds all items' pair counts over a fixed catalogue (a dense
matrix while it fits, else a dict per row) for the offline replay.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Iterable, Sequence

import numpy as np

PAIR_WINDOW = 50  # distinct items an interaction pairs with (the user state's N)
RECENT_ITEMS = 20  # newest window items a user is scored from
DECAY = 0.7  # weight of the item one step older
MAX_NEIGHBOURS = 200  # neighbours written per item row


@dataclasses.dataclass
class PairWindow:
    """A user's last distinct interacted items, oldest first."""

    items: list = dataclasses.field(default_factory=list)

    def push(self, item: Hashable, window: int = PAIR_WINDOW) -> list | None:
        """Apply an interaction. None for an item already in the window (moved to the
        newest place, no pairs); else the items it pairs with (possibly none)."""
        if item in self.items:
            self.items.remove(item)
            self.items.append(item)
            return None
        previous = list(self.items)
        self.items.append(item)
        del self.items[: max(0, len(self.items) - window)]
        return previous

    def recent(self, n: int = RECENT_ITEMS) -> list:
        return self.items[-n:]


@dataclasses.dataclass
class ItemNeighbours:
    """One item's pair counts with other items (its neighbour row)."""

    pairs: dict = dataclasses.field(default_factory=dict)

    def add(self, neighbours: Iterable[Hashable]) -> None:
        for other in neighbours:
            self.pairs[other] = self.pairs.get(other, 0.0) + 1.0

    def merge(self, other: ItemNeighbours) -> None:
        for key, count in other.pairs.items():
            self.pairs[key] = self.pairs.get(key, 0.0) + count

    def top(self, m: int = MAX_NEIGHBOURS) -> tuple[list, list[float]]:
        """The ``m`` largest counts (ties by key), as (keys, counts)."""
        chosen = sorted(self.pairs.items(), key=lambda kv: (-kv[1], kv[0]))[:m]
        return [k for k, _ in chosen], [c for _, c in chosen]


def pair_updates(item: Hashable, previous: Sequence[Hashable]) -> list[tuple[Hashable, list]]:
    """The neighbour-row updates of one new pairing: ``(row key, neighbours to add)``."""
    previous = [p for p in previous if p != item]
    if not previous:
        return []
    return [(item, previous), *((p, [item]) for p in previous)]


def recency_weights(n: int, decay: float = DECAY) -> np.ndarray:
    """Weights of ``n`` recent items, oldest first (the newest weighs 1)."""
    return decay ** np.arange(n - 1, -1, -1, dtype=np.float64)


def cosine_scores(
    rows: np.ndarray, recent_counts: np.ndarray, counts: np.ndarray, decay: float = DECAY
) -> np.ndarray:
    """``[n_items]`` decayed cosine to the recent items.

    ``rows``: ``[R, n_items]`` pair counts of the R recent items (oldest first);
    ``recent_counts``: their event counts ``n_a``; ``counts``: every item's ``n_j``.
    """
    which, cols = np.nonzero(rows)
    return sparse_cosine_scores(which, cols, rows[which, cols], recent_counts, counts, decay)


def sparse_cosine_scores(
    which: np.ndarray,
    cols: np.ndarray,
    pairs: np.ndarray,
    recent_counts: np.ndarray,
    counts: np.ndarray,
    decay: float = DECAY,
) -> np.ndarray:
    """``cosine_scores`` from the nonzero pairs alone: ``pairs[k]`` is the count of recent
    item ``which[k]`` (0 = oldest of ``len(recent_counts)``) with catalogue row ``cols[k]``."""
    if len(recent_counts) == 0:
        return np.zeros(len(counts), dtype=np.float64)
    weights = recency_weights(len(recent_counts), decay)
    row_weight = weights / np.sqrt(np.maximum(np.asarray(recent_counts, np.float64), 1.0))
    values = np.asarray(pairs, dtype=np.float64) * row_weight[np.asarray(which, np.int64)]
    mixed = np.bincount(np.asarray(cols, np.int64), weights=values, minlength=len(counts))
    return mixed / np.sqrt(np.maximum(counts, 1.0)) / weights.sum()


class CoEngagement:
    """Pair counts of every catalogue row (integer item rows), for the offline replay."""

    def __init__(
        self, n_items: int, max_dense_bytes: int = 4 << 30, max_neighbours: int = MAX_NEIGHBOURS
    ):
        self.n_items = n_items
        self.max_neighbours = max_neighbours
        self._dense = 4 * n_items * n_items <= max_dense_bytes
        if self._dense:
            self._matrix = np.zeros((n_items, n_items), dtype=np.float32)
        else:
            self._rows = [ItemNeighbours() for _ in range(n_items)]

    def add_pairs(self, item: int, previous: Sequence[int]) -> None:
        for key, neighbours in pair_updates(item, previous):
            if self._dense:
                self._matrix[key, neighbours] += 1.0
            else:
                self._rows[key].add(neighbours)

    def rows(self, items: Sequence[int]) -> np.ndarray:
        """``[len(items), n_items]`` pair counts as written (each row's top neighbours)."""
        out = np.zeros((len(items), self.n_items), dtype=np.float64)
        for r, item in enumerate(items):
            if self._dense:
                row = self._matrix[item]
                nonzero = np.flatnonzero(row)
                if len(nonzero) > self.max_neighbours:  # the top counts, ties by row
                    order = np.lexsort((nonzero, -row[nonzero]))[: self.max_neighbours]
                    nonzero = nonzero[order]
                out[r, nonzero] = row[nonzero]
            else:
                keys, counts = self._rows[item].top(self.max_neighbours)
                out[r, keys] = counts
        return out

    def score(self, recent: Sequence[int], counts: np.ndarray, decay: float = DECAY) -> np.ndarray:
        """``cosine_scores`` of the recent rows (oldest first) with event counts ``counts``."""
        recent = list(recent)
        return cosine_scores(self.rows(recent), counts[recent], counts, decay)
