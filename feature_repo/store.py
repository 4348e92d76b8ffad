"""Typed client of the Feast feature store: one config per online backend, a
lifecycle (``open``/``close`` or ``with``), row writes, entity reads and a ping.

The backend is chosen by the config's ``type`` (``sqlite``, ``redis``, ``bigtable``):
our Feast online store class of that type (``feature_repo.online_stores``), named
by its path in the Feast ``RepoConfig``. Feast and the backend client libraries are
imported lazily, so
validating a config needs neither. Timestamps: ``features.EVENT_TIMESTAMP`` is epoch
milliseconds (int) or a timezone-aware ``datetime``; timeouts are in seconds.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
from collections.abc import Coroutine, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from feature_repo import features as f

if TYPE_CHECKING:
    from feast import FeatureStore, RepoConfig


# The embedded default's one home, shared by ``rtp stream``, ``rtp backfill --online``
# and ``rtp serve`` (relative to where they run): the SQLite online store, with
# the Feast registry and the offline history beside it.
DEFAULT_STORE_DIR = "data"
DEFAULT_SQLITE_PATH = f"{DEFAULT_STORE_DIR}/online.db"


def sqlite_settings(path: str | os.PathLike[str] = DEFAULT_SQLITE_PATH) -> dict[str, Any]:
    """Settings of the embedded SQLite store at ``path``, its registry (``registry.db``)
    and offline history (``offline/``) in the same directory; absolute paths, so a
    job's workers and a service started elsewhere find the same files."""
    db = Path(path).resolve()
    return {
        "type": "sqlite",
        "path": str(db),
        "registry_path": str(db.parent / "registry.db"),
        "offline_dir": str(db.parent / "offline"),
    }


class StoreUnavailableError(RuntimeError):
    """The online store could not be reached (or did not answer in time)."""


class _StoreConfigBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    feast_project: str = Field("rtp", pattern=r"^[A-Za-z0-9][A-Za-z0-9_]*$")
    """Feast project name: namespaces tables and keys, so several deployments can
    share one Redis or Bigtable instance."""

    registry_path: str = f"{DEFAULT_STORE_DIR}/registry.db"
    """Feast file registry (local path or ``gs://`` URI); created on first open."""

    offline_dir: str = f"{DEFAULT_STORE_DIR}/offline"
    """Root of the offline Parquet history, laid out as in ``feature_repo.definitions``."""

    apply_on_open: bool = True
    """Apply the definitions to the registry and online store in ``open()`` (idempotent).
    Turn off for readers whose credentials cannot write the registry."""

    timeout_s: float = Field(5.0, gt=0)
    """Bound in seconds on one store call; an unreachable store fails after about this."""


class SqliteStoreConfig(_StoreConfigBase):
    """Embedded default: a local SQLite file, nothing to run."""

    type: Literal["sqlite"] = "sqlite"
    """Backend selector."""

    path: str = DEFAULT_SQLITE_PATH
    """SQLite database file of the online store; parent directories are created."""


class RedisStoreConfig(_StoreConfigBase):
    """Redis or Memorystore through Feast's redis online store (redis-py)."""

    type: Literal["redis"] = "redis"
    """Backend selector."""

    connection_string: str = "127.0.0.1:6379"
    """Feast format ``host:port[,key=value...]``, e.g. ``redis:6379,db=0,ssl=true``.
    ``socket_timeout``/``socket_connect_timeout`` default to ``timeout_s`` and
    ``retry`` to ``null`` (no redis-py retries), unless given here."""

    key_ttl_s: int | None = Field(None, gt=0)
    """Optional expiry in seconds of an entity's hash after its last write."""


class BigtableStoreConfig(_StoreConfigBase):
    """Cloud Bigtable (or its emulator) through Feast's bigtable online store."""

    type: Literal["bigtable"] = "bigtable"
    """Backend selector."""

    project: str
    """GCP project of the Bigtable instance (any string against the emulator)."""

    instance: str
    """Bigtable instance id; tables ``<feast_project>.<entity>`` are created in it."""

    emulator_host: str | None = None
    """``host:port`` of a ``cbtemulator``, given to the client as
    ``BIGTABLE_EMULATOR_HOST`` while it is created (the variable is restored after)."""


