"""Feature reads for serving: the user's row per request, every item's row in bulk.

User features are read from the online store on each request (one entity: the
freshness the pipeline works for). Item features are shared by all requests and
are re-read in the background every ``refresh_s`` seconds into an immutable
``ItemSnapshot``: reading hundreds of items through Feast per request would cost
tens of milliseconds. Model inputs take stored values as they are (training saw
them that way); the helpers here bring decayed sums forward to *now* for the
serving-only logic (exploration, popularity, staleness).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from beam_pipelines.state.config import StateConfig
from feature_repo import features as f
from feature_repo.store import FeatureStoreClient, StoreUnavailableError
from serving.catalog import ItemCatalog
from serving.periodic import Periodic

LOG = logging.getLogger(__name__)
ITEM_COLUMNS: tuple[str, ...] = tuple(f.ITEM_FEATURES)
_COLUMN = {name: i for i, name in enumerate(ITEM_COLUMNS)}
_PLAIN_SCALARS = frozenset(
    {"string_val", "bytes_val", "int32_val", "int64_val", "double_val", "float_val", "bool_val"}
)
_PLAIN_LISTS = frozenset({kind.replace("_val", "_list_val") for kind in _PLAIN_SCALARS})
_NUMERIC_KINDS = _PLAIN_SCALARS - {"string_val", "bytes_val"}


def now_ms() -> int:
    return int(time.time() * 1000)


class FastReader:
    """``FeatureStoreClient.read`` through the online store's ``online_read``.

    Same answer (values converted by Feast's own ``type_map``, an entity without an
    event time is absent, errors mapped to ``StoreUnavailableError`` by the client),
    without ``get_online_features``' per-call feature-reference parsing, registry
    lookups and response protos: ~0.07 ms instead of ~0.2 ms for one user on SQLite,
    and the GIL-bound part of a request shrinks by as much.
    """

    def __init__(self, client: FeatureStoreClient) -> None:
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value
        from feast.type_map import feast_value_type_to_python_type

        self._client = client
        for view in f.FEATURE_VIEWS:  # fails now if the views are not applied yet
            client.feature_view(view)
        self._key = lambda name, value: EntityKey(
            join_keys=[name], entity_values=[Value(string_val=value)]
        )
        self._feast_to_python = feast_value_type_to_python_type

    def _to_python(self, proto: Any) -> Any:
        """Feast's ``feast_value_type_to_python_type`` of a value, taken directly
        from the proto field for plain scalars and lists (a few times cheaper)."""
        kind = proto.WhichOneof("val")
        if kind in _PLAIN_SCALARS:
            return getattr(proto, kind)
        if kind in _PLAIN_LISTS:
            return list(getattr(proto, kind).val)
        return None if kind is None else self._feast_to_python(proto)

    def _online_read(self, view: str, ids: list[str]) -> list[tuple[Any, Any]]:
        """``(event time, {name: ValueProto})`` per id; ``(None, None)`` when absent
        (the redis store answers a missing entity with empty values at epoch 0)."""
        key, schema = f.FEATURE_VIEWS[view]
        keys = [self._key(key, i) for i in ids]
        rows = self._client.online_read(view, keys, list(schema))
        absent = (None, None)
        return [
            absent if values is None or stamp is None or stamp.timestamp() <= 0 else (stamp, values)
            for stamp, values in rows
        ]

    def read(self, view: str, entity_ids: Sequence[str]) -> dict[str, dict[str, Any] | None]:
        _, schema = f.FEATURE_VIEWS[view]
        ids = list(dict.fromkeys(entity_ids))
        out: dict[str, dict[str, Any] | None] = {}
        for entity, (_, values) in zip(ids, self._online_read(view, ids), strict=True):
            if values is None:
                out[entity] = None
            else:
                out[entity] = {
                    n: self._to_python(values[n]) if n in values else None for n in schema
                }
        return out

    def read_numbers(
        self, view: str, entity_ids: Sequence[str], names: Sequence[str]
    ) -> tuple[np.ndarray, np.ndarray]:
        """``read`` of numeric features as a matrix: ``(values [n, len(names)] float64,
        known [n] bool)``, a missing value 0 (an absent entity: a row of 0, not known).

        Each value is taken from its proto field directly, not through Feast's generic
        ``type_map`` (about a sixth of the cost): the item snapshot reads every item's
        features this way. A non-numeric value raises ``TypeError``.
        """
        ids = list(entity_ids)
        values = np.zeros((len(ids), len(names)))
        known = np.zeros(len(ids), dtype=bool)
        for i, (_, protos) in enumerate(self._online_read(view, ids)):
            if protos is None:
                continue
            known[i] = True
            for j, name in enumerate(names):
                proto = protos.get(name)
                kind = None if proto is None else proto.WhichOneof("val")
                if kind is None or kind == "null_val":
                    continue
                if kind not in _NUMERIC_KINDS:
                    raise TypeError(f"{view}.{name} is {kind}, not a number")
                values[i, j] = getattr(proto, kind)
        return values, known


def _fast_reader(client: FeatureStoreClient) -> FastReader | None:
    try:
        return FastReader(client)
    except Exception as e:  # the views are not applied yet
        LOG.warning("fast feature reads unavailable, using FeatureStoreClient.read: %s", e)
        return None


class LazyStore:
    """A ``FeatureStoreClient`` opened on first use; while the store cannot be
    opened, calls fail fast with ``StoreUnavailableError`` and an open is retried
    at most every ``retry_s`` seconds (opening Feast costs far more than a read)."""

    def __init__(
        self,
        factory: Callable[[], FeatureStoreClient],
        retry_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._factory = factory
        self.retry_s = retry_s
        self._clock = clock
        self._client: FeatureStoreClient | None = None
        self._fast: FastReader | None = None
        self._next_try = float("-inf")
        self._lock = threading.Lock()
        self.last_error: str | None = None

    def client(self) -> FeatureStoreClient:
        client = self._client
        if client is not None:
            return client
        with self._lock:
            if self._client is not None:
                return self._client
            if self._clock() < self._next_try:
                raise StoreUnavailableError(f"store not open (last error: {self.last_error})")
            try:
                client = self._factory().open()
            except Exception as e:  # Feast raises many kinds while the store is absent
                self._next_try = self._clock() + self.retry_s
                self.last_error = f"{type(e).__name__}: {e}"
                raise StoreUnavailableError(f"cannot open the store: {self.last_error}") from e
            self._fast = _fast_reader(client)
            self._client, self.last_error = client, None
            return client

    def read(self, view: str, entity_ids: list[str]) -> dict[str, dict[str, Any] | None]:
        client = self.client()
        if self._fast is not None:
            return self._fast.read(view, entity_ids)
        return client.read(view, entity_ids)

    def read_numbers(
        self, view: str, entity_ids: Sequence[str], names: Sequence[str]
    ) -> tuple[np.ndarray, np.ndarray]:
        """``FastReader.read_numbers``, or the same through ``read``."""
        client = self.client()
        if self._fast is not None:
            return self._fast.read_numbers(view, entity_ids, names)
        return read_numbers(client, view, entity_ids, names)

    def ping(self) -> None:
        self.client().ping()

    def close(self) -> None:
        with self._lock:
            client, self._client, self._fast = self._client, None, None
        if client is not None:
            client.close()


def read_user(store: LazyStore | FeatureStoreClient, user_id: str) -> dict[str, Any] | None:
    """The user's ``user_realtime`` row, None if the store has none.

    Raises ``StoreUnavailableError`` when the store is down or slow.
    """
    return store.read(f.USER_REALTIME, [user_id]).get(user_id)


def features_as_of(
    user: Mapping[str, Any], freeze_ms: int
) -> tuple[Mapping[str, Any], frozenset[str]]:
    """The user's row as if the stream had stopped at ``freeze_ms`` (epoch ms), and
    the items only the dropped events had (to leave out of the co-engagement window).

    The last-N events after ``freeze_ms`` are dropped, ``user_last_event_ms`` becomes
    the newest kept one (0 if none is kept: the user then reads as stale), and the
    embedding version is cleared so that ``model_set.align_user`` re-pools the
    embeddings from the kept events. Counts and decayed rates keep their streamed
    values: the row does not hold what it would take to rewind them.
    """
    if int(user.get(f.USER_LAST_EVENT_MS) or 0) <= freeze_ms:
        return user, frozenset()
    events = list(
        zip(
            user.get(f.USER_RECENT_ITEMS) or [],
            user.get(f.USER_RECENT_TS_MS) or [],
            user.get(f.USER_RECENT_REWARDS) or [],
            strict=False,
        )
    )
    kept = [e for e in events if e[1] <= freeze_ms]
    kept_items = {item for item, _, _ in kept}
    dropped = frozenset(item for item, ts, _ in events if ts > freeze_ms) - kept_items
    frozen = {
        **user,
        f.USER_RECENT_ITEMS: [item for item, _, _ in kept],
        f.USER_RECENT_TS_MS: [ts for _, ts, _ in kept],
        f.USER_RECENT_REWARDS: [reward for _, _, reward in kept],
        f.USER_LAST_EVENT_MS: max((ts for _, ts, _ in kept), default=0),
        f.USER_EMBEDDING_VERSION: None,
    }
    return frozen, dropped


class FrozenRows:
    """Users' rows as of a freeze time, kept from the first read after it.

    The store holds only a user's latest row, and ``features_as_of`` rewinds it only
    as far as the last-N events reach: once a user's newer events have pushed every
    event before the freeze out of them, the rewound row is empty (the user reads as
    stale). So the first rewound row of each ``(user, freeze_ms)``, the one with the
    most of the user's history (exact when it has no event after the freeze yet), is
    kept and served from then on. Per process, the ``capacity`` most recently used
    users (least recently used evicted); a restarted process keeps them anew.
    """

    def __init__(self, capacity: int = 20_000) -> None:
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0 users, got {capacity}")
        self.capacity = capacity
        self._rows: collections.OrderedDict[tuple[str, int], Mapping[str, Any]] = (
            collections.OrderedDict()
        )
        self._lock = threading.Lock()

    def as_of(
        self, user_id: str, user: Mapping[str, Any], freeze_ms: int
    ) -> tuple[Mapping[str, Any], frozenset[str]]:
        """``features_as_of`` of the first row read, and the items to hide from the
        co-engagement window, which is read as it is now."""
        rewound, hidden = features_as_of(user, freeze_ms)
        key = (user_id, freeze_ms)
        with self._lock:
            kept = self._rows.get(key)
            if kept is None:
                kept = self._rows[key] = rewound
                if len(self._rows) > self.capacity:
                    self._rows.popitem(last=False)
            else:
                self._rows.move_to_end(key)
        return kept, hidden - frozenset(kept.get(f.USER_RECENT_ITEMS) or ())


def feature_age_s(user: Mapping[str, Any], at_ms: int) -> float:
    """Seconds between the user's newest event and ``at_ms`` (never negative)."""
    return max(at_ms - int(user.get(f.USER_LAST_EVENT_MS) or 0), 0) / 1000.0


