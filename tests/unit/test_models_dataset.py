"""Training examples: labels, and point-in-time features strictly before each label."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from beam_pipelines.event_logs import tie_key
from beam_pipelines.rewards import MOVIELENS, SHORT_VIDEO
from models.dataset import label_examples, point_in_time_features
from models.training_log import EVENT_COLUMNS, load_events, time_split
from tests.helpers.ratings import write_history, write_movielens

T0 = 1_700_000_000_000


@pytest.fixture(scope="module")
def ratings(tmp_path_factory):
    directory = tmp_path_factory.mktemp("ml")
    ratings_csv, _ = write_movielens(directory, n_users=8, n_items=20, n_events=160, seed=3)
    log = load_events(str(ratings_csv), "movielens")
    offline = write_history(log.frame, directory / "offline")
    return log, offline, directory


def _listed(value) -> list:
    """A list feature; a missing one (None or NaN after a join) is empty."""
    return [] if value is None or isinstance(value, float) else list(value)


def _earlier(frame: pd.DataFrame, key: str) -> np.ndarray:
    """Events of the same entity strictly before each row's time (ties excluded)."""
    out = np.zeros(len(frame), dtype=np.int64)
    for _, group in frame.groupby(key):
        times = np.sort(group["timestamp_ms"].to_numpy())
        out[group.index] = np.searchsorted(times, group["timestamp_ms"].to_numpy(), side="left")
    return out


def test_features_come_only_from_before_the_label(ratings, tmp_path) -> None:
    log, offline, _ = ratings
    examples = label_examples(log.frame, log.rewards)
    assert (examples.groupby(["user_id", "timestamp_ms"]).size() > 1).any(), "want same-ms ties"
    joined = point_in_time_features(examples, str(offline), tmp_path, engine="asof")
    users = joined["user_event_count"].fillna(0).to_numpy()
    items = joined["item_event_count"].fillna(0).to_numpy()
    np.testing.assert_array_equal(users, _earlier(examples, "user_id"))
    np.testing.assert_array_equal(items, _earlier(examples, "item_id"))
    last = joined["user_last_event_ms"].fillna(0).to_numpy()
    assert (last < examples["timestamp_ms"].to_numpy()).all()
    for row in joined.itertuples():
        assert all(t < row.timestamp_ms for t in _listed(row.user_recent_ts_ms))


def test_feast_historical_retrieval_matches_asof(tmp_path) -> None:
    """Feast's own point-in-time join gives the values the fast path uses.

    Without same-timestamp events: Feast picks any of several history rows that
    share a timestamp (the asof path takes the one with the most events).
    """
    ratings_csv, _ = write_movielens(
        tmp_path, n_users=6, n_items=15, n_events=90, seed=4, same_second=0.0
    )
    log = load_events(str(ratings_csv), "movielens")
    offline = write_history(log.frame, tmp_path / "offline")
    sample = label_examples(log.frame, log.rewards)
    feast = point_in_time_features(sample, str(offline), tmp_path, engine="feast")
    asof = point_in_time_features(sample, str(offline), tmp_path, engine="asof")
    for column in (
        "user_event_count",
        "item_event_count",
        "user_reward_rate_long",
        "item_beta_alpha",
        "user_last_event_ms",
    ):
        np.testing.assert_allclose(
            feast[column].astype(float).fillna(-1),
            asof[column].astype(float).fillna(-1),
            rtol=1e-6,
            err_msg=column,
        )
    for column in ("user_recent_items", "user_recent_ts_ms", "user_emb_long"):
        for a, b in zip(feast[column], asof[column], strict=True):
            np.testing.assert_array_equal(_listed(a), _listed(b), err_msg=column)


def test_exposure_labels_collect_outcomes_within_the_window() -> None:
    rows = [
        ("e1", "u", "a", "impression", T0, 0.0, False, True),
        ("e2", "u", "a", "view", T0 + 10_000, 1.2, True, False),
        ("e3", "u", "a", "like", T0 + 20_000, 1.0, True, False),
        ("e4", "u", "b", "impression", T0 + 30_000, 0.0, False, True),
        ("e5", "u", "b", "skip", T0 + 31_000, -0.5, False, False),
        ("e6", "u", "c", "like", T0 + 40_000, 1.0, True, False),  # no impression: own example
        ("e7", "u", "a", "share", T0 + 3 * 3_600_000, 2.0, True, False),  # outside the window
    ]
    events = pd.DataFrame(rows, columns=list(EVENT_COLUMNS))
    labels = label_examples(events, SHORT_VIDEO, outcome_window_ms=3_600_000)
    by_item = {(r.item_id, r.timestamp_ms): (r.reward, r.engaged) for r in labels.itertuples()}
    assert by_item == {
        ("a", T0): (pytest.approx(2.2), True),
        ("b", T0 + 30_000): (pytest.approx(-0.5), False),
        ("c", T0 + 40_000): (1.0, True),
        ("a", T0 + 3 * 3_600_000): (2.0, True),
    }
    assert label_examples(events, MOVIELENS)["item_id"].tolist() == list("aaabbca")


def test_time_split_and_sorted_log(ratings) -> None:
    log, _, _ = ratings
    keys = [
        (t, int(u), tie_key(u, i))
        for t, u, i in zip(
            log.frame["timestamp_ms"], log.frame["user_id"], log.frame["item_id"], strict=True
        )
    ]
    assert keys == sorted(keys)  # the protocol's tie order, not item ids
    assert time_split(10) == 8 and time_split(10, 1.0) == 10
    with pytest.raises(ValueError, match="train_fraction"):
        time_split(10, 0.0)
