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

Per request (``choose_new_items``): the user's content profile is the mean content
vector of their newest recent items; the new items are scored by cosine with it,
one matrix-vector product over at most ``max_items`` rows, no store read. Those
at or above ``min_cosine`` compete for reserved slots of the top-k (``place``),
with their cosine as the score and ``source`` ``new_item``: with no model score
they cannot compete inside the blend, so they get a share of the list instead,
like exploration does. With ``prior: none`` the best by cosine take the slots
(``best_new_items``). By default the slots go to the highest Thompson draws among
the ``candidates_per_slot`` × slots best by cosine (``explored_new_items``), each
item's Beta posterior lent by its content neighbours in the catalogue plus its
own engagements (``serving.new_item_prior``): relevance chooses who may be shown,
as retrieval does for catalogue exploration, and the draws choose who is. For
that the refresh also finds each new item's neighbours (once per item) and reads
the new items' own ``item_realtime`` rows.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TypeVar

import numpy as np

from beam_pipelines.state.config import StateConfig
from feature_repo import features as f
from feature_repo.store import FeatureStoreClient
from serving.catalog import ItemCatalog
from serving.config import NewItemsConfig
from serving.features import ItemSnapshot, LazyStore, read_item_rows
from serving.item_table import ItemTableReader
from serving.new_item_prior import NeighbourPrior, nearest_neighbours, posteriors
from serving.periodic import Periodic
from serving.postrank import thompson_pick

LOG = logging.getLogger(__name__)
NEW_ITEM = "new_item"
T = TypeVar("T")
Vector = tuple[np.ndarray, str]
"""A unit content vector (float32) and its encoder version."""
Posterior = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
"""(α, β) of the Beta posteriors of a snapshot's new items, by row."""


@dataclasses.dataclass(frozen=True)
class ContentSnapshot:
    """The new items (rows of ``vectors``, newest upload first) and the content
    vector of every known item (new or catalogue), all of encoder ``version``;
    ``prior``: what the new items' posteriors need, by row (None: not read, with
    ``prior: none``)."""

    item_ids: tuple[str, ...]
    vectors: np.ndarray
    known: Mapping[str, np.ndarray]
    version: str | None
    read_at_ms: int
    prior: NeighbourPrior | None = None

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


