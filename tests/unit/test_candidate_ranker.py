"""The candidate ranker's features and training examples.

Examples hold only what was known before each label: the sequential history
strictly before it, co-engagement and item counts after the previous event, and
negatives that had an event before the label.
"""

from __future__ import annotations

import numpy as np
import pytest

from models.candidate_features import FEATURES, LOG_PROB_FLOOR, blend_scores, candidate_features
from models.candidate_training import EventArrays, examples, histories, ranker_users

N_ITEMS = 6


class NextRowModel:
    """Query = one-hot of the newest history row; the table predicts row + 1."""

    max_len = 3

    def __init__(self):
        self.histories: list[np.ndarray] = []

    def item_table(self) -> np.ndarray:
        return np.roll(np.eye(N_ITEMS), 1, axis=0) * 3.0

    def queries(self, rows, ts_ms, rewards):
        self.histories.append(rows.copy())
        out = np.zeros((len(rows), N_ITEMS))
        for i, r in enumerate(rows):
            if r[-1] >= 0:
                out[i, r[-1]] = 1.0
        return out


def _events(pairs: list[tuple[int, int]]) -> EventArrays:
    users = np.array([u for u, _ in pairs], np.int64)
    items = np.array([i for _, i in pairs], np.int64)
    n = len(pairs)
    return EventArrays(
        users,
        items,
        1_000 * np.arange(n, dtype=np.int64),
        np.linspace(0.5, 1.0, n).astype(np.float32),
        np.ones(n, bool),
        N_ITEMS,
    )


def test_features_describe_the_union_of_both_sources() -> None:
    co = np.zeros(N_ITEMS)
    co[[2, 4]] = [0.5, 0.25]
    rows, x = candidate_features(
        np.array([3, 2]), np.log([0.6, 0.3]), np.array([2, 4]), co, np.arange(N_ITEMS), 4, 10
    )
    assert rows.tolist() == [2, 3, 4]
    assert x.shape == (3, len(FEATURES))
    col = {name: x[:, i] for i, name in enumerate(FEATURES)}
    assert col["seq_present"].tolist() == [1, 1, 0]
    assert col["co_present"].tolist() == [1, 0, 1]
    assert col["seq_log_prob"][2] == LOG_PROB_FLOOR  # 4 is not a sequential candidate
    assert col["seq_rank"].tolist() == pytest.approx([np.log1p(1), 0.0, np.log1p(10)])
    assert col["co_relative"].tolist() == pytest.approx([1.0, 0.0, 0.5])
    assert col["item_log_events"].tolist() == pytest.approx(np.log1p([2, 3, 4]).tolist())
    assert np.all(col["user_log_events"] == np.float32(np.log1p(4)))


def test_ranker_users_are_the_newest() -> None:
    users = np.array([0, 1, 0, 2, 1, 3, 3, 2, 3, 3])
    # first events: 0@0, 1@1, 2@3, 3@5; user 3 has 4 of 10 events
    assert ranker_users(users, 0.4).tolist() == [3]
    assert ranker_users(users, 0.6).tolist() == [2, 3]
    assert ranker_users(users, 0.0).tolist() == []


def test_negatives_and_features_come_only_from_before_each_label() -> None:
    # user 0 (others) builds history; user 1 is the ranker's user. Item 5 is first
    # seen at the very last event: never a negative before it.
    pairs = [(0, 0), (0, 1), (0, 2), (1, 0), (0, 3), (1, 1), (1, 2), (0, 4), (1, 3), (1, 5)]
    events = _events(pairs)
    model = NextRowModel()
    ex = examples(events, np.array([1]), model, candidates=4, negatives=10, seed=0)
    assert len(ex.engaged) > 0
    assert set(np.unique(ex.label_position)) <= {3, 5, 6, 8}  # user 1's events
    assert np.all(ex.first_event >= 0)
    assert np.all(ex.first_event < ex.label_position)
    # (1, 5) is skipped: item 5 had no event before it
    assert 9 not in ex.label_position
    # the positive of each example is the event's item, with the event's reward
    positives = ex.engaged == 1
    assert ex.item_row[positives].tolist() == events.item_idx[ex.label_position[positives]].tolist()
    assert ex.reward[positives].tolist() == pytest.approx(
        events.rewards[ex.label_position[positives]].tolist()
    )
    # item counts are those before the label: item 1 at event 5 had 1 event (at 1)
    at5 = (ex.label_position == 5) & positives
    col = FEATURES.index("item_log_events")
    assert ex.features[at5, col] == pytest.approx(np.log1p(1.0))
    # the sequential histories were strictly before each label
    rows, _, _ = histories(events, np.array([5, 8]), 3)
    assert rows[0].tolist() == [-1, -1, 0]
    assert rows[1].tolist() == [0, 1, 2]


def test_no_example_sees_a_later_event() -> None:
    """Appending events after the last label changes no example."""
    pairs = [(0, 0), (0, 1), (1, 0), (0, 2), (1, 1), (0, 3), (1, 2)]
    model = NextRowModel()
    before = examples(_events(pairs), np.array([1]), model, candidates=4, negatives=10)
    later = _events([*pairs, (0, 4), (2, 5), (0, 5), (2, 1)])
    cut = examples(later, np.array([1]), model, candidates=4, negatives=10, end=len(pairs))
    np.testing.assert_array_equal(before.features, cut.features)
    np.testing.assert_array_equal(before.item_row, cut.item_row)


def test_blend_scores_reproduce_the_blend_from_the_features() -> None:
    from models.blend import blend

    co = np.zeros(N_ITEMS)
    co[[2, 4]] = [0.5, 0.25]
    seq_rows, seq_p = np.array([3, 2, 0]), np.array([0.5, 0.3, 0.1])
    rows, x = candidate_features(
        seq_rows, np.log(seq_p), np.array([2, 4]), co, np.ones(N_ITEMS), 1, 10
    )
    expected_rows, expected = blend(seq_rows, seq_p, np.array([2, 4]), co, 2.0)
    got = blend_scores(x, 2.0)
    order = np.lexsort((rows, -got))
    assert rows[order].tolist() == expected_rows.tolist()
    np.testing.assert_allclose(got[order], expected)
