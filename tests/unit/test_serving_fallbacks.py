"""Popularity, the popular list file, the embedding scores and the circuit breaker."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from beam_pipelines.state.config import DAY_S, HOUR_S, StateConfig
from feature_repo import features as f
from serving import fallbacks as fb
from serving.features import ITEM_COLUMNS, ItemSnapshot, feature_age_s, user_embedding_now
from tests.helpers.decay_oracle import decay_value

NOW_MS = 1_800_000_000_000
HOUR_MS = 3_600_000


def snapshot(rows: list[dict[str, float]]) -> ItemSnapshot:
    values = np.array([[row.get(c, 0.0) for c in ITEM_COLUMNS] for row in rows])
    return ItemSnapshot(values, np.ones(len(rows), dtype=bool), NOW_MS)


def test_popularity_brings_engagement_rates_forward_to_now() -> None:
    state = StateConfig()
    items = snapshot(
        [
            # An hour since its last event: the short sum halves (h = 1 h), the long one
            # decays by 2^(−1/168) (h = 7 d).
            {
                "item_engagements_short": 2.0,
                "item_engagements_long": 10.0,
                "item_last_event_ms": NOW_MS - HOUR_MS,
            },
            {
                "item_engagements_short": 0.0,
                "item_engagements_long": 0.0,
                "item_last_event_ms": NOW_MS,
            },
        ]
    )

    scores = fb.popularity(items, NOW_MS, state)

    expected = 1.0 / HOUR_S + 10.0 * 2 ** (-1 / 168) / (7 * DAY_S)
    assert scores[0] == pytest.approx(expected)
    assert expected == pytest.approx(
        decay_value(2.0, NOW_MS - HOUR_MS, NOW_MS, HOUR_S) / HOUR_S
        + decay_value(10.0, NOW_MS - HOUR_MS, NOW_MS, 7 * DAY_S) / (7 * DAY_S)
    )
    assert scores[1] == 0.0


def test_beta_posterior_decays_back_to_the_prior() -> None:
    state = StateConfig()  # prior (1, 1), item long half-life 7 days
    items = snapshot(
        [
            {
                "item_beta_alpha": 11.0,
                "item_beta_beta": 21.0,
                "item_last_event_ms": NOW_MS - 7 * 24 * HOUR_MS,
            },
            {},  # no row: the prior
        ]
    )

    alpha, beta = items.beta_now(np.array([0, 1]), NOW_MS, state)

    # One half-life: evidence 10 → 5 and 20 → 10, plus the prior.
    assert alpha.tolist() == pytest.approx([6.0, 1.0])
    assert beta.tolist() == pytest.approx([11.0, 1.0])


def test_top_items_drops_zero_scores() -> None:
    ids = np.array(["a", "b", "c", "d"], dtype=object)

    top = fb.top_items(ids, np.array([0.1, 0.0, 0.3, 0.1]), 3)

    assert top == [("c", 0.3), ("a", 0.1), ("d", 0.1)]


def test_popular_list_round_trips_through_its_file(tmp_path: Path) -> None:
    path = tmp_path / "cache" / "popular.json"
    fb.PopularList(path).update([("a", 2.0), ("b", 1.0)], NOW_MS)

    loaded = fb.PopularList(path)

    assert loaded.load()
    assert loaded.items == [("a", 2.0), ("b", 1.0)]
    assert loaded.computed_at_ms == NOW_MS


def test_popular_list_ignores_a_missing_or_corrupt_file(tmp_path: Path) -> None:
    assert not fb.PopularList(tmp_path / "absent.json").load()
    (tmp_path / "bad.json").write_text("{not json")
    assert not fb.PopularList(tmp_path / "bad.json").load()
    assert not fb.PopularList(None).load()


def test_embedding_scores_are_dot_products() -> None:
    table = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]], dtype=np.float32)

    scores = fb.embedding_scores(table, np.array([3.0, 1.0]))

    assert scores.tolist() == [3.0, 2.0, 4.0]
    with pytest.raises(ValueError, match="3 values"):
        fb.embedding_scores(table, np.ones(3))


def test_user_embedding_is_short_plus_long() -> None:
    user = {"user_emb_short": [1.0, 0.0], "user_emb_long": [0.5, 0.5]}

    assert user_embedding_now(user).tolist() == [1.5, 0.5]
    assert user_embedding_now({"user_emb_short": [0.0, 0.0], "user_emb_long": []}) is None
    assert user_embedding_now({}) is None


def test_feature_age_from_the_last_event() -> None:
    assert feature_age_s({"user_last_event_ms": NOW_MS - 1500}, NOW_MS) == 1.5
    assert feature_age_s({"user_last_event_ms": NOW_MS + 10}, NOW_MS) == 0.0
    assert set(f.ITEM_FEATURES) == set(ITEM_COLUMNS)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_circuit_breaker_opens_then_lets_one_trial_through() -> None:
    clock = FakeClock()
    breaker = fb.CircuitBreaker(failures=2, cooldown_s=5.0, clock=clock)

    assert breaker.allow()
    breaker.failure()
    assert breaker.allow()  # one failure: still closed
    breaker.failure()
    assert not breaker.allow()  # open
    clock.now = 5.0
    assert breaker.allow()  # half-open: one trial
    assert not breaker.allow()  # the window is re-armed while the trial runs
    breaker.failure()
    clock.now = 9.0
    assert not breaker.allow()
    clock.now = 10.0
    assert breaker.allow()
    breaker.success()
    assert breaker.allow() and breaker.allow()
    assert not breaker.is_open


def test_the_model_versions_popular_list_until_the_store_or_cache_has_one(tmp_path: Path) -> None:
    version_dir = tmp_path / "item_embeddings" / "3"
    version_dir.mkdir(parents=True)
    (version_dir / fb.MODEL_POPULAR_FILE).write_text('{"items": [["i2", 9.0], ["i1", 4.0]]}')
    popular = fb.PopularList()
    assert not popular.available and popular.current() == ([], True)
    popular.model_items = fb.load_model_popular(tmp_path, 3)
    assert popular.available and popular.current() == ([("i2", 9.0), ("i1", 4.0)], True)
    popular.update([("i7", 0.5)], NOW_MS)
    assert popular.current() == ([("i7", 0.5)], False)
    assert fb.load_model_popular(tmp_path, 4) == []  # an older export without the file
