"""Items uploaded after the served model version, as candidates by content.

The exported models know only the catalogue of their version; an item uploaded
since has no model score and, until someone engages with it, no co-engagement.
The item pipeline (``rtp items``) has already encoded it: its ``item_content``
vector is in the online store and its id in the item table.

Off the request path, ``NewItemsCache`` re-reads every ``refresh_s`` seconds:
the item table files not read before (``serving.item_table``) give the ids, those
not in the version's catalogue are new, and one batched store read per
``batch_size`` ids gives their content vectors; the newest ``max_items`` are kept
as one matrix. The catalogue items' vectors (what a user's recent items are
about) are read the same way every ``catalog_refresh_s``.

Per request (``best_new_items``): the user's content profile is the mean content
vector of their newest recent items; the new items are scored by cosine with it,
one matrix-vector product over at most ``max_items`` rows, no store read. The
best ones above ``min_cosine`` take reserved slots of the top-k (``place``) with
their cosine as the score and ``source`` ``new_item``: with no model score they
cannot compete inside the blend, so they get a share of the list instead, like
exploration does.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TypeVar

import numpy as np

from feature_repo import features as f
from feature_repo.store import FeatureStoreClient
from serving.catalog import ItemCatalog
from serving.config import NewItemsConfig
from serving.features import LazyStore
from serving.item_table import ItemTableReader
from serving.periodic import Periodic

LOG = logging.getLogger(__name__)
NEW_ITEM = "new_item"
T = TypeVar("T")
Vector = tuple[np.ndarray, str]
"""A unit content vector (float32) and its encoder version."""


@dataclasses.dataclass(frozen=True)
class ContentSnapshot:
    """The new items (rows of ``vectors``, newest upload first) and the content
    vector of every known item (new or catalogue), all of encoder ``version``."""

    item_ids: tuple[str, ...]
    vectors: np.ndarray
    known: Mapping[str, np.ndarray]
    version: str | None
    read_at_ms: int

    @classmethod
    def empty(cls) -> ContentSnapshot:
        return cls((), np.zeros((0, 0), np.float32), {}, None, 0)


def content_profile(snapshot: ContentSnapshot, recent: Sequence[str], n: int) -> np.ndarray | None:
    """Unit mean of the content vectors of the newest ``n`` of ``recent`` (newest
    first) that have one; None when none has."""
    vectors = [v for v in (snapshot.known.get(i) for i in recent[:n]) if v is not None]
    if not vectors:
        return None
    mean = np.mean(vectors, axis=0, dtype=np.float64)
    norm = float(np.linalg.norm(mean))
    return mean / norm if norm > 0 else None


def best_new_items(
    snapshot: ContentSnapshot,
    recent: Sequence[str],
    n: int,
    min_cosine: float,
    profile_items: int,
) -> list[tuple[str, float]]:
    """Up to ``n`` ``(item_id, cosine)`` new items closest to the user's profile,
    best first, cosine ≥ ``min_cosine``, none of ``recent``."""
    if n <= 0 or not snapshot.item_ids:
        return []
    profile = content_profile(snapshot, recent, profile_items)
    if profile is None:
        return []
    cosine = snapshot.vectors @ profile.astype(np.float32)  # rows are unit vectors
    rows = np.flatnonzero(cosine >= min_cosine)
    seen = set(recent)
    enough = n + len(seen)  # the best n rows once the recent ones are dropped
    if len(rows) > enough:
        rows = rows[np.argpartition(-cosine[rows], enough - 1)[:enough]]
    rows = rows[np.lexsort((rows, -cosine[rows]))]  # ties: the newer upload first
    chosen = [(snapshot.item_ids[r], float(cosine[r])) for r in rows.tolist()]
    return [(item, score) for item, score in chosen if item not in seen][:n]


def new_slots(k: int, slots: int) -> int:
    """Slots of a top-k reserved for new items: ``slots``, at most half of k."""
    return max(min(slots, k // 2), 0)


def place(ranked: Sequence[T], new: Sequence[T], k: int) -> list[T]:
    """A top-k of ``ranked`` with ``new`` spread over it (slot j of n at
    ``j·k // (n + 1)``, as exploration spreads its slots); ``ranked`` keeps its
    order in the other slots and loses its tail."""
    total = min(k, len(ranked) + len(new))
    new = list(new)[:total]
    at = {j * total // (len(new) + 1): item for j, item in enumerate(new, start=1)}
    rest = iter(ranked)
    return [at[p] if p in at else next(rest) for p in range(total)]


def _unit(vector: Iterable[float]) -> np.ndarray | None:
    array = np.asarray(vector, dtype=np.float32)
    norm = float(np.linalg.norm(array)) if array.size else 0.0
    return array / norm if norm > 0 else None


def read_content(store: LazyStore, item_ids: Sequence[str], batch_size: int) -> dict[str, Vector]:
    """The ``item_content`` vectors (unit) and versions of those ``item_ids`` the
    store has, ``batch_size`` ids per read."""
    found: dict[str, Vector] = {}
    for start in range(0, len(item_ids), batch_size):
        rows = store.read(f.ITEM_CONTENT, list(item_ids[start : start + batch_size]))
        for item, row in rows.items():
            vector = _unit((row or {}).get(f.ITEM_CONTENT_EMBEDDING) or [])
            if vector is not None:
                found[item] = (vector, str(row.get(f.ITEM_CONTENT_VERSION) or ""))
    return found


class NewItemsCache:
    """The current ``ContentSnapshot`` of ``catalog``'s new items, refreshed every
    ``config.refresh_s`` by a daemon thread (as ``features.ItemFeatureCache`` is).
    A failed refresh keeps the previous snapshot; ids whose vector is not in the
    store yet are read again on the next refresh."""

    def __init__(
        self,
        catalog: ItemCatalog,
        store_factory: Callable[[], FeatureStoreClient],
        config: NewItemsConfig,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.catalog, self.config = catalog, config
        self.snapshot = ContentSnapshot.empty()
        self.last_error: str | None = None
        self._store = LazyStore(store_factory, retry_s=0.0)
        self._table = ItemTableReader(config.table_path)
        self._clock = clock
        self._pending: dict[str, int] = {}  # new ids without a vector yet: upload ms
        self._new: dict[str, tuple[int, Vector]] = {}
        self._catalog_vectors: dict[str, Vector] = {}
        self._catalog_read_at = float("-inf")
        self._lock = threading.Lock()
        self._periodic = Periodic(self.refresh, config.refresh_s, "new-items")

    def refresh(self) -> bool:
        """Read what is new now; True on success (``last_error`` says why not)."""
        with self._lock:
            try:
                self._read()
            except Exception as e:  # a background thread must outlive any store error
                self.last_error = f"{type(e).__name__}: {e}"
                LOG.warning("new items not refreshed: %s", self.last_error)
                return False
            self.snapshot, self.last_error = self._snapshot(), None
            return True

    def _read(self) -> None:
        config, now = self.config, self._clock()
        index = self.catalog.index
        for item, ms in self._table.read_new().items():
            if item not in index and item not in self._new:
                self._pending[item] = max(ms, self._pending.get(item, 0))
        pending = sorted(self._pending, key=lambda i: (-self._pending[i], i))
        for item in pending[config.max_items :]:  # older than anything kept
            del self._pending[item]
        found = read_content(self._store, pending[: config.max_items], config.batch_size)
        for item, vector in found.items():
            self._new[item] = (self._pending.pop(item), vector)
        newest = sorted(self._new, key=lambda i: (-self._new[i][0], i))
        for item in newest[config.max_items :]:
            del self._new[item]
        if now - self._catalog_read_at >= config.catalog_refresh_s:
            ids = self.catalog.item_ids.tolist()
            self._catalog_vectors = read_content(self._store, ids, config.batch_size)
            self._catalog_read_at = now

    def _snapshot(self) -> ContentSnapshot:
        """The kept vectors of the newest new items' encoder version (cosines across
        encoders mean nothing)."""
        newest = sorted(self._new, key=lambda i: (-self._new[i][0], i))
        versions = [self._new[i][1][1] for i in newest] or [
            v for _, v in self._catalog_vectors.values()
        ]
        version = versions[0] if versions else None
        ids = tuple(i for i in newest if self._new[i][1][1] == version)
        rows = [self._new[i][1][0] for i in ids]
        known = {i: v for i, (v, ver) in self._catalog_vectors.items() if ver == version}
        known.update(zip(ids, rows, strict=True))
        vectors = np.stack(rows) if rows else np.zeros((0, 0), np.float32)
        return ContentSnapshot(ids, vectors, known, version, int(self._clock() * 1000))

    def start(self) -> None:
        """Run ``refresh`` every ``refresh_s`` seconds in a daemon thread."""
        self._periodic.start()

    def stop(self) -> None:
        self._periodic.stop()
        self._store.close()
