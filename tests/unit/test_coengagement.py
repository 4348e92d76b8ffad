"""Rolling co-engagement: hand-worked counts and scores; dense and sparse agree."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beam_pipelines.state.coengagement import CoEngagement


def test_pairs_counts_and_cosine_by_hand() -> None:
    co = CoEngagement(4)
    co.push(0, [])  # user a: item 0
    co.push(1, [0])  # user a: item 1 pairs with 0
    co.push(0, [])  # user b: item 0
    co.push(2, [0])  # user b: item 2 pairs with 0
    assert co.counts.tolist() == [2.0, 1.0, 1.0, 0.0]
    assert co.rows([0])[0].tolist() == [0.0, 1.0, 1.0, 0.0]
    # One recent item (0): cos(0, j) = co / sqrt(n_0 n_j) = 1 / sqrt(2) for j = 1, 2.
    assert co.score([0]) == pytest.approx([0.0, 2**-0.5, 2**-0.5, 0.0])
    # Recent [1, 2] (2 newest): weights 0.7, 1 → item 0: (0.7 + 1) / sqrt(2) / 1.7.
    assert co.score([1, 2])[0] == pytest.approx(2**-0.5)
    assert co.score([]).tolist() == [0.0] * 4


def test_window_limits_the_pairs() -> None:
    co = CoEngagement(5)
    co.push(4, [0, 1, 2, 3], window=2)
    assert co.rows([4])[0].tolist() == [0.0, 0.0, 1.0, 1.0, 0.0]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 7)), min_size=1, max_size=40))
def test_dense_and_sparse_storage_agree_in_any_order(pairs) -> None:
    dense, sparse = CoEngagement(8), CoEngagement(8, max_dense_bytes=0)
    history: dict[int, list[int]] = {}
    for user, item in pairs:
        seen = history.setdefault(user, [])
        if item in seen:
            continue
        dense.push(item, seen)
        sparse.push(item, seen)
        seen.append(item)
    for recent in ([0, 1], [7], list(range(8))):
        np.testing.assert_allclose(dense.score(recent), sparse.score(recent))
