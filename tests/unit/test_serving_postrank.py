"""Post-ranking steps on hand-worked examples (pure NumPy, no model, no store)."""

from __future__ import annotations

import numpy as np
import pytest

from serving import postrank
from serving.catalog import ItemCatalog


def test_unseen_rows_drops_recent_and_unknown_items() -> None:
    rows = postrank.unseen_rows(np.array([0, 1, 2, 1, -1, 4, 9]), np.array([9, 1, -1, 3]))

    assert rows.tolist() == [0, 2, 4]
    no_recent = postrank.unseen_rows(np.array([3, -1, 0]), np.zeros(0, dtype=np.int64))
    assert no_recent.tolist() == [3, 0]


@pytest.mark.parametrize(
    ("k", "share", "slots"),
    [(10, 0.1, 1), (5, 0.1, 0), (10, 0.25, 2), (20, 0.1, 2), (3, 1.0, 3), (100, 0.29, 29)],
)
def test_explore_slots_is_floor_of_k_times_share(k: int, share: float, slots: int) -> None:
    assert postrank.explore_slots(k, share) == slots


@pytest.mark.parametrize(
    ("k", "n", "positions"),
    [(10, 2, [3, 6]), (10, 1, [5]), (1, 1, [0]), (3, 3, [0, 1, 2]), (10, 0, [])],
)
def test_explore_positions_spread_over_the_list(k: int, n: int, positions: list[int]) -> None:
    assert postrank.explore_positions(k, n) == positions


def test_explore_positions_rejects_more_slots_than_k() -> None:
    with pytest.raises(ValueError, match="n_explore"):
        postrank.explore_positions(2, 3)


def test_thompson_pick_prefers_confident_winners() -> None:
    # Posterior means ~1, ~0 and 0.5 with thousands of pseudo-counts: the draws are
    # ~1, ~0 and ~0.5 whatever the seed, so the order is 0, 2, 1.
    alpha = np.array([1000.0, 1.0, 500.0])
    beta = np.array([1.0, 1000.0, 500.0])

    for seed in range(5):
        picked = postrank.thompson_pick(alpha, beta, 2, np.random.default_rng(seed))
        assert picked.tolist() == [0, 2]


def test_thompson_pick_is_reproducible_with_a_seeded_rng() -> None:
    alpha, beta = np.ones(50), np.ones(50)

    first = postrank.thompson_pick(alpha, beta, 5, np.random.default_rng(7))
    second = postrank.thompson_pick(alpha, beta, 5, np.random.default_rng(7))

    assert first.tolist() == second.tolist()


def test_normalized_scales_to_unit_interval() -> None:
    assert postrank.normalized(np.array([0.5, 1.0, 0.9])).tolist() == pytest.approx([0, 1, 0.8])
    assert postrank.normalized(np.array([3.0, 3.0])).tolist() == [1.0, 1.0]


def test_mmr_hand_worked() -> None:
    # rel normalised: [1, 0.8, 0]; items 0 and 1 point the same way, 2 is orthogonal.
    relevance = np.array([1.0, 0.9, 0.5])
    embeddings = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]])

    # λ = 0.5. Step 1: gains 0.5·rel = [0.5, 0.4, 0] → 0. Step 2: 0.5·rel − 0.5·max cos
    # = [-, 0.4 − 0.5, 0 − 0] = [-, −0.1, 0] → 2. Step 3: 1.
    assert postrank.mmr(relevance, embeddings, 3, 0.5).tolist() == [0, 2, 1]
    # λ = 0: the relevance order.
    assert postrank.mmr(relevance, embeddings, 3, 0.0).tolist() == [0, 1, 2]
    # λ = 0.1: 0.9·0.8 − 0.1·1 = 0.62 beats 0.9·0 − 0 = 0, relevance wins.
    assert postrank.mmr(relevance, embeddings, 3, 0.1).tolist() == [0, 1, 2]


