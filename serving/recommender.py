"""One recommendation request end to end, with every documented fallback.

    user features ─▶ retrieval ─▶ drop recent ─▶ ranker (one batch) ─▶ MMR + Thompson ─▶ top-k
         │ store down: popular_cache   │ unknown / stale user: trending
         └ model down or slow: embedding dot product, then the same post-ranking

An experiment's variant (``overrides``, from ``beam_pipelines.experiments``) changes
the exploration share, the diversity weight and the candidate sources of its
requests, or freezes the user's features at a time (``features.FrozenRows``).

Nothing here raises for a missing component except ``NothingToServe`` (→ 503),
when there is neither a model answer nor any popular list.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from beam_pipelines.state.config import StateConfig
from feature_repo.features import USER_EVENT_COUNT, USER_RECENT_ITEMS
from feature_repo.store import FeatureStoreClient, StoreUnavailableError
from models.blend import blend
from models.candidate_features import candidate_features
from serving import coengagement, postrank
from serving import fallbacks as fb
from serving.backends import ModelUnavailableError
from serving.config import FallbackConfig, RankingConfig
from serving.features import (
    FrozenRows,
    ItemFeatureCache,
    feature_age_s,
    read_user,
    user_embedding_now,
)
from serving.model_set import ModelSet, align_user
from serving.new_items import NEW_ITEM, NewItemsCache, choose_new_items, new_slots, place

LOG = logging.getLogger(__name__)
POPULAR = "popular"
RANKING_OVERRIDES = frozenset({"explore_share", "diversity_weight", "candidate_sources"})
Overrides = tuple[tuple[str, Any], ...]
"""Sorted ``(setting, value)`` items of a variant (``Assignment.overrides``)."""


class NothingToServe(RuntimeError):
    """Neither the models nor any popular list can answer."""


@dataclasses.dataclass(frozen=True)
class Recommended:
    item_id: str
    score: float
    source: str  # postrank.EXPLOIT, postrank.EXPLORE, POPULAR or new_items.NEW_ITEM


@dataclasses.dataclass(frozen=True)
class Recommendation:
    """A response: ``fallback`` is what was served instead of the models (None: the
    models), ``reason`` why; ``feature_age_s`` is the age of the user's newest event."""

    user_id: str
    items: list[Recommended]
    model_version: int | None
    feature_age_s: float | None
    fallback: str | None = None
    reason: str | None = None
    detail: str | None = None


@dataclasses.dataclass(frozen=True)
class Parts:
    """The model version a request uses, with its item snapshot source and its new
    items (those not in its catalogue; None: off): swapped as a whole on a version
    change, read once per request."""

    models: ModelSet
    items: ItemFeatureCache
    new_items: NewItemsCache | None = None


@dataclasses.dataclass(frozen=True)
class Request:
    """One request's settings: the ranking config with its variant's changes, and the
    items left out of the co-engagement window by frozen features."""

    user_id: str
    k: int
    at_ms: int
    ranking: RankingConfig
    hidden: frozenset[str] = frozenset()


def seeded_rng(seed: int | None) -> Callable[[str], np.random.Generator]:
    """Per-request RNG factory: ``(seed, user_id)`` streams, or fresh entropy."""

    def factory(user_id: str) -> np.random.Generator:
        if seed is None:
            return np.random.default_rng()
        digest = hashlib.blake2b(user_id.encode(), digest_size=8).digest()
        return np.random.default_rng([seed, int.from_bytes(digest, "little")])

    return factory


