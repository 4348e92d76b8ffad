"""Replay protocol on a hand-made log: ranks, HR and NDCG worked out by hand.

Training (8 events): user 1 {1, 4}, user 2 {1, 2, 4}, user 3 {1, 2, 3}, so the
training counts are item 1: 3, item 2: 2, item 3: 1, item 4: 2. Test stream:

- (user 10, item 4, t=8): same time as the last training event (user 2, item 4);
  user ids sort as numbers, so 2 < 10 puts it in the test. Cold user. Scores
  3, 2, 1, 2: items 1 and 2 (a tie) score >= 2, rank 2.
- (user 1, item 3, t=9): seen {1, 4} excluded; item 2 (2) beats item 3 (1): rank 1.
- (user 11, item 2, t=10): cold. Fixed counts: items 1, 4 >= 2, rank 2. Rolling
  counts after the two test events (item 4: 3, item 3: 2): items 1, 3, 4 >= 2, rank 3.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from beam_pipelines.rewards import MOVIELENS
from models.evaluation.data import build_log, read_movielens
from models.evaluation.metrics import hit_ndcg, rolling_mean, summarize, target_rank
from models.evaluation.protocol import apply_training, replay, top_items
from models.evaluation.variants import ItemKNNRecent, Popularity, RollingPopularity
from models.evaluation.world import World

ROWS = [  # deliberately not in time order: the protocol sorts
    (3, 3, 4.0, 6),
    (1, 1, 4.0, 1),
    (2, 1, 5.0, 2),
    (3, 1, 3.0, 3),
    (2, 2, 4.0, 4),
    (3, 2, 2.0, 5),
    (1, 4, 4.0, 7),
    (10, 4, 4.0, 8),
    (2, 4, 1.0, 8),
    (1, 3, 4.0, 9),
    (11, 2, 4.0, 10),
]
G1, G2 = 1.0, 1.0 / math.log2(3)  # NDCG gain at rank 0 and 1
G_RANK2, G_RANK3 = 0.5, 1.0 / math.log2(5)


def _write(tmp_path, rows=ROWS, header="userId,movieId,rating,timestamp"):
    path = tmp_path / "ratings.csv"
    path.write_text(header + "\n" + "".join(f"{u},{i},{r},{t}\n" for u, i, r, t in rows))
    return path


@pytest.fixture
def log(tmp_path):
    return build_log(read_movielens(_write(tmp_path)), MOVIELENS, "all")


def _run(log, variants):
    world = World(log)
    apply_training(world, show_progress=False)
    return replay(world, variants, show_progress=False)


def test_sort_and_split(log):
    assert log.n_train == 8  # floor(0.8 * 11)
    test = [
        (log.users[u], log.items[i])
        for u, i in zip(log.user_idx[8:], log.item_idx[8:], strict=True)
    ]
    assert test == [("10", "4"), ("1", "3"), ("11", "2")]
    assert log.items == ["1", "2", "3", "4"]
    assert log.events[0].reward == 0.5  # (4 - 3) / 2 through score_event
    assert log.events[8 - 1].reward == -1.0  # user 2, item 4, rating 1


def test_popularity_ranks_ties_exclusion_and_cold_users(log):
    result = _run(log, [Popularity(), RollingPopularity()])
    assert result.ranks["popularity"].tolist() == [2, 1, 2]
    assert result.ranks["popularity_rolling"].tolist() == [2, 1, 3]
    assert result.warm.tolist() == [False, True, False]
    pop = summarize(result.ranks["popularity"], [1, 2, 3])
    assert pop["hr@1"] == 0.0 and pop["ndcg@1"] == 0.0
    assert pop["hr@2"] == pytest.approx(1 / 3)
    assert pop["ndcg@2"] == pytest.approx(G2 / 3)
    assert pop["hr@3"] == 1.0
    assert pop["ndcg@3"] == pytest.approx((G_RANK2 + G2 + G_RANK2) / 3)
    rolling = summarize(result.ranks["popularity_rolling"], [3, 4])
    assert rolling["hr@3"] == pytest.approx(2 / 3)
    assert rolling["ndcg@4"] == pytest.approx((G_RANK2 + G2 + G_RANK3) / 3)
    warm = summarize(result.ranks["popularity"][result.warm], [2])
    assert warm == {"n_events": 1, "hr@2": 1.0, "ndcg@2": pytest.approx(G2)}


def test_itemknn_scores_by_hand(log):
    world = World(log)
    apply_training(world, show_progress=False)
    knn = ItemKNNRecent()
    knn.fit(world)
    # user 1's recent items: 1 (age 1), 4 (age 0). cos(1,2) = 2/√6, cos(4,2) = 1/√4,
    # cos(1,3) = 1/√3, cos(4,3) = 0; plus 1e-6 × counts (3, 2, 1, 2).
    scores = knn.scores(world, log.users.index("1"))
    expected_2 = 0.9 * 2 / math.sqrt(6) + 0.5 + 2e-6
    expected_3 = 0.9 / math.sqrt(3) + 1e-6
    assert scores[1] == pytest.approx(expected_2, rel=1e-6)
    assert scores[2] == pytest.approx(expected_3, rel=1e-6)
    # The matrix-free path gives the same numbers.
    lean = ItemKNNRecent(max_matrix_bytes=0)
    lean.fit(world)
    np.testing.assert_allclose(lean.scores(world, log.users.index("1")), scores, rtol=1e-6)
    # A user without history gets rolling popularity.
    np.testing.assert_array_equal(knn.scores(world, log.users.index("10")), world.counts)
    result = _run(log, [ItemKNNRecent()])
    assert result.ranks["itemknn_recent"].tolist() == [2, 1, 3]


def test_target_rank_counts_ties_against_the_target():
    scores = np.array([3.0, 1.0, 2.0, 2.0, np.nan])
    assert target_rank(scores, 2, np.array([], dtype=np.int64)) == 2
    assert target_rank(scores, 2, np.array([0])) == 1
    assert target_rank(np.zeros(5), 3, np.array([1])) == 3  # constant scorer: last
    assert target_rank(scores, 4, np.array([], dtype=np.int64)) == 4  # NaN target is last


def test_hit_ndcg_and_rolling_mean():
    hit, gain = hit_ndcg(np.array([0, 2, 9, 10]), 10)
    assert hit.tolist() == [1.0, 1.0, 1.0, 0.0]
    np.testing.assert_allclose(gain, [1.0, 0.5, 1 / math.log2(11), 0.0])
    np.testing.assert_allclose(
        rolling_mean(np.array([1.0, 0.0, 1.0, 1.0]), 2), [1.0, 0.5, 0.5, 1.0]
    )


def test_top_items_skip_seen_items():
    scores = np.array([5.0, 4.0, 3.0, 2.0])
    assert top_items(scores, np.array([0]), 2).tolist() == [1, 2]


def test_bad_header_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="header"):
        read_movielens(_write(tmp_path, header="a,b,c,d"))


def test_ratings_are_read_by_the_backfill_reader(tmp_path):
    """One reader of MovieLens CSV: the backfill's; a blank line is no record and a
    short row is counted, never a crash."""
    path = _write(tmp_path)
    path.write_text(path.read_text() + "\n1,5\n")
    raw = read_movielens(path)
    assert [(e.user_id, e.item_id, e.context["rating"], e.timestamp_ms) for e in raw.events] == [
        (str(u), str(i), r, t * 1000) for u, i, r, t in ROWS
    ]
    assert [e.event_id for e in raw.events[:1]] == ["ml-3-3-6"]  # movielens_event's ids
    assert dict(raw.skipped) == {"malformed_json": 1}


def test_upload_to_first_engagement_by_hand(log):
    """Items 3 and 2 'released' during the test stream (t=8.5 s, 9.5 s → after the split
    at t=8): item 3's target (t=9) is delivered by popularity at rank 1 < k=2; item 2's
    (t=10) is at rank 2, not delivered; the log delivers both."""
    from models.evaluation.new_items import HOUR_MS, upload_to_first_engagement

    result = _run(log, [Popularity()])
    releases = {"3": 8_500, "2": 9_500, "1": 0}
    out = upload_to_first_engagement(log, result.positions, result.ranks, releases, k=2)
    h3, h2 = (9_000 - 8_500) / HOUR_MS, (10_000 - 9_500) / HOUR_MS
    assert out["new_items"] == 2
    assert out["log"] == {"items_delivered": 2, "median_hours": round((h3 + h2) / 2, 3)}
    assert out["popularity"] == {"items_delivered": 1, "median_hours": None}  # [h3, inf]
    assert upload_to_first_engagement(log, result.positions, result.ranks, {"1": 0}) is None