def best_rows(
    snapshot: ContentSnapshot,
    recent: Sequence[str],
    n: int,
    min_cosine: float,
    profile_items: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Rows of up to ``n`` new items closest to the user's profile, best first,
    cosine ≥ ``min_cosine``, none of ``recent``; and every row's cosine."""
    empty = np.zeros(0, np.int64), np.zeros(0, np.float32)
    if n <= 0 or not snapshot.item_ids:
        return empty
    profile = content_profile(snapshot, recent, profile_items)
    if profile is None:
        return empty
    cosine = snapshot.vectors @ profile.astype(np.float32)  # rows are unit vectors
    rows = np.flatnonzero(cosine >= min_cosine)
    seen = set(recent)
    enough = n + len(seen)  # the best n rows once the recent ones are dropped
    if len(rows) > enough:
        rows = rows[np.argpartition(-cosine[rows], enough - 1)[:enough]]
    rows = rows[np.lexsort((rows, -cosine[rows]))]  # ties: the newer upload first
    ids = snapshot.item_ids
    kept = [r for r in rows.tolist() if ids[r] not in seen][:n]
    return np.asarray(kept, np.int64), cosine


def best_new_items(
    snapshot: ContentSnapshot,
    recent: Sequence[str],
    n: int,
    min_cosine: float,
    profile_items: int,
) -> list[tuple[str, float]]:
    """Up to ``n`` ``(item_id, cosine)`` new items closest to the user's profile,
    best first, cosine ≥ ``min_cosine``, none of ``recent``."""
    rows, cosine = best_rows(snapshot, recent, n, min_cosine, profile_items)
    return [(snapshot.item_ids[r], float(cosine[r])) for r in rows.tolist()]


def explored_new_items(
    snapshot: ContentSnapshot,
    recent: Sequence[str],
    n: int,
    min_cosine: float,
    profile_items: int,
    pool: int,
    posterior: Posterior,
    rng: np.random.Generator,
) -> list[tuple[str, float]]:
    """Up to ``n`` ``(item_id, cosine)`` new items with the highest draws θ ~
    Beta(α, β) (``postrank.thompson_pick``), best draw first, among the ``pool``
    best by cosine (``best_rows``: ≥ ``min_cosine``, none of ``recent``).

    Relevance gates and bounds the choice; the draws spend the slots where the
    posterior (the neighbours' prior, then the item's own evidence) says engagement
    is likely or still uncertain. Only the pool's posteriors are computed.
    """
    rows, cosine = best_rows(snapshot, recent, max(pool, n), min_cosine, profile_items)
    if len(rows) == 0:
        return []
    alpha, beta = posterior(rows)
    picked = rows[thompson_pick(alpha, beta, n, rng)]
    return [(snapshot.item_ids[r], float(cosine[r])) for r in picked.tolist()]


def choose_new_items(
    snapshot: ContentSnapshot,
    recent: Sequence[str],
    n: int,
    config: NewItemsConfig,
    catalogue: ItemSnapshot,
    at_ms: int,
    state: StateConfig,
    rng: np.random.Generator,
) -> list[tuple[str, float]]:
    """The new items of a request's ``n`` reserved slots, by ``config.prior``:
    ``none``, the best by cosine; ``content_neighbours``, Thompson sampling on the
    neighbour-prior posteriors (``catalogue``: the version's item snapshot, whose
    rows the neighbours are; ``at_ms``: the request's time, epoch ms)."""
    if config.prior == "none":
        return best_new_items(snapshot, recent, n, config.min_cosine, config.profile_items)
    prior = snapshot.prior or NeighbourPrior.empty(len(snapshot.item_ids))

    def posterior(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return posteriors(prior, rows, catalogue, at_ms, state, config.prior_strength)

    pool = n * config.candidates_per_slot
    return explored_new_items(
        snapshot, recent, n, config.min_cosine, config.profile_items, pool, posterior, rng
    )


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
    store yet are read again on the next refresh.

    With the neighbour prior, a refresh also finds the neighbours of the new items
    it has not met before (one blocked product against the catalogue's vectors;
    all again only when those change) and reads every kept new item's
    ``item_realtime`` row, ``batch_size`` ids per read: their engagements change
    all the time."""

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
        # The neighbours' side: (version, catalogue rows, their stacked vectors),
        # stacked again after a catalogue read; and each new item's neighbours.
        self._catalogue: tuple[str | None, np.ndarray, np.ndarray] | None = None
        self._catalogue_stale = True
        self._neighbours: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._lock = threading.Lock()
        self._periodic = Periodic(self.refresh, config.refresh_s, "new-items")

    def refresh(self) -> bool:
        """Read what is new now; True on success (``last_error`` says why not)."""
        with self._lock:
            try:
                self._read()
                snapshot = self._snapshot()
            except Exception as e:  # a background thread must outlive any store error
                self.last_error = f"{type(e).__name__}: {e}"
                LOG.warning("new items not refreshed: %s", self.last_error)
                return False
            self.snapshot, self.last_error = snapshot, None
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
            self._catalogue_stale = True

    def _snapshot(self) -> ContentSnapshot:
        """The kept vectors of the newest new items' encoder version (cosines across
        encoders mean nothing), with their prior's inputs unless ``prior: none``
        (this reads the store)."""
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
        at_ms = int(self._clock() * 1000)
        prior = None if self.config.prior == "none" else self._prior(ids, vectors, version, at_ms)
        return ContentSnapshot(ids, vectors, known, version, at_ms, prior)

    def _prior(
        self, ids: tuple[str, ...], vectors: np.ndarray, version: str | None, at_ms: int
    ) -> NeighbourPrior:
        """The neighbours of ``ids`` (found for those met for the first time) and
        their ``item_realtime`` rows, read now."""
        rows, matrix = self._catalogue_side(version)
        missing = [j for j, item in enumerate(ids) if item not in self._neighbours]
        if missing:
            found, weights = nearest_neighbours(vectors[missing], matrix, self.config.neighbours)
            for j, near, weight in zip(missing, rows[found], weights, strict=True):
                self._neighbours[ids[j]] = (near, weight)
        for item in self._neighbours.keys() - set(ids):  # dropped from the kept items
            del self._neighbours[item]
        k = min(self.config.neighbours, len(rows))
        near = [self._neighbours[i] for i in ids]
        return NeighbourPrior(
            np.stack([r for r, _ in near]) if near else np.zeros((0, k), np.int64),
            np.stack([w for _, w in near]) if near else np.zeros((0, k), np.float32),
            read_item_rows(self._store, ids, self.config.batch_size, at_ms),
        )

    def _catalogue_side(self, version: str | None) -> tuple[np.ndarray, np.ndarray]:
        """The catalogue rows with a content vector of ``version`` and those vectors
        stacked, kept until the next catalogue read. When they change, every new
        item's neighbours are forgotten (found again against the new ones)."""
        kept = self._catalogue
        if kept is not None and not self._catalogue_stale and kept[0] == version:
            return kept[1], kept[2]
        index = self.catalog.index
        ids = sorted(
            (i for i, (_, v) in self._catalog_vectors.items() if v == version and i in index),
            key=index.__getitem__,
        )
        rows = np.fromiter((index[i] for i in ids), np.int64, len(ids))
        vectors = [self._catalog_vectors[i][0] for i in ids]
        matrix = np.stack(vectors) if vectors else np.zeros((0, 0), np.float32)
        if kept is None or kept[0] != version or not np.array_equal(kept[1], rows):
            self._neighbours.clear()
        self._catalogue, self._catalogue_stale = (version, rows, matrix), False
        return rows, matrix

    def start(self) -> None:
        """Run ``refresh`` every ``refresh_s`` seconds in a daemon thread."""
        self._periodic.start()

    def stop(self) -> None:
        self._periodic.stop()
        self._store.close()
