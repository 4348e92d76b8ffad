"""Rolling co-engagement: hand-worked pairs and scores; storage and order do not matter."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beam_pipelines.state.coengagement import (
    CoEngagement,
    ItemNeighbours,
    PairWindow,
    cosine_scores,
    pair_updates,
)


def test_pair_window_pairs_new_items_and_moves_repeats() -> None:
    window = PairWindow()
    assert window.push("a") == []
    assert window.push("b") == ["a"]
    assert window.push("a") is None  # a repeat: no pairs, a becomes the newest
    assert window.items == ["b", "a"]
    assert window.push("c", window=2) == ["b", "a"]
    assert window.items == ["a", "c"]  # the window keeps 2


def test_pair_updates_touch_both_rows() -> None:
    assert pair_updates("c", ["a", "b"]) == [("c", ["a", "b"]), ("a", ["c"]), ("b", ["c"])]
    assert pair_updates("a", []) == []


def test_cosine_by_hand() -> None:
    co = CoEngagement(4)
    co.add_pairs(1, [0])  # user a: 0 then 1
    co.add_pairs(2, [0])  # user b: 0 then 2
    counts = np.array([2.0, 1.0, 1.0, 0.0])
    assert co.rows([0])[0].tolist() == [0.0, 1.0, 1.0, 0.0]
    # cos(0, j) = pairs / sqrt(n_0 n_j) = 1 / sqrt(2) for j = 1, 2.
    assert co.score([0], counts) == pytest.approx([0.0, 2**-0.5, 2**-0.5, 0.0])
    # Recent [1, 2] (2 newest): item 0 gets (0.7 + 1) / sqrt(2) / 1.7.
    assert co.score([1, 2], counts)[0] == pytest.approx(2**-0.5)
    assert cosine_scores(np.zeros((0, 4)), np.zeros(0), counts).tolist() == [0.0] * 4


def test_rows_keep_the_top_neighbours() -> None:
    co = CoEngagement(4, max_neighbours=2)
    co.add_pairs(3, [0, 1, 2])
    co.add_pairs(2, [3])
    assert co.rows([3])[0].tolist() == [1.0, 0.0, 2.0, 0.0]  # 2 (count 2), then 0 (tie: lower)
    row = ItemNeighbours()
    row.add(["x", "y", "x"])
    assert row.top(1) == (["x"], [2.0])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 7)), min_size=1, max_size=40))
def test_dense_sparse_and_keyed_rows_agree(events) -> None:
    dense, sparse = CoEngagement(8), CoEngagement(8, max_dense_bytes=0)
    keyed: dict[int, ItemNeighbours] = {}
    windows: dict[int, PairWindow] = {}
    for user, item in events:
        previous = windows.setdefault(user, PairWindow()).push(item)
        if previous is None:
            continue
        dense.add_pairs(item, previous)
        sparse.add_pairs(item, previous)
        for key, neighbours in pair_updates(item, previous):
            keyed.setdefault(key, ItemNeighbours()).add(neighbours)
    counts = np.arange(1.0, 9.0)
    for recent in ([0, 1], [7], list(range(8))):
        np.testing.assert_allclose(dense.score(recent, counts), sparse.score(recent, counts))
    for item, row in keyed.items():
        keys, values = row.top()
        expected = np.zeros(8)
        expected[keys] = values
        np.testing.assert_allclose(dense.rows([item])[0], expected)
