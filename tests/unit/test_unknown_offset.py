"""The offset for items without an id vector: recall and exposure share by offset by
hand, and the calibrated-exposure rule."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np

from models.candidate_training import EventArrays
from models.unknown_offset import (
    OffsetMeasure,
    calibrated_offset,
    fit_unknown_offset,
    held_out_targets,
    measure_offsets,
    unknown_slots,
)


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


def test_recall_and_unknown_share_by_offset_by_hand() -> None:
    # one query; items 0..3 score 4, 3, 2, 1; item 3 has no id vector
    table = np.array([[4.0], [3.0], [2.0], [1.0]])
    queries = np.array([[1.0], [1.0]])
    unknown = np.array([False, False, False, True])
    targets = np.array([3, 0])  # an unknown item's interaction, a known one's
    seen = [np.zeros(0, np.int64), np.array([1])]
    measured = measure_offsets(
        queries, table, unknown, targets, seen, offsets=(0.0, 2.5, 4.0), depth=2
    )
    # offset 0: item 3 ranks 4th; 2.5: 3.5 → 2nd (hit); 4.0: 5 → 1st, item 0 still 2nd
    assert {o: m.recall for o, m in measured.items()} == {0.0: 0.5, 2.5: 1.0, 4.0: 1.0}
    # top 2 of query 1: {0, 1}, {0, 3}, {3, 0}; of query 2 (item 1 seen): {0, 2}, {0, 3}, {3, 0}
    assert {o: m.unknown_share for o, m in measured.items()} == {0.0: 0.0, 2.5: 0.5, 4.0: 0.5}


def m(recall: float, share: float) -> OffsetMeasure:
    return OffsetMeasure(recall, share)


def test_calibrated_offset_is_the_smallest_reaching_the_share_within_the_tolerance() -> None:
    measured = {0.0: m(0.30, 0.0), 2.0: m(0.305, 0.01), 4.0: m(0.30, 0.06), 6.0: m(0.2, 0.5)}
    assert calibrated_offset(measured, target_share=0.05) == 4.0
    assert calibrated_offset(measured, target_share=0.01) == 2.0
    # 6.0 would reach 0.4 but costs a third of the recall: the largest admissible share
    assert calibrated_offset(measured, target_share=0.4) == 4.0
    assert calibrated_offset(measured, target_share=0.4, tolerance=0.5) == 6.0


def test_no_admissible_offset_reaching_the_share_keeps_the_largest_admissible() -> None:
    """Unknown items that enter the top all at once: the recall tolerance refuses
    the flood; the offset stays where they take no slot."""
    measured = {-1.0: m(0.3, 0.0), 0.0: m(0.3, 0.0), 1.0: m(0.3, 0.0), 2.0: m(0.05, 1.0)}
    assert calibrated_offset(measured, target_share=0.07) == 0.0


def test_tied_rows_at_the_cut_share_the_slots_left() -> None:
    # top 3 of [5, 4, 4, 4, 4]: row 0, then two of the four tied rows, of which
    # the two unknown ones take 2 x 2/4 = 1 slot in expectation
    scores = np.array([[5.0, 4.0, 4.0, 4.0, 4.0], [1.0, 2.0, 3.0, 4.0, 5.0]])
    unknown = np.array([False, True, True, False, False])
    assert unknown_slots(scores, unknown, 3).tolist() == [1.0, 1.0]
    assert unknown_slots(scores, ~unknown, 3).tolist() == [2.0, 2.0]


@dataclasses.dataclass
class TableOnly:
    """A ``TrainedSequence`` stand-in: a fixed table, rows 2.. without an id vector."""

    table: np.ndarray
    unknown_offset: float = 0.0
    max_len: int = 4

    @property
    def model(self):
        known = np.arange(len(self.table)) < 2
        return SimpleNamespace(
            encoder=SimpleNamespace(known=lambda: SimpleNamespace(numpy=lambda: known))
        )

    def item_table(self) -> np.ndarray:
        return self.table

    def queries(self, rows, ts_ms, rewards) -> np.ndarray:
        return np.ones((len(rows), self.table.shape[1]))


def test_an_id_only_model_gets_offset_zero_without_measuring() -> None:
    """Items without an id vector that share one vector (no content) cannot be told
    apart: no exposure is calibrated for them."""
    ev = events([0, 0, 1, 1], [0, 2, 1, 3])
    same = TableOnly(np.array([[3.0, 0.0], [2.0, 0.0], [1.0, 1.0], [1.0, 1.0]]))
    offset, fit = fit_unknown_offset(same, ev, np.array([0, 1]), end=4)
    assert offset == 0.0 and "offset" not in fit and "one vector" in fit["reason"]
    apart = TableOnly(np.array([[3.0, 0.0], [2.0, 0.0], [1.0, 1.0], [0.5, 1.0]]))
    _, fit = fit_unknown_offset(apart, ev, np.array([0, 1]), end=4)
    assert fit["unknown_targets"] == 2 and "offset" in fit