class Recommender:
    """Ranks for one user. Thread-safe: requests share only immutable snapshots."""

    def __init__(
        self,
        store: FeatureStoreClient,
        models: ModelSet,
        items: ItemFeatureCache,
        popular: fb.PopularList,
        ranking: RankingConfig,
        fallback: FallbackConfig,
        state: StateConfig,
        rng: Callable[[str], np.random.Generator] | None = None,
        clock: Callable[[], float] = time.time,
        new_items: NewItemsCache | None = None,
    ) -> None:
        self.store, self.popular = store, popular
        self.parts = Parts(models, items, new_items)
        self.ranking, self.fallback, self.state = ranking, fallback, state
        self.breaker = fb.CircuitBreaker(fallback.breaker_failures, fallback.breaker_cooldown_s)
        self._rng = rng or seeded_rng(ranking.seed)
        self._half_lives = (state.user_short_half_life_s, state.user_long_half_life_s)
        self._clock = clock
        self._rankings: dict[Overrides, RankingConfig] = {(): ranking}
        self._frozen = FrozenRows()

    def ranking_for(self, overrides: Overrides) -> RankingConfig:
        """The ranking config with a variant's changes (built once per variant)."""
        found = self._rankings.get(overrides)
        if found is None:
            update = {k: v for k, v in overrides if k in RANKING_OVERRIDES}
            found = self._rankings.setdefault(overrides, self.ranking.model_copy(update=update))
        return found

    def swap(
        self, models: ModelSet, items: ItemFeatureCache, new_items: NewItemsCache | None = None
    ) -> Parts:
        """Serve another model version from the next request on; returns the old parts
        (requests in flight finish with them)."""
        old, self.parts = self.parts, Parts(models, items, new_items)
        self.breaker.success()
        return old

    def recommend(self, user_id: str, k: int, overrides: Overrides = ()) -> Recommendation:
        parts = self.parts
        at_ms = int(self._clock() * 1000)
        request = Request(user_id, k, at_ms, self.ranking_for(overrides))
        try:
            user = read_user(self.store, user_id)
        except StoreUnavailableError as e:
            return self._popular(user_id, k, None, None, fb.POPULAR_CACHE, fb.STORE_UNAVAILABLE, e)
        if user is None:
            return self._popular(user_id, k, None, None, fb.TRENDING, fb.UNKNOWN_USER)
        freeze_ms = dict(overrides).get("freeze_ms")
        if freeze_ms is not None:
            user, hidden = self._frozen.as_of(user_id, user, freeze_ms)
            request = dataclasses.replace(request, hidden=hidden)
        age_s = feature_age_s(user, at_ms)
        if age_s > self.fallback.max_feature_age_s:
            return self._popular(user_id, k, user, age_s, fb.TRENDING, fb.STALE_FEATURES)
        user = align_user(user, parts.models.catalog, self._half_lives)
        if self.breaker.allow():
            try:
                result = self._ranked(parts, request, user)
            except ModelUnavailableError as e:
                self.breaker.failure()
                return self._embedding(parts, request, user, age_s, e)
            self.breaker.success()
            return dataclasses.replace(result, feature_age_s=age_s)
        return self._embedding(parts, request, user, age_s, "circuit breaker open")

    def _recent(self, user: Mapping[str, Any] | None) -> list[str]:
        n = self.ranking.exclude_recent
        return list((user or {}).get(USER_RECENT_ITEMS) or [])[:n] if n else []

    def _ranked(self, parts: Parts, request: Request, user: Mapping[str, Any]) -> Recommendation:
        models = parts.models
        recent = models.catalog.rows(self._recent(user))
        if self._blends(models):
            rows, scores = self._blended(parts, request, user, recent)
        else:
            rows, scores = models.ranked_candidates(
                user, recent, parts.items.snapshot, self.ranking.candidates
            )
        items = self._arrange(parts, request, user, rows, scores)
        return Recommendation(request.user_id, items, models.version, None)

    def _blends(self, models: ModelSet) -> bool:
        order = self.ranking.order
        if order == "blend":
            return True
        return models.sequential and (order == "auto" or models.candidate_ranker)

    def _blended(
        self, parts: Parts, request: Request, user: Mapping[str, Any], recent: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The sequential retriever's and the co-engagement source's candidates (those
        of ``ranking.candidate_sources``), ordered by ``models.blend`` (the order
        ``rtp evaluate``'s ``full`` measures)."""
        models, n = parts.models, self.ranking.blend_candidates
        catalog = models.catalog
        sources = request.ranking.candidate_sources
        window, co = self._coengagement(parts, request, "coengagement" in sources)
        # Not shown again: the recent events' items and every item of the pair window
        # (the replay excludes all seen items; the window is what the store knows).
        seen = np.union1d(recent[recent >= 0], catalog.rows(window))
        seen = seen[seen >= 0]
        if "retriever" in sources:
            seq_rows, probability = models.sequence_candidates(user)
        else:
            seq_rows, probability = np.zeros(0, np.int64), np.zeros(0)
        keep = np.isin(seq_rows, postrank.unseen_rows(seq_rows, seen))
        seq_rows, probability = seq_rows[keep][:n], probability[keep][:n]
        co[seen] = 0.0
        co_rows = np.flatnonzero(co > 0)
        co_rows = co_rows[np.lexsort((co_rows, -co[co_rows]))][:n]
        if self._ranks_candidates(models):
            rows, features = candidate_features(
                seq_rows,
                np.log(np.maximum(probability, 1e-300)),
                co_rows,
                co,
                parts.items.snapshot.column(coengagement.EVENT_COUNT),
                float(user.get(USER_EVENT_COUNT) or 0),
                n,
            )
            scores = models.rank_candidates(features)
            order = np.lexsort((rows, -scores))
            rows, scores = rows[order], scores[order]
        else:
            rows, scores = blend(seq_rows, probability, co_rows, co, self.ranking.blend_weight)
        return rows[: self.ranking.candidates], scores[: self.ranking.candidates]

    def _coengagement(
        self, parts: Parts, request: Request, scored: bool
    ) -> tuple[list[str], np.ndarray]:
        """The user's pair window (without frozen-away items) and, if ``scored``, the
        co-engagement score of every catalogue row (zeros otherwise)."""
        catalog = parts.models.catalog
        try:
            window = coengagement.interacted_items(self.store, request.user_id)
            window = [item for item in window if item not in request.hidden]
            if not scored:
                return window, np.zeros(len(catalog))
            co = coengagement.coengagement_scores(self.store, catalog, parts.items.snapshot, window)
        except StoreUnavailableError as e:
            LOG.warning("co-engagement not read, sequential candidates only: %s", e)
            return [], np.zeros(len(catalog))
        return window, co

    def _ranks_candidates(self, models: ModelSet) -> bool:
        """The candidate ranker orders the blend's candidates: with ``order: ranker``,
        or ``auto`` when this version's training measured it better than the blend."""
        order = self.ranking.order
        if not models.candidate_ranker:
            return False
        return order == "ranker" or (order == "auto" and models.catalog.candidate_order == "ranker")

    def _embedding(
        self,
        parts: Parts,
        request: Request,
        user: Mapping[str, Any],
        age_s: float,
        error: Exception | str,
    ) -> Recommendation:
        query = user_embedding_now(user)
        catalog = parts.models.catalog
        user_id, k = request.user_id, request.k
        if query is None or query.shape[0] != catalog.embeddings.shape[1]:
            return self._popular(user_id, k, user, age_s, fb.TRENDING, fb.MODEL_UNAVAILABLE, error)
        scores = fb.embedding_scores(catalog.embeddings, query)
        recent = catalog.rows(self._recent(user))
        scores[recent[recent >= 0]] = -np.inf
        order = np.argsort(-scores, kind="stable")[: self.ranking.candidates]
        rows = order[np.isfinite(scores[order])]
        items = self._arrange(parts, request, user, rows, scores[rows])
        return Recommendation(
            user_id,
            items,
            parts.models.version,
            age_s,
            fb.EMBEDDING,
            fb.MODEL_UNAVAILABLE,
            str(error),
        )

    def _arrange(
        self,
        parts: Parts,
        request: Request,
        user: Mapping[str, Any],
        rows: np.ndarray,
        scores: np.ndarray,
    ) -> list[Recommended]:
        alpha, beta = parts.items.snapshot.beta_now(rows, request.at_ms, self.state)
        catalog = parts.models.catalog
        ranking = request.ranking
        rng = self._rng(request.user_id)
        arranged = postrank.arrange(
            scores,
            catalog.embeddings[rows],
            alpha,
            beta,
            request.k,
            explore_share=ranking.explore_share,
            diversity_weight=ranking.diversity_weight,
            rng=rng,
            unit=catalog.unit_embeddings[rows] if ranking.diversity_weight > 0 else None,
        )
        ids = catalog.item_ids
        ranked = [
            Recommended(str(ids[rows[i]]), float(scores[i]), source)
            for i, source in zip(arranged.indices.tolist(), arranged.sources, strict=True)
        ]
        return self._with_new_items(parts, request, user, ranked, rng)

    def _with_new_items(
        self,
        parts: Parts,
        request: Request,
        user: Mapping[str, Any],
        ranked: list[Recommended],
        rng: np.random.Generator,
    ) -> list[Recommended]:
        """``ranked`` with the user's new items in their reserved slots
        (``serving.new_items``): content cosine as the score, no store read. Their
        Thompson draws continue exploration's stream (``rng``), so a seeded request
        stays reproducible and the two do not draw the same numbers."""
        cache = parts.new_items
        if cache is None or "new_items" not in request.ranking.candidate_sources:
            return ranked
        config = cache.config
        recent = [i for i in user.get(USER_RECENT_ITEMS) or [] if i not in request.hidden]
        n = new_slots(request.k, config.slots)
        new = choose_new_items(
            cache.snapshot,
            recent,
            n,
            config,
            parts.items.snapshot,
            request.at_ms,
            self.state,
            rng,
        )
        if not new:
            return ranked
        return place(ranked, [Recommended(i, s, NEW_ITEM) for i, s in new], request.k)

    def _popular(
        self,
        user_id: str,
        k: int,
        user: Mapping[str, Any] | None,
        age_s: float | None,
        fallback: str,
        reason: str,
        error: Exception | str | None = None,
    ) -> Recommendation:
        recent = set(self._recent(user))
        popular, from_model = self.popular.current()
        chosen = [(i, s) for i, s in popular if i not in recent][:k]
        if not chosen:
            raise NothingToServe(f"{reason}: no popular list to fall back on ({error or ''})")
        items = [Recommended(i, s, POPULAR) for i, s in chosen]
        detail = None if error is None else str(error)
        fallback = fb.MODEL_POPULAR if from_model else fallback
        return Recommendation(user_id, items, None, age_s, fallback, reason, detail)