StoreConfig = Annotated[
    SqliteStoreConfig | RedisStoreConfig | BigtableStoreConfig,
    Field(discriminator="type"),
]
_STORE_CONFIG: TypeAdapter[StoreConfig] = TypeAdapter(StoreConfig)


def load_store_config(
    source: str | os.PathLike[str] | Mapping[str, Any],
) -> StoreConfig:
    """Validated store config from a mapping or a YAML file (keys as in the models);
    a file as ``read_store_settings`` reads it."""
    if isinstance(source, Mapping):
        return _STORE_CONFIG.validate_python(dict(source))
    return _STORE_CONFIG.validate_python(read_store_settings(source))


def read_store_settings(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The settings of a store YAML file (``read_yaml_mapping``)."""
    return read_yaml_mapping(path, "a mapping of store settings")


def read_yaml_mapping(path: str | os.PathLike[str], expected: str) -> dict[str, Any]:
    """A YAML file holding one mapping (store, serving or experiments settings): a
    local path or any Beam filesystem URI (``gs://…``, read on the job's workers
    too). ``${VAR}`` is replaced from the environment (as Feast does), so a
    deployment can keep hosts and instance names out of the file. ``expected``
    names the mapping in the error raised when the file holds something else."""
    path = str(path)
    if _is_local(path):
        text = Path(path).read_text()
    else:
        from apache_beam.io.filesystems import FileSystems

        with FileSystems.open(path) as handle:
            text = handle.read().decode("utf-8")
    data = yaml.safe_load(os.path.expandvars(text))
    if not isinstance(data, Mapping):
        raise TypeError(f"{path}: expected {expected}, got {data!r}")
    return dict(data)


@functools.cache
def _value_types() -> dict[str, Any]:
    """Feast's ValueType per schema kind (Feast imported on first use)."""
    from feast.value_type import ValueType

    return {
        f.FLOAT: ValueType.FLOAT,
        f.INT: ValueType.INT64,
        f.STRING: ValueType.STRING,
        f.FLOAT_LIST: ValueType.FLOAT_LIST,
        f.INT_LIST: ValueType.INT64_LIST,
        f.STRING_LIST: ValueType.STRING_LIST,
        f.BYTES: ValueType.BYTES,
    }


def _is_local(path: str) -> bool:
    return "://" not in path


def _local_file(path: str) -> str:
    """Absolute path with its parent directory created (Feast creates only one level)."""
    absolute = Path(path).resolve()
    absolute.parent.mkdir(parents=True, exist_ok=True)
    return str(absolute)


# ---------------------------------------------------------------------------
# Backends: our Feast online stores (``feature_repo.online_stores``), one per type.
# ---------------------------------------------------------------------------


def online_store_settings(config: StoreConfig) -> dict[str, Any]:
    """Feast ``online_store`` section of ``config``: our store class for its type
    (``online_stores.ONLINE_STORE_TYPES``) with its settings."""
    from feature_repo.online_stores import ONLINE_STORE_TYPES

    store: dict[str, Any] = {"type": ONLINE_STORE_TYPES[config.type], "timeout_s": config.timeout_s}
    if isinstance(config, SqliteStoreConfig):
        store["path"] = _local_file(config.path)
    elif isinstance(config, RedisStoreConfig):
        # Feast's Redis store skips a write whose event time is not strictly newer.
        # Rows carry the entity's newest event time, so an older event applied later
        # (within the allowed lateness) repeats it and its update would be lost.
        # The writer already keeps each entity's newest row per batch, in order:
        # last write wins, as on SQLite and Bigtable, and one round trip instead of two.
        store.update(connection_string=config.connection_string, skip_dedup=True)
        if config.key_ttl_s:
            store["key_ttl_seconds"] = config.key_ttl_s
    else:
        store.update(
            project_id=config.project,
            instance=config.instance,
            emulator_host=config.emulator_host,
        )
    return store


def _online_store_class(config: StoreConfig) -> Any:
    """Our Feast online store class of ``config.type`` (imports Feast)."""
    from feature_repo.online_stores import ONLINE_STORE_TYPES

    module, name = ONLINE_STORE_TYPES[config.type].rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def _finish(close: Coroutine[Any, Any, None]) -> None:
    """Run Feast's async close hook to its end. Our stores' hooks never wait on
    I/O, so one step finishes them, inside a running event loop or not."""
    try:
        close.send(None)
    except StopIteration:
        return
    close.close()
    raise RuntimeError("an online store's close() waited on I/O; it must not")


# ---------------------------------------------------------------------------
# Rows: validation and conversion at the edge.
# ---------------------------------------------------------------------------


def _view_schema(view: str) -> tuple[str, dict[str, str]]:
    if view not in f.FEATURE_VIEWS:
        raise ValueError(f"unknown feature view {view!r}; known: {sorted(f.FEATURE_VIEWS)}")
    return f.FEATURE_VIEWS[view]


def _check_columns(view: str, row: Mapping[str, Any], expected: set[str]) -> None:
    if row.keys() == expected:
        return
    missing, unknown = sorted(expected - row.keys()), sorted(row.keys() - expected)
    if missing:
        raise ValueError(f"{view} row is missing column {missing[0]!r} (missing: {missing})")
    if unknown:
        raise ValueError(f"{view} row has unknown column {unknown[0]!r} (unknown: {unknown})")


def _check_value(view: str, column: str, kind: str, value: Any) -> None:
    if value is None:
        raise ValueError(f"{view} column {column!r} is None; every feature needs a value")
    is_list = isinstance(value, (list, tuple))
    if is_list != kind.endswith("_list"):
        raise ValueError(f"{view} column {column!r} is a {kind}, got {value!r:.80}")


def _to_utc(value: Any) -> datetime:
    """Event time from epoch milliseconds (int) or an aware datetime, as UTC."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"{f.EVENT_TIMESTAMP} {value!r} has no timezone; use UTC")
        return value.astimezone(UTC)
    if isinstance(value, int) and not isinstance(value, bool):
        return datetime.fromtimestamp(value / 1000, tz=UTC)
    raise ValueError(f"{f.EVENT_TIMESTAMP} must be epoch ms (int) or datetime, got {value!r}")


def _columns(view: str, rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """Validated column lists, keeping only the newest row of each entity."""
    key, schema = _view_schema(view)
    expected = {key, f.EVENT_TIMESTAMP, *schema}
    newest: dict[str, tuple[datetime, Mapping[str, Any]]] = {}
    for row in rows:
        _check_columns(view, row, expected)
        for column, kind in schema.items():
            _check_value(view, column, kind, row[column])
        ts = _to_utc(row[f.EVENT_TIMESTAMP])
        entity = row[key]
        if not isinstance(entity, str) or not entity:
            raise ValueError(f"{view} {key} must be a non-empty string, got {entity!r}")
        if entity not in newest or newest[entity][0] <= ts:
            newest[entity] = (ts, row)
    data: dict[str, list[Any]] = {key: list(newest), f.EVENT_TIMESTAMP: []}
    data.update({column: [] for column in schema})
    for ts, row in newest.values():
        data[f.EVENT_TIMESTAMP].append(ts)
        for column in schema:
            data[column].append(row[column])
    return data


class FeatureStoreClient:
    """Online feature reads and writes for one store config.

    ``write_rows`` takes rows of ``features.FEATURE_VIEWS[view]`` (join key, every
    feature, ``EVENT_TIMESTAMP``); ``read`` returns features by entity id. Float
    features are stored as float32, so values come back rounded to float32.

    Writes and ``online_read`` go through an instance of our Feast online store
    (``feature_repo.online_stores``) that the client owns; ``read``, the
    definitions and historical retrieval through Feast's ``FeatureStore``.
    """

    def __init__(self, config: StoreConfig | Mapping[str, Any]) -> None:
        if isinstance(config, Mapping):
            config = load_store_config(config)
        if not isinstance(config, _StoreConfigBase):
            raise TypeError(f"config must be a StoreConfig or a mapping, got {config!r}")
        self.config: StoreConfig = config
        self._store: FeatureStore | None = None
        self._online: Any = None
        self._views: dict[str, Any] = {}
        self._ping_view: Any = None

    @property
    def store(self) -> FeatureStore:
        """The open Feast ``FeatureStore`` (e.g. for historical retrieval)."""
        if self._store is None:
            raise RuntimeError("FeatureStoreClient is not open; call open() or use `with`")
        return self._store

    def open(self) -> Self:
        """Connect, check reachability and apply the definitions (idempotent)."""
        if self._store is not None:
            return self
        from feast import FeatureStore

        try:
            with self.unavailable_as("open"):
                self._store = FeatureStore(config=self._repo_config())
                self._online = _online_store_class(self.config)()
            self.ping()
            if self.config.apply_on_open:
                with self.unavailable_as("apply"):
                    self._store.apply(self._definitions())
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Release the Feast store and its connections; the client can be reopened.

        Feast's SQLite and Redis stores have no synchronous close: their connections
        go with the store objects dropped here."""
        store, self._store = self._store, None
        online, self._online = self._online, None
        self._views.clear()
        for closing in (online, store):
            if closing is not None:
                with contextlib.suppress(Exception):
                    _finish(closing.close())

    def __enter__(self) -> Self:
        return self.open()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def ping(self) -> None:
        """Round trip to the online store; raises ``StoreUnavailableError`` if down."""
        store = self.store
        if self._ping_view is None:  # from the definitions: the registry may have none yet
            views = self._definitions()
            self._ping_view = next(v for v in views if v.name == f.USER_REALTIME)
        with self.unavailable_as("ping"):
            self._online.ping(store.config, self._ping_view)

    def write_rows(self, view: str, rows: Sequence[Mapping[str, Any]]) -> int:
        """Write feature rows online; returns the number of entities written.

        Every row must hold exactly the view's join key, its features and
        ``EVENT_TIMESTAMP`` (epoch ms int or aware datetime), else ``ValueError``
        naming the column. Of several rows of one entity only the newest is kept.
        """
        data = _columns(view, rows)
        if not data[f.EVENT_TIMESTAMP]:
            return 0
        batch = _proto_rows(view, data)
        with self.unavailable_as(f"write {view}"):
            feature_view = self.feature_view(view)
            self._online.online_write_batch(self.store.config, feature_view, batch, None)
        return len(batch)

    def feature_view(self, view: str) -> Any:
        """Feast's ``FeatureView`` named ``view``, as applied in the registry."""
        cached = self._views.get(view)
        if cached is None:
            cached = self._views[view] = self.store.get_feature_view(view)
        return cached

    def online_read(
        self, view: str, keys: Sequence[Any], names: Sequence[str]
    ) -> list[tuple[datetime | None, dict[str, Any] | None]]:
        """The online store's raw answer for Feast ``EntityKey`` protos ``keys``:
        ``(event time, {name: ValueProto})`` per key, ``(None, None)`` if absent
        (some stores answer a missing key with empty values at epoch 0 instead)."""
        with self.unavailable_as(f"read {view}"):
            feature_view = self.feature_view(view)
            return self._online.online_read(self.store.config, feature_view, keys, list(names))

    def read(self, view: str, entity_ids: Sequence[str]) -> dict[str, dict[str, Any] | None]:
        """Latest features of each entity id (``None`` when the store has none).

        List features come back as Python lists, floats at float32 precision.
        """
        key, _ = _view_schema(view)
        ids = list(dict.fromkeys(entity_ids))
        if not ids:
            return {}
        with self.unavailable_as(f"read {view}"):
            response = self.store.get_online_features(
                features=f.feature_refs(view), entity_rows=[{key: i} for i in ids]
            )
        return _response_by_entity(response, view, ids)

    def read_bytes(self, view: str, feature: str, entity_ids: Sequence[str]) -> dict[str, bytes]:
        """One bytes feature of each entity that has it (absent ids are left out).

        Through the online store's ``online_read``, as ``write_rows`` writes: the
        streaming job reads a key's state at its first event, and
        ``get_online_features`` costs several milliseconds a call.
        """
        _, schema = _view_schema(view)
        if schema.get(feature) != f.BYTES:
            raise ValueError(f"{view} has no bytes feature {feature!r}")
        found = {}
        for entity, (_, values) in self._online_read(view, entity_ids, [feature]).items():
            value = (values or {}).get(feature)
            if value is not None and value.WhichOneof("val") == "bytes_val":
                found[entity] = value.bytes_val
        return found

    def read_event_times(self, view: str, entity_ids: Sequence[str]) -> dict[str, int]:
        """Event time (epoch ms) of each stored entity's row; absent ids are left out."""
        _, schema = _view_schema(view)
        rows = self._online_read(view, entity_ids, list(schema)[:1])
        return {
            entity: int(ts.timestamp() * 1000)
            for entity, (ts, values) in rows.items()
            if ts is not None and values
        }

    def _online_read(self, view: str, entity_ids: Sequence[str], features: list[str]) -> dict:
        """``entity → (event time, {feature: Value})`` from the provider."""
        key, _ = _view_schema(view)
        ids = list(dict.fromkeys(entity_ids))
        if not ids:
            return {}
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        keys = [EntityKey(join_keys=[key], entity_values=[Value(string_val=i)]) for i in ids]
        rows = self.online_read(view, keys, features)
        return dict(zip(ids, rows, strict=True))

    def _repo_config(self) -> RepoConfig:
        from feast import RepoConfig

        registry = self.config.registry_path
        return RepoConfig(
            project=self.config.feast_project,
            provider="local",
            registry=_local_file(registry) if _is_local(registry) else registry,
            online_store=online_store_settings(self.config),
            offline_store={"type": "file"},
            entity_key_serialization_version=3,
        )

    def _definitions(self) -> list[Any]:
        from feature_repo.definitions import build_definitions

        return build_definitions(self.config.offline_dir)

    @contextlib.contextmanager
    def unavailable_as(self, action: str) -> Iterator[None]:
        """Raise the online store's "unreachable" errors inside the block as
        ``StoreUnavailableError`` naming the backend and ``action``."""
        try:
            yield
        except _online_store_class(self.config).unavailable_errors() as e:
            raise StoreUnavailableError(
                f"{self.config.type} online store unavailable during {action}: {e}"
            ) from e


def _proto_rows(
    view: str, data: dict[str, list[Any]]
) -> list[tuple[Any, dict, datetime, datetime]]:
    """Rows as Feast's provider writes them: (entity key, {feature: Value}, event ts, created).

    ``write_to_online_store`` would get here through a DataFrame, Arrow and back,
    ~50 ms a call whatever its size; a streaming job writes small batches often.
    """
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value
    from feast.type_map import python_values_to_proto_values

    key, schema = _view_schema(view)
    columns = {
        name: python_values_to_proto_values(data[name], _value_types()[kind])
        for name, kind in schema.items()
    }
    created = datetime.now(UTC)
    return [
        (
            EntityKey(join_keys=[key], entity_values=[Value(string_val=entity)]),
            {name: values[i] for name, values in columns.items()},
            data[f.EVENT_TIMESTAMP][i],
            created,
        )
        for i, entity in enumerate(data[key])
    ]


def _response_by_entity(response: Any, view: str, ids: list[str]) -> dict[str, Any]:
    """Per-entity feature dicts in schema order; ``None`` where nothing was stored."""
    key, schema = f.FEATURE_VIEWS[view]
    columns = response.to_dict()
    # An entity is stored iff its row has an event time. Statuses do not tell: the
    # redis store reports a missing entity as PRESENT with null values.
    found = [False] * len(ids)
    names = response.proto.metadata.feature_names.val
    for name, vector in zip(names, response.proto.results, strict=True):
        if name != key:
            stamps = vector.event_timestamps
            found = [seen or ts.seconds > 0 for seen, ts in zip(found, stamps, strict=True)]
    return {
        entity: {name: columns[name][i] for name in schema} if found[i] else None
        for i, entity in enumerate(ids)
    }
