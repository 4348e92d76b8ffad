"""The model-based variants: two-tower static / streaming, and full (+ ranker).

They depend on the trained models only through two small interfaces, so the
replay logic is tested with tiny NumPy stand-ins and the models package plugs in
through ``models.evaluation.neural``. User and item features are the pipeline's
own: ``UserState.features()`` and ``ItemState.features()`` from the world, which
the replay keeps with the exported item-embedding table (``World.embeddings``).

Model calls are batched: the state never depends on what was recommended, so at
``fit`` a replica of the training world walks the test stream once and collects
the inputs of every test event (the state just before it); the models score them
in large batches, and ``scores`` then looks up the event being replayed. The
numbers are the same as calling the models event by event, only faster.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from beam_pipelines.state import ItemState, UserState
from feature_repo.features import ITEM_EMBEDDING_VECTOR, ITEM_FEATURES, USER_FEATURES, USER_KEY
from models.evaluation.progress import progress
from models.evaluation.world import World

RERANK_CANDIDATES = 200
RANKER_BATCH_ROWS = 8192
QUERY_BATCH_ROWS = 4096
_RERANKED_OFFSET = 1e9  # re-ranked candidates always sit above the rest
ITEM_EMBEDDING = ITEM_EMBEDDING_VECTOR  # ranker input name of the candidate's table row


class Retrieval(Protocol):
    """A trained two-tower model: item vectors and a query tower over user features."""

    def item_vectors(self, item_ids: list[str]) -> np.ndarray:
        """``[N, d]`` candidate vectors, row per id (zeros for an unknown id)."""

    def query_vectors(self, user_features: list[dict[str, Any]]) -> np.ndarray:
        """``[B, d]`` query vectors from ``user_realtime`` feature dicts (plus ``user_id``)."""


class Ranker(Protocol):
    """A trained ranker over named inputs: ``user_realtime`` and ``item_realtime``
    feature names and ``item_embedding`` (the exported table row)."""

    input_names: tuple[str, ...]

    def score(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """``[N]`` scores of N (user, candidate) rows; higher is better."""


def user_features(world: World, user: int) -> dict[str, Any]:
    """``user_realtime`` features as the online store holds them before the event."""
    user_id = world.log.users[user]
    state = world.user_states.get(user_id)
    if state is None:
        emb = world.embeddings
        assert emb is not None, "the neural variants need World(embeddings=...)"
        state = UserState(world.state_config, emb.dim, emb.version)
    return {USER_KEY: user_id, **state.features()}


class StreamingQueries:
    """Query vectors of the rolling user state before every test event.

    ``prepare`` walks a replica of the training world over the test stream and
    runs the query tower in batches; ``at(world)`` is the query of the event
    ``world`` is about to apply. Shared by ``two_tower_streaming`` and ``full``.
    """

    def __init__(self, retrieval: Retrieval, show_progress: bool = False):
        self.retrieval = retrieval
        self.show_progress = show_progress
        self.queries: np.ndarray | None = None
        self.features: list[dict[str, Any]] = []
        self.start = 0

    def prepare(self, world: World) -> None:
        if self.queries is not None and self.start == world.applied:
            return
        log, replica = world.log, world.replica()
        self.start = world.applied
        self.features = []
        for k in progress(range(self.start, len(log.events)), "user features", self.show_progress):
            self.features.append(user_features(replica, int(log.user_idx[k])))
            replica.apply(k)
        parts = [
            np.asarray(self.retrieval.query_vectors(self.features[i : i + QUERY_BATCH_ROWS]))
            for i in range(0, len(self.features), QUERY_BATCH_ROWS)
        ]
        self.queries = np.concatenate(parts).astype(np.float64) if parts else np.zeros((0, 0))

    def at(self, world: World, user: int) -> np.ndarray:
        assert self.queries is not None, "prepare first"
        if int(world.log.user_idx[world.applied]) != user:
            raise ValueError("queries are per test event: score the user of the next event")
        return self.queries[world.applied - self.start]


class TwoTowerStatic:
    """Query from the user features frozen at the end of training."""

    name = "two_tower_static"

    def __init__(self, retrieval: Retrieval):
        self.retrieval = retrieval

    def fit(self, world: World) -> None:
        self._items = self.retrieval.item_vectors(world.log.items).astype(np.float64)
        features = [user_features(world, u) for u in range(world.log.n_users)]
        self._queries = np.asarray(self.retrieval.query_vectors(features), dtype=np.float64)
        self._scores: dict[int, np.ndarray] = {}

    def scores(self, world: World, user: int) -> np.ndarray:
        cached = self._scores.get(user)
        if cached is None:
            cached = self._scores[user] = self._items @ self._queries[user]
        return cached


class TwoTowerStreaming:
    """Query from the rolling user features as of just before each event."""

    name = "two_tower_streaming"

    def __init__(self, retrieval: Retrieval, queries: StreamingQueries | None = None):
        self.retrieval = retrieval
        self.queries = queries or StreamingQueries(retrieval)

    def fit(self, world: World) -> None:
        self.items = self.retrieval.item_vectors(world.log.items).astype(np.float64)
        self.queries.prepare(world)

    def scores(self, world: World, user: int) -> np.ndarray:
        return self.items @ self.queries.at(world, user)


class Full:
    """Streaming retrieval, then the ranker re-orders the top candidates.

    The top ``candidates`` unseen items by retrieval score get ``1e9 + ranker
    score``; the others keep their retrieval score below them, so the ranking
    stays over the full catalogue. Ranker inputs: the user's features before the
    event, each candidate's ``item_realtime`` features at that moment and its
    table embedding.

    ``retrieval_weight`` w > 0 orders the candidates by ``log p + w · s`` instead,
    with p the ranker's probability and s the retrieval score: with w = 1 /
    temperature that is log P(engaged | shown) + log P(item | user) up to a
    constant. w = 0 (default) is the service's order: the ranker alone.
    """

    name = "two_tower_full"

    def __init__(
        self,
        retrieval: Retrieval,
        ranker: Ranker,
        candidates: int = RERANK_CANDIDATES,
        queries: StreamingQueries | None = None,
        show_progress: bool = False,
        retrieval_weight: float = 0.0,
    ):
        if retrieval_weight < 0:
            raise ValueError(f"retrieval_weight must be >= 0, got {retrieval_weight}")
        self.streaming = TwoTowerStreaming(retrieval, queries)
        self.ranker = ranker
        self.retrieval_weight = retrieval_weight
        self.candidates = candidates
        self.show_progress = show_progress
        names = ranker.input_names
        self._user_names = [n for n in names if n in USER_FEATURES]
        self._item_names = [n for n in names if n in ITEM_FEATURES]
        unknown = set(names) - set(self._user_names) - set(self._item_names) - {ITEM_EMBEDDING}
        if unknown:
            raise ValueError(f"ranker inputs without a feature source: {sorted(unknown)}")

    def fit(self, world: World) -> None:
        self.streaming.fit(world)
        log, replica, queries = world.log, world.replica(), self.streaming.queries
        item_matrix = np.array([self._item_row(replica, i) for i in range(log.n_items)])
        self._top: list[np.ndarray] = []
        self._ranked: list[np.ndarray] = []
        buffer: list[tuple[dict[str, Any], np.ndarray, np.ndarray]] = []
        rows = 0
        for k in progress(range(world.applied, len(log.events)), "ranker", self.show_progress):
            user = int(log.user_idx[k])
            top = self._candidates(replica, user, queries.at(replica, user))
            self._top.append(top)
            buffer.append((queries.features[k - queries.start], top, item_matrix[top]))
            rows += len(top)
            if rows >= RANKER_BATCH_ROWS:
                self._rank(buffer)
                buffer, rows = [], 0
            replica.apply(k)
            item = int(log.item_idx[k])
            item_matrix[item] = self._item_row(replica, item)
        self._rank(buffer)
        self._start = world.applied

    def _item_row(self, world: World, item: int) -> np.ndarray:
        state = world.item_states.get(world.log.items[item]) or ItemState(world.state_config)
        values = state.features(world.state_config)
        return np.array([float(values[n]) for n in self._item_names], dtype=np.float64)

    def _candidates(self, world: World, user: int, query: np.ndarray) -> np.ndarray:
        masked = self.streaming.items @ query
        masked[world.seen_items(user)] = -np.inf
        n = min(self.candidates, masked.size)
        top = np.argpartition(-masked, n - 1)[:n]
        return top[np.isfinite(masked[top])]

    def _rank(self, buffer: list[tuple[dict[str, Any], np.ndarray, np.ndarray]]) -> None:
        """Score the buffered events' candidates in one call."""
        if not buffer:
            return
        counts = np.array([len(top) for _, top, _ in buffer])
        inputs: dict[str, np.ndarray] = {}
        for name in self._user_names:
            values = np.array([_value(features[name]) for features, _, _ in buffer])
            inputs[name] = np.repeat(values, counts, axis=0)
        items = np.concatenate([block for _, _, block in buffer]).reshape(-1, len(self._item_names))
        for column, name in enumerate(self._item_names):
            inputs[name] = items[:, column]
        if ITEM_EMBEDDING in self.ranker.input_names:
            inputs[ITEM_EMBEDDING] = self.streaming.items[np.concatenate([t for _, t, _ in buffer])]
        scores = np.asarray(self.ranker.score(inputs), dtype=np.float64)
        for end, top in zip(np.cumsum(counts), (t for _, t, _ in buffer), strict=True):
            self._ranked.append(scores[end - len(top) : end])

    def scores(self, world: World, user: int) -> np.ndarray:
        out = self.streaming.scores(world, user).copy()
        i = world.applied - self._start
        top, ranked = self._top[i], self._ranked[i]
        if self.retrieval_weight > 0:
            ranked = np.log(np.clip(ranked, 1e-12, None)) + self.retrieval_weight * out[top]
        out[top] = _RERANKED_OFFSET + ranked
        return out


def _value(value: Any) -> Any:
    """A feature value as an array element: None (missing) → 0."""
    return 0 if value is None else value
