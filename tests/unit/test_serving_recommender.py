"""The recommender's paths with fake components: models, each fallback, 503."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from beam_pipelines.state.config import StateConfig
from feature_repo.store import StoreUnavailableError
from models.candidate_features import FEATURES
from serving import fallbacks as fb
from serving import postrank
from serving.backends import ModelUnavailableError
from serving.catalog import ItemCatalog
from serving.config import FallbackConfig, NewItemsConfig, RankingConfig
from serving.features import ItemSnapshot
from serving.new_items import NEW_ITEM, ContentSnapshot
from serving.recommender import NothingToServe, Recommender, seeded_rng

NOW_S = 1_800_000_000.0
NOW_MS = int(NOW_S * 1000)
IDS = ["a", "b", "c", "d", "e"]
# a, b, c lie along x; d, e along y.
EMBEDDINGS = np.array([[1, 0], [1, 0.1], [1, -0.1], [0, 1], [0.1, 1]], dtype=np.float32)


def catalog() -> ItemCatalog:
    ids = np.array(IDS, dtype=object)
    return ItemCatalog(7, ids, EMBEDDINGS, {item: i for i, item in enumerate(IDS)})


class FakeStore:
    def __init__(self, users: dict[str, dict[str, Any]], down: bool = False) -> None:
        self.users, self.down = users, down

    def read(self, view: str, ids: list[str]) -> dict[str, Any]:
        if self.down:
            raise StoreUnavailableError("redis online store unavailable during read")
        return {i: self.users.get(i) for i in ids}


class FakeModels:
    """Retrieval returns every item; the ranker scores a > b > c > d > e."""

    version = 7
    sequential = False  # the ranker orders: the blend has its own test
    candidate_ranker = False

    def __init__(self, fail: bool = False) -> None:
        self.catalog = catalog()
        self.fail = fail
        self.rank_calls: list[np.ndarray] = []

    def retrieve(self, user: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        if self.fail:
            raise ModelUnavailableError("retrieval v7 at 127.0.0.1:1: UNAVAILABLE")
        return np.array([*IDS, "not-in-catalog"], dtype=object), np.zeros(6)

    def candidate_rows(self, user: dict[str, Any]) -> np.ndarray:
        return self.catalog.rows(self.retrieve(user)[0])

    def rank(self, user: dict[str, Any], rows: np.ndarray, items: ItemSnapshot) -> np.ndarray:
        self.rank_calls.append(rows)
        return 1.0 - rows / 10.0

    def ranked_candidates(
        self, user: dict[str, Any], recent: np.ndarray, items: ItemSnapshot, limit: int
    ) -> tuple[np.ndarray, np.ndarray]:
        rows = postrank.unseen_rows(self.candidate_rows(user), recent)[:limit]
        return rows, self.rank(user, rows, items)


class FakeItems:
    snapshot = ItemSnapshot.empty(len(IDS))


def user(**overrides: Any) -> dict[str, Any]:
    row = {
        "user_last_event_ms": NOW_MS - 60_000,
        "user_recent_items": ["b"],
        "user_emb_short": [0.0, 1.0],
        "user_emb_long": [0.0, 0.5],
        "user_embedding_version": "7",
    }
    return {**row, **overrides}


def recommender(
    store: FakeStore, models: FakeModels | None = None, popular: list | None = None, **ranking: Any
) -> Recommender:
    popular_list = fb.PopularList()
    popular_list.items = popular if popular is not None else [("e", 3.0), ("b", 2.0), ("a", 1.0)]
    settings = {"explore_share": 0.0, "diversity_weight": 0.0, "seed": 1, **ranking}
    return Recommender(
        store,
        models or FakeModels(),
        FakeItems(),
        popular_list,
        RankingConfig(**settings),
        FallbackConfig(max_feature_age_s=86400.0, breaker_failures=2, breaker_cooldown_s=60.0),
        StateConfig(),
        clock=lambda: NOW_S,
    )


def test_models_rank_and_recent_items_are_excluded() -> None:
    models = FakeModels()
    result = recommender(FakeStore({"u": user()}), models).recommend("u", 3)

    assert [r.item_id for r in result.items] == ["a", "c", "d"]
    assert {r.source for r in result.items} == {"ranked"}
    assert result.fallback is None and result.model_version == 7
    assert result.feature_age_s == 60.0
    # One ranker call for every candidate left after the exclusion.
    assert [rows.tolist() for rows in models.rank_calls] == [[0, 2, 3, 4]]


def test_diversity_weight_breaks_up_similar_items() -> None:
    result = recommender(FakeStore({"u": user(user_recent_items=[])}), diversity_weight=0.7)

    items = [r.item_id for r in result.recommend("u", 2).items]

    # a and b are near-duplicates: MMR takes a, then the best of the other direction.
    assert items == ["a", "d"]


def test_unknown_user_gets_trending() -> None:
    result = recommender(FakeStore({})).recommend("nobody", 2)

    assert [r.item_id for r in result.items] == ["e", "b"]
    assert (result.fallback, result.reason) == (fb.TRENDING, fb.UNKNOWN_USER)
    assert result.model_version is None and result.feature_age_s is None


def test_stale_user_gets_trending_without_recent_items() -> None:
    stale = user(user_last_event_ms=NOW_MS - 2 * 86_400_000)

    result = recommender(FakeStore({"u": stale})).recommend("u", 5)

    assert [r.item_id for r in result.items] == ["e", "a"]
    assert (result.fallback, result.reason) == (fb.TRENDING, fb.STALE_FEATURES)
    assert result.feature_age_s == 2 * 86400.0


def test_store_down_serves_the_popular_cache() -> None:
    result = recommender(FakeStore({}, down=True)).recommend("u", 2)

    assert [r.item_id for r in result.items] == ["e", "b"]
    assert (result.fallback, result.reason) == (fb.POPULAR_CACHE, fb.STORE_UNAVAILABLE)
    assert "unavailable" in (result.detail or "")


def test_store_down_and_no_cache_is_nothing_to_serve() -> None:
    with pytest.raises(NothingToServe, match="store_unavailable"):
        recommender(FakeStore({}, down=True), popular=[]).recommend("u", 2)


def test_model_down_falls_back_to_embedding_dot_product() -> None:
    result = recommender(FakeStore({"u": user()}), FakeModels(fail=True)).recommend("u", 3)

    # query = short + long = (0, 1.5): d and e score 1.5 (a tie, kept in catalogue
    # order), a 0, c −0.15; b (0.15) is a recent item and excluded.
    assert [r.item_id for r in result.items] == ["d", "e", "a"]
    assert (result.fallback, result.reason) == (fb.EMBEDDING, fb.MODEL_UNAVAILABLE)
    assert result.model_version == 7
    assert "UNAVAILABLE" in (result.detail or "")


def test_breaker_skips_the_model_after_repeated_failures() -> None:
    models = FakeModels(fail=True)
    service = recommender(FakeStore({"u": user()}), models)
    service.recommend("u", 2)
    service.recommend("u", 2)
    models.fail = False  # it would answer now, but the breaker is open for 60 s

    result = service.recommend("u", 2)

    assert result.fallback == fb.EMBEDDING
    assert result.detail == "circuit breaker open"
    assert models.rank_calls == []


def test_model_down_and_no_user_embedding_gets_trending() -> None:
    no_embedding = user(user_emb_short=[], user_emb_long=[0.0, 0.0])

    result = recommender(FakeStore({"u": no_embedding}), FakeModels(fail=True)).recommend("u", 2)

    assert (result.fallback, result.reason) == (fb.TRENDING, fb.MODEL_UNAVAILABLE)


def test_exploration_is_reproducible_per_user_with_a_seed() -> None:
    store = FakeStore({"u": user(user_recent_items=[])})
    service = recommender(store, explore_share=0.5)

    first = [(r.item_id, r.source) for r in service.recommend("u", 4).items]
    second = [(r.item_id, r.source) for r in service.recommend("u", 4).items]

    assert first == second
    assert [s for _, s in first].count("explore") == 2


def test_seeded_rng_differs_by_user_but_not_by_call() -> None:
    factory = seeded_rng(3)

    assert factory("u").random() == factory("u").random()
    assert factory("u").random() != factory("v").random()


def test_embeddings_of_another_version_are_pooled_again() -> None:
    # Pooled under version 6; version 7 re-pools the last events from its own table:
    # one event on d with reward 1 → both pooled embeddings are d's, (0, 1).
    old = user(
        user_embedding_version="6",
        user_emb_short=[9.0, 9.0],
        user_emb_long=[9.0, 9.0],
        user_recent_items=["d"],
        user_recent_ts_ms=[NOW_MS - 1000],
        user_recent_rewards=[1.0],
    )

    result = recommender(FakeStore({"u": old}), FakeModels(fail=True)).recommend("u", 2)

    # query (0, 2): e scores 2, d is excluded as recent, then b (0.2) beats a (0).
    assert [r.item_id for r in result.items] == ["e", "b"]


class SequentialModels(FakeModels):
    """A sequential retriever: P(a..e) = 0.4, 0.3, 0.2, 0.05, 0.05 (rows best first)."""

    sequential = True

    def sequence_candidates(self, user: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        return np.array([0, 1, 2, 3, 4]), np.array([0.4, 0.3, 0.2, 0.05, 0.05])


class PairStore(FakeStore):
    """user_realtime rows, plus co-engagement views: u's window [b]; b's neighbour d (2)."""

    def read(self, view: str, ids: list[str]) -> dict[str, Any]:
        if view == "user_coengagement":
            return {i: {"user_interacted_items": ["b"]} for i in ids}
        if view == "item_coengagement":
            rows = {"b": {"item_neighbors": ["d", "zz"], "item_neighbor_pairs": [2.0, 5.0]}}
            return {i: rows.get(i) for i in ids}
        return super().read(view, ids)


def test_sequential_models_blend_with_coengagement() -> None:
    models = SequentialModels()
    result = recommender(PairStore({"u": user()}), models).recommend("u", 3)
    # b is recent. Event counts are 0 (→ 1): cos(b, d) = 2; blend = cos + 2 P:
    # d 2 + 0.1 = 2.1, a 0.8, c 0.4. The unknown neighbour zz is not served.
    assert [r.item_id for r in result.items] == ["d", "a", "c"]
    assert result.items[0].score == pytest.approx(2.1)
    assert models.rank_calls == []  # the blend orders, not the ranker


def test_blend_without_the_store_keeps_sequential_candidates() -> None:
    class DownPairs(PairStore):
        def read(self, view: str, ids: list[str]) -> dict[str, Any]:
            if view.endswith("coengagement"):
                raise StoreUnavailableError("down")
            return super().read(view, ids)

    result = recommender(DownPairs({"u": user()}), SequentialModels()).recommend("u", 2)
    assert [r.item_id for r in result.items] == ["a", "c"]


def test_ranker_order_can_be_chosen_for_a_sequential_retriever() -> None:
    models = SequentialModels()
    result = recommender(PairStore({"u": user()}), models, order="ranker").recommend("u", 3)
    assert [r.item_id for r in result.items] == ["a", "c", "d"]
    assert len(models.rank_calls) == 1


class CandidateRankerModels(SequentialModels):
    """The sequential retriever with a candidate ranker that prefers low P_seq."""

    candidate_ranker = True

    def __init__(self, measured: str | None) -> None:
        super().__init__()
        self.catalog = dataclasses.replace(catalog(), candidate_order=measured)
        self.features: list[np.ndarray] = []

    def rank_candidates(self, features: np.ndarray) -> np.ndarray:
        self.features.append(features)
        return features[:, FEATURES.index("seq_log_prob")] * -1.0


@pytest.mark.parametrize(
    ("order", "measured", "ranked"),
    [("auto", "ranker", True), ("auto", "blend", False), ("auto", None, False),
     ("ranker", "blend", True), ("blend", "ranker", False)],
)  # fmt: skip
def test_candidate_ranker_orders_when_measured_or_chosen(order, measured, ranked) -> None:
    models = CandidateRankerModels(measured)
    row = user(user_event_count=4)
    result = recommender(PairStore({"u": row}), models, order=order).recommend("u", 3)
    assert models.rank_calls == []  # never the two-tower stack's ranker
    if not ranked:
        assert [r.item_id for r in result.items] == ["d", "a", "c"]  # the blend
        assert models.features == []
        return
    # candidates: a, c, d, e (b is recent); the ranker prefers low P_seq: d, e tie (0.05)
    assert [r.item_id for r in result.items] == ["d", "e", "c"]
    (features,) = models.features
    assert features.shape == (4, len(FEATURES))
    assert features[:, FEATURES.index("user_log_events")] == pytest.approx(np.log1p(4.0))
    co = features[:, FEATURES.index("co_cosine")]
    assert co.tolist() == pytest.approx([0.0, 0.0, 2.0, 0.0])  # rows a, c, d, e


class FakeNewItems:
    """Two new items: n-x along a's content, n-y orthogonal to it."""

    config = NewItemsConfig(table_path="unused", slots=2, min_cosine=0.5)
    snapshot = ContentSnapshot(
        ("n-x", "n-y"),
        np.array([[1, 0], [0, 1]], dtype=np.float32),
        {"b": np.array([1, 0], np.float32), "n-x": np.array([1, 0], np.float32)},
        "enc@1",
        NOW_MS,
    )