def decay_forward(
    values: np.ndarray, last_event_ms: np.ndarray, at_ms: int, half_life_s: float
) -> np.ndarray:
    """Decayed sums as of ``last_event_ms`` brought forward to ``at_ms``:
    ``value · 2^(−Δ/h)``, Δ in ms, h in seconds (the state's decay, ARCHITECTURE.md)."""
    delta_s = np.maximum(at_ms - last_event_ms, 0) / 1000.0
    return values * np.exp2(-delta_s / half_life_s)


@dataclasses.dataclass(frozen=True)
class ItemSnapshot:
    """``item_realtime`` values of every catalogue row as read at ``read_at_ms``.

    ``values[i, j]`` is feature ``ITEM_COLUMNS[j]`` of row ``i`` (0 where the store
    has no row, as a new item has in training); ``known[i]`` says which rows exist.
    """

    values: np.ndarray
    known: np.ndarray
    read_at_ms: int

    @classmethod
    def empty(cls, n_items: int) -> ItemSnapshot:
        return cls(np.zeros((n_items, len(ITEM_COLUMNS))), np.zeros(n_items, dtype=bool), 0)

    def column(self, name: str) -> np.ndarray:
        return self.values[:, _COLUMN[name]]

    def beta_now(
        self, rows: np.ndarray, at_ms: int, state: StateConfig
    ) -> tuple[np.ndarray, np.ndarray]:
        """(α, β) of the items' engagement posteriors brought forward to ``at_ms``.

        The stored α = prior + decayed engagements (long half-life); only the
        evidence part decays, so an item unseen for long returns to its prior.
        """
        last = self.column(f.ITEM_LAST_EVENT_MS)[rows]
        h = state.item_long_half_life_s
        alpha_evidence = np.maximum(
            self.column(f.ITEM_BETA_ALPHA)[rows] - state.beta_prior_alpha, 0
        )
        beta_evidence = np.maximum(self.column(f.ITEM_BETA_BETA)[rows] - state.beta_prior_beta, 0)
        return (
            state.beta_prior_alpha + decay_forward(alpha_evidence, last, at_ms, h),
            state.beta_prior_beta + decay_forward(beta_evidence, last, at_ms, h),
        )


