"""The service's co-engagement scores: the pipeline's cosine, read from stored rows."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from beam_pipelines.state.coengagement import cosine_scores
from serving.catalog import ItemCatalog
from serving.coengagement import EVENT_COUNT, coengagement_scores
from serving.features import ITEM_COLUMNS, ItemSnapshot


class NeighbourStore:
    def __init__(self, rows: dict[str, dict[str, Any]]) -> None:
        self.rows = rows

    def read(self, view: str, ids: list[str]) -> dict[str, Any]:
        assert view == "item_coengagement"
        return {i: self.rows.get(i) for i in ids}


def catalog(ids: list[str]) -> ItemCatalog:
    embeddings = np.zeros((len(ids), 2), np.float32)
    return ItemCatalog(
        1, np.asarray(ids, dtype=object), embeddings, {i: n for n, i in enumerate(ids)}
    )


def snapshot(counts: np.ndarray) -> ItemSnapshot:
    values = np.zeros((len(counts), len(ITEM_COLUMNS)))
    values[:, ITEM_COLUMNS.index(EVENT_COUNT)] = counts
    return ItemSnapshot(values, np.ones(len(counts), bool), 0)


def test_by_hand() -> None:
    # Recent (oldest first) b then a; weights 0.7 (DECAY), 1. a (3 events) pairs with c (2);
    # b (0 events → 1) pairs with c (1). c has 4 events:
    # (0.7·1/1 + 1·2/√3) / √4 / 1.7.
    items = catalog(["a", "b", "c"])
    store = NeighbourStore(
        {
            "a": {"item_neighbors": ["c"], "item_neighbor_pairs": [2.0]},
            "b": {"item_neighbors": ["c", "new"], "item_neighbor_pairs": [1.0, 7.0]},
        }
    )
    scores = coengagement_scores(store, items, snapshot(np.array([3.0, 0.0, 4.0])), ["a", "b"])
    expected = (0.7 + 2 / np.sqrt(3)) / 2 / 1.7
    np.testing.assert_allclose(scores, [0.0, 0.0, expected])


def test_matches_the_pipelines_dense_cosine() -> None:
    rng = np.random.default_rng(0)
    ids = [f"i{n:03d}" for n in range(300)]
    items = catalog(ids)
    rows = {}
    for item in ids:
        picks = rng.choice(len(ids), 40, replace=False)
        rows[item] = {
            "item_neighbors": [ids[j] for j in picks],
            "item_neighbor_pairs": rng.integers(1, 20, 40).astype(float).tolist(),
        }
    del rows[ids[5]]  # a recent item without a neighbour row
    counts = rng.integers(0, 50, len(ids)).astype(float)
    recent_newest_first = [ids[j] for j in rng.choice(len(ids), 25, replace=False)]
    scores = coengagement_scores(NeighbourStore(rows), items, snapshot(counts), recent_newest_first)

    recent = list(reversed(recent_newest_first[:20]))
    dense = np.zeros((len(recent), len(ids)))
    for r, item in enumerate(recent):
        row = rows.get(item) or {"item_neighbors": [], "item_neighbor_pairs": []}
        dense[r, items.rows(row["item_neighbors"])] = row["item_neighbor_pairs"]
    recent_counts = counts[items.rows(recent)]
    np.testing.assert_allclose(scores, cosine_scores(dense, recent_counts, counts), rtol=1e-12)


@pytest.mark.parametrize("recent", [[], ["unknown"]])
def test_nothing_to_score(recent: list[str]) -> None:
    scores = coengagement_scores(NeighbourStore({}), catalog(["a"]), snapshot(np.ones(1)), recent)
    assert scores.tolist() == [0.0]