@pytest.mark.parametrize("prior", ["content_neighbours", "none"])
def test_a_new_item_matching_the_recent_content_takes_a_reserved_slot(prior: str) -> None:
    result = recommender(FakeStore({"u": user()}))
    new_items = FakeNewItems()
    new_items.config = FakeNewItems.config.model_copy(update={"prior": prior})
    result.parts = dataclasses.replace(result.parts, new_items=new_items)

    items = result.recommend("u", 4).items

    # Profile = b's content vector: n-x (cosine 1) in slot 4 // 2 = 2, n-y below 0.5.
    assert [(r.item_id, r.source) for r in items] == [
        ("a", "ranked"),
        ("c", "ranked"),
        ("n-x", NEW_ITEM),
        ("d", "ranked"),
    ]
    assert items[2].score == 1.0
    assert [r.item_id for r in result.recommend("u", 1).items] == ["a"]  # k // 2 = 0 slots


def test_new_item_slots_follow_the_candidate_sources() -> None:
    """An experiment variant without the ``new_items`` source shows no new item."""
    result = recommender(FakeStore({"u": user()}), candidate_sources=["retriever", "coengagement"])
    result.parts = dataclasses.replace(result.parts, new_items=FakeNewItems())

    items = result.recommend("u", 4).items

    assert NEW_ITEM not in {r.source for r in items}
    assert [r.item_id for r in items] == ["a", "c", "d", "e"]