def user_embedding_now(user: Mapping[str, Any]) -> np.ndarray | None:
    """``user_emb_short + user_emb_long`` (both pooled in the item space), or None
    when the user has neither. Pooled embeddings are ratios, so no decay applies."""
    total = None
    for name in (f.USER_EMB_SHORT, f.USER_EMB_LONG):
        vector = user.get(name)
        if vector is not None and len(vector):
            array = np.asarray(vector, dtype=np.float64)
            total = array if total is None else total + array
    if total is None or not np.any(total):
        return None
    return total


def read_items(store: LazyStore, catalog: ItemCatalog, batch_size: int, at_ms: int) -> ItemSnapshot:
    """Every catalogue item's features, ``batch_size`` ids per store read."""
    return read_item_rows(store, catalog.item_ids.tolist(), batch_size, at_ms)


def read_item_rows(
    store: LazyStore, ids: Sequence[str], batch_size: int, at_ms: int
) -> ItemSnapshot:
    """The ``item_realtime`` rows of ``ids`` (row ``i`` is ``ids[i]``), ``batch_size``
    ids per store read: the catalogue's, or the new items' (``serving.new_items``)."""
    ids = list(ids)
    values = np.zeros((len(ids), len(ITEM_COLUMNS)))
    known = np.zeros(len(ids), dtype=bool)
    for start in range(0, len(ids), batch_size):
        end = start + batch_size
        values[start:end], known[start:end] = store.read_numbers(
            f.ITEM_REALTIME, ids[start:end], ITEM_COLUMNS
        )
    return ItemSnapshot(values, known, at_ms)


