"""What the service answers when a component is missing, and the breaker that
stops it from waiting on a model server that keeps failing.

* trending/popular: items ranked by their engagement rate brought forward to
  now, for unknown users and users with stale features; the list lives in memory
  and in a JSON file, so a store that is down (even at start-up) still gets it;
* popular (model): before any such list exists (a fresh service on an empty
  store), the training engagement counts the served model version carries in
  ``item_embeddings/<version>/popular.json``;
* embedding: dot product of the user's rolling embedding with the item table,
  when the model server is unreachable or slow.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import tempfile
import threading
import time
from collections.abc import Callable

import numpy as np

from beam_pipelines.state.config import StateConfig
from feature_repo.features import ITEM_ENGAGEMENTS_LONG, ITEM_ENGAGEMENTS_SHORT, ITEM_LAST_EVENT_MS
from serving.features import ItemSnapshot, decay_forward

LOG = logging.getLogger(__name__)

# fallback (what was served) and reason (why), as reported in responses and metrics
TRENDING, POPULAR_CACHE, EMBEDDING = "trending", "popular_cache", "embedding"
MODEL_POPULAR = "popular"  # the model version's training popularity
MODEL_POPULAR_FILE = "popular.json"  # models.export.POPULAR_FILE, without importing TF
UNKNOWN_USER, STALE_FEATURES = "unknown_user", "stale_features"
MODEL_UNAVAILABLE, STORE_UNAVAILABLE = "model_unavailable", "store_unavailable"


def popularity(snapshot: ItemSnapshot, at_ms: int, state: StateConfig) -> np.ndarray:
    """Engagements per second at ``at_ms``: ``E_short/h_short + E_long/h_long``.

    Each decayed engagement sum is brought forward to ``at_ms`` and divided by its
    half-life (s), so a burst of the last hour lifts an item while steady
    favourites keep a floor from the long horizon.
    """
    last = snapshot.column(ITEM_LAST_EVENT_MS)
    h_short, h_long = state.item_short_half_life_s, state.item_long_half_life_s
    short = decay_forward(snapshot.column(ITEM_ENGAGEMENTS_SHORT), last, at_ms, h_short)
    long = decay_forward(snapshot.column(ITEM_ENGAGEMENTS_LONG), last, at_ms, h_long)
    return short / h_short + long / h_long


def top_items(item_ids: np.ndarray, scores: np.ndarray, n: int) -> list[tuple[str, float]]:
    """The ``n`` best ``(item_id, score)`` with score > 0, best first (ties by id order)."""
    order = np.argsort(-scores, kind="stable")[:n]
    return [(str(item_ids[i]), float(scores[i])) for i in order if scores[i] > 0]


def load_model_popular(model_base: str | os.PathLike[str], version: int) -> list[tuple[str, float]]:
    """The ``popular.json`` of an exported version, most engaged first; [] if absent."""
    from serving.catalog import TABLE_DIR

    path = pathlib.Path(model_base) / TABLE_DIR / str(version) / MODEL_POPULAR_FILE
    if not path.is_file():
        LOG.warning(
            "model version %s has no %s: no popular list before the store has items",
            version,
            MODEL_POPULAR_FILE,
        )
        return []
    try:
        return [(str(i), float(s)) for i, s in json.loads(path.read_text())["items"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        LOG.warning("%s unreadable: %s", path, e)
        return []


class PopularList:
    """The current popular/trending list, kept in memory and optionally in a file.

    ``update`` replaces it (and rewrites the file atomically); ``load`` reads the
    file, for a start-up while the store is down. ``model_items``: the served model
    version's training popularity, what ``current`` falls back on while there is
    no list from the store or the file. Lists are never mutated in place, so
    readers need no lock.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = pathlib.Path(path) if path else None
        self.items: list[tuple[str, float]] = []
        self.computed_at_ms = 0
        self.model_items: list[tuple[str, float]] = []

    def current(self) -> tuple[list[tuple[str, float]], bool]:
        """``(items, from_model)``: the live/cached list, else the model's."""
        items = self.items
        return (items, False) if items else (self.model_items, True)

    @property
    def available(self) -> bool:
        return bool(self.items or self.model_items)

    def update(self, items: list[tuple[str, float]], computed_at_ms: int) -> None:
        self.items, self.computed_at_ms = items, computed_at_ms
        if self.path is not None:
            self._save()

    def _save(self) -> None:
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = {"computed_at_ms": self.computed_at_ms, "items": self.items}
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        try:
            with os.fdopen(fd, "w") as out:
                json.dump(data, out)
            os.replace(tmp, self.path)
        except OSError as e:
            LOG.warning("popular list not saved to %s: %s", self.path, e)
            pathlib.Path(tmp).unlink(missing_ok=True)

    def load(self) -> bool:
        """Read the file if there is one; True when a list was loaded."""
        if self.path is None or not self.path.is_file():
            return False
        try:
            data = json.loads(self.path.read_text())
            items = [(str(i), float(s)) for i, s in data["items"]]
            computed_at = int(data["computed_at_ms"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            LOG.warning("popular list %s unreadable: %s", self.path, e)
            return False
        self.items, self.computed_at_ms = items, computed_at
        return True


def embedding_scores(embeddings: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Dot product of every item embedding ``[N, D]`` with the user's query ``[D]``."""
    if embeddings.shape[1] != len(query):
        raise ValueError(
            f"user embedding has {len(query)} values, the item table {embeddings.shape[1]}"
        )
    return embeddings.astype(np.float64) @ query


class CircuitBreaker:
    """Opens after ``failures`` consecutive failures; while open (``cooldown_s``
    seconds) ``allow()`` is False, then one trial call is let through."""

    def __init__(
        self, failures: int, cooldown_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.failures = failures
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._count = 0
        self._open_until = float("-inf")
        self._lock = threading.Lock()

    def allow(self) -> bool:
        with self._lock:
            now = self._clock()
            if now < self._open_until:
                return False
            if self._count >= self.failures:  # half-open: one trial, re-arm the window
                self._open_until = now + self.cooldown_s
            return True

    def success(self) -> None:
        with self._lock:
            self._count = 0
            self._open_until = float("-inf")

    def failure(self) -> None:
        with self._lock:
            self._count += 1
            if self._count >= self.failures:
                self._open_until = self._clock() + self.cooldown_s

    @property
    def is_open(self) -> bool:
        return self._count >= self.failures
