"""The offset for items without an id vector: recall by offset by hand, ties to 0."""

from __future__ import annotations

import numpy as np

from models.candidate_training import EventArrays
from models.unknown_offset import best_offset, held_out_targets, recall_by_offset


def events(users, items) -> EventArrays:
    n = len(users)
    return EventArrays(
        np.array(users),
        np.array(items),
        np.arange(n, dtype=np.int64) * 1000,
        np.ones(n, np.float32),
        np.ones(n, bool),
        n_items=max(items) + 1,
    )


def test_scored_positions_are_first_interactions_of_the_chosen_users() -> None:
    ev = events([0, 1, 0, 0, 1, 2], [5, 5, 6, 5, 7, 1])
    assert held_out_targets(ev, np.array([0, 2]), end=6)[0].tolist() == [0, 2, 5]
    assert held_out_targets(ev, np.array([0]), end=2)[0].tolist() == [0]
    positions, seen = held_out_targets(ev, np.array([0, 1]), end=6)
    assert positions.tolist() == [0, 1, 2, 4]
    assert [s.tolist() for s in seen[2:]] == [[5], [5]]  # before positions 2 and 4
    newest, newest_seen = held_out_targets(ev, np.array([0, 1]), end=6, limit=2)
    assert newest.tolist() == [2, 4] and [s.tolist() for s in newest_seen] == [[5], [5]]


def test_recall_by_offset_by_hand() -> None:
    # one query; items 0..3 score 4, 3, 2, 1; item 3 has no id vector
    table = np.array([[4.0], [3.0], [2.0], [1.0]])
    queries = np.array([[1.0], [1.0]])
    unknown = np.array([False, False, False, True])
    targets = np.array([3, 0])  # an unknown item's interaction, a known one's
    seen = [np.zeros(0, np.int64), np.array([1])]
    recall = recall_by_offset(
        queries, table, unknown, targets, seen, offsets=(0.0, 2.5, 4.0), depth=2
    )
    # offset 0: item 3 ranks 4th; 2.5: 3.5 → 2nd (hit); 4.0: 5 → 1st, item 0 still 2nd
    assert recall == {0.0: 0.5, 2.5: 1.0, 4.0: 1.0}
    assert best_offset(recall) == 2.5
    assert best_offset({-1.0: 0.3, 0.0: 0.3, 1.0: 0.2}) == 0.0