def reference_mmr(relevance: np.ndarray, embeddings: np.ndarray, k: int, weight: float) -> list:
    """MMR as the docstring states it, recomputed from scratch at every step."""
    rel = postrank.normalized(relevance.astype(np.float64))
    unit = postrank.unit_rows(embeddings.astype(np.float64))
    picked: list[int] = []
    for _ in range(min(k, len(rel))):
        penalty = np.max(unit @ unit[picked].T, axis=1) if picked else np.full(len(rel), -np.inf)
        gain = (1.0 - weight) * rel - weight * penalty if picked else (1.0 - weight) * rel
        gain[picked] = -np.inf
        picked.append(int(np.argmax(gain)))
    return picked


@pytest.mark.parametrize("weight", [0.05, 0.2, 0.5, 0.9])
def test_mmr_matches_the_reference_on_random_candidates(weight: float) -> None:
    rng = np.random.default_rng(int(weight * 100))
    for n, k in ((500, 18), (40, 40), (7, 3)):
        relevance = rng.random(n).astype(np.float32)
        embeddings = rng.standard_normal((n, 16)).astype(np.float32)
        embeddings[0] = 0.0  # a zero vector stays zero
        expected = reference_mmr(relevance, embeddings, k, weight)
        assert postrank.mmr(relevance, embeddings, k, weight).tolist() == expected


def test_mmr_k_larger_than_candidates() -> None:
    assert postrank.mmr(np.array([0.2, 0.4]), np.eye(2), 5, 0.3).tolist() == [1, 0]
    assert postrank.mmr(np.zeros(0), np.zeros((0, 2)), 5, 0.3).tolist() == []


def test_arrange_puts_the_explored_item_in_its_slot() -> None:
    relevance = np.array([0.9, 0.8, 0.7, 0.1])
    alpha = np.array([1.0, 1.0, 1.0, 1000.0])
    beta = np.array([1000.0, 1000.0, 1000.0, 1.0])

    # k = 4, share 0.25 → 1 exploration slot at 4 // 2 = 2; MMR with λ = 0 fills
    # the other three with 0, 1, 2; Thompson picks 3 from the rest.
    arranged = postrank.arrange(
        relevance,
        np.eye(4),
        alpha,
        beta,
        4,
        explore_share=0.25,
        diversity_weight=0.0,
        rng=np.random.default_rng(0),
    )

    assert arranged.indices.tolist() == [0, 1, 3, 2]
    assert arranged.sources == ["ranked", "ranked", "explore", "ranked"]


def test_arrange_without_exploration_is_mmr() -> None:
    relevance = np.array([1.0, 0.9, 0.5])
    embeddings = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]])

    arranged = postrank.arrange(
        relevance,
        embeddings,
        np.ones(3),
        np.ones(3),
        2,
        explore_share=0.0,
        diversity_weight=0.5,
        rng=np.random.default_rng(0),
    )

    assert arranged.indices.tolist() == [0, 2]
    assert arranged.sources == ["ranked", "ranked"]


def test_arrange_with_fewer_candidates_than_k() -> None:
    arranged = postrank.arrange(
        np.array([0.5, 0.2]),
        np.eye(2),
        np.ones(2),
        np.ones(2),
        10,
        explore_share=0.5,
        diversity_weight=0.2,
        rng=np.random.default_rng(0),
    )

    # k becomes 2: one exploit slot (the best) and one exploration slot at 2 // 2 = 1.
    assert arranged.indices.tolist() == [0, 1]
    assert arranged.sources == ["ranked", "explore"]


def test_mmr_with_precomputed_unit_rows_is_the_same() -> None:
    rng = np.random.default_rng(5)
    table = rng.standard_normal((300, 8)).astype(np.float32)
    table[7] = 0.0
    catalog = ItemCatalog(1, np.arange(300).astype(str).astype(object), table, {})
    rows = rng.permutation(300)[:120]
    unit = catalog.unit_embeddings[rows]
    np.testing.assert_array_equal(unit, postrank.unit_rows(table[rows].astype(np.float64)))
    relevance = rng.random(120)
    for weight in (0.2, 0.7):
        expected = postrank.mmr(relevance, table[rows], 15, weight).tolist()
        assert postrank.mmr(relevance, table[rows], 15, weight, unit=unit).tolist() == expected