def read_numbers(
    store: LazyStore | FeatureStoreClient,
    view: str,
    entity_ids: Sequence[str],
    names: Sequence[str],
) -> tuple[np.ndarray, np.ndarray]:
    """``FastReader.read_numbers``'s answer from ``store.read`` (any store)."""
    rows = store.read(view, list(entity_ids))
    values = np.zeros((len(entity_ids), len(names)))
    known = np.zeros(len(entity_ids), dtype=bool)
    for i, entity in enumerate(entity_ids):
        row = rows.get(entity)
        if row is not None:
            values[i] = [float(row[n] or 0.0) for n in names]
            known[i] = True
    return values, known


class ItemFeatureCache:
    """The current ``ItemSnapshot``, re-read every ``refresh_s`` by a daemon thread.

    ``store_factory`` makes a client of its own (the thread never shares the
    request path's connection). ``on_refresh`` runs after each successful read; a
    failed read keeps the previous snapshot and is retried on the next tick.
    """

    def __init__(
        self,
        catalog: ItemCatalog,
        store_factory: Callable[[], FeatureStoreClient],
        refresh_s: float,
        batch_size: int,
        on_refresh: Callable[[ItemSnapshot], None] | None = None,
    ) -> None:
        self.catalog = catalog
        self.refresh_s = refresh_s
        self.batch_size = batch_size
        self.snapshot = ItemSnapshot.empty(len(catalog))
        self.last_error: str | None = None
        self._store = LazyStore(store_factory, retry_s=0.0)
        self._on_refresh = on_refresh
        self._lock = threading.Lock()
        self._periodic = Periodic(self.refresh, refresh_s, "item-features")

    def refresh(self) -> bool:
        """Read every item now; True on success (``last_error`` says why not)."""
        with self._lock:
            try:
                snapshot = read_items(self._store, self.catalog, self.batch_size, now_ms())
            except Exception as e:  # a background thread must outlive any store error
                self.last_error = f"{type(e).__name__}: {e}"
                LOG.warning("item features not refreshed: %s", self.last_error)
                return False
            self.snapshot, self.last_error = snapshot, None
            if self._on_refresh is not None:
                self._on_refresh(snapshot)
            return True

    def start(self) -> None:
        """Run ``refresh`` every ``refresh_s`` seconds in a daemon thread."""
        self._periodic.start()

    def stop(self) -> None:
        self._periodic.stop()
        self._store.close()
