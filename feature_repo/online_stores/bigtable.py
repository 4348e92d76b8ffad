"""Cloud Bigtable (or emulator) online store: Feast's table layout, read and
written through google-cloud-bigtable's data client with bounded calls.

Feast's own reads and writes have no timeouts (the client default is 600 s per
read or write, retrying while the server is down) and use the legacy
``Table.mutate_rows``, whose per-row statuses Feast ignores, so a failed write
would pass silently. This store keeps Feast's layout (one table per entity set
named ``<project>.<entities>``, row key ``<entity id>#<view>``, a ``features``
column family holding each value proto and ``event_ts``) and Feast's ``update``
(table creation); reads and writes go through the data client instead, each call
bounded by ``timeout_s``, and a failed mutation raises ``BigtableWriteError``.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any, Literal

from feast import Entity, FeatureView, RepoConfig
from feast.infra.online_stores.bigtable import BigtableOnlineStore, BigtableOnlineStoreConfig
from feast.infra.online_stores.helpers import compute_entity_id
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from feast.utils import make_tzaware
from pydantic import Field, StrictStr

from feature_repo.online_stores.probe import PING_KEY

# Bigtable limits table names to 50 characters; Feast hashes longer parts, which
# this store does not reproduce (it refuses such names instead).
_MAX_TABLE_NAME = 50
_MAX_ENTITIES_PART = 24
_EVENT_TS = b"event_ts"
# A SetCell timestamp of -1 lets the server stamp the cell, as Feast's writes do.
_SERVER_TIME = -1

Row = tuple[EntityKey, dict[str, Value], datetime, datetime | None]


class BigtableWriteError(RuntimeError):
    """Bigtable rejected some mutations of a batch (Feast would drop them silently)."""


class RtpBigtableOnlineStoreConfig(BigtableOnlineStoreConfig):
    """Feast's Bigtable config plus call bounds and the emulator address."""

    type: Literal["feature_repo.online_stores.bigtable.RtpBigtableOnlineStore"] = (  # type: ignore[assignment]
        "feature_repo.online_stores.bigtable.RtpBigtableOnlineStore"
    )
    """Online store type selector (this class's path)."""

    timeout_s: float = Field(5.0, gt=0)
    """Bound in seconds on one read or write (all its attempts)."""

    emulator_host: StrictStr | None = None
    """``host:port`` of a ``cbtemulator``, given to the clients as
    ``BIGTABLE_EMULATOR_HOST`` while they are created (the variable is restored after)."""


@contextlib.contextmanager
def _environ(name: str, value: str | None) -> Iterator[None]:
    """Set the environment variable ``name`` to ``value`` (if any) inside the block."""
    if value is None:
        yield
        return
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            del os.environ[name]
        else:
            os.environ[name] = previous


def table_name(config: RepoConfig, view: FeatureView) -> str:
    """Feast's Bigtable table of ``view``: ``<project>.<sorted entities joined by ->``."""
    entities = "-".join(sorted(view.entities))
    name = f"{config.project}.{entities}"
    if len(entities) > _MAX_ENTITIES_PART or len(name) > _MAX_TABLE_NAME:
        raise ValueError(f"bigtable table name {name!r} is too long; shorten the project name")
    return name


def row_key(config: RepoConfig, view: FeatureView, key: EntityKey) -> bytes:
    """Feast's row key: ``<entity id>#<view name>``."""
    entity = compute_entity_id(key, config.entity_key_serialization_version)
    return f"{entity}#{view.name}".encode()


class RtpBigtableOnlineStore(BigtableOnlineStore):
    data_client: Any = None
    """google-cloud-bigtable ``BigtableDataClient``, created on first use."""

    def data_table(self, config: RepoConfig, view: FeatureView) -> Any:
        """The data client's table of ``view``, every call bounded by ``timeout_s``."""
        online = config.online_store
        if self.data_client is None:
            from google.cloud.bigtable.data import BigtableDataClient

            # The client reads the variable once, in its constructor.
            with _environ("BIGTABLE_EMULATOR_HOST", online.emulator_host):
                self.data_client = BigtableDataClient(project=online.project_id)
        bound = online.timeout_s
        return self.data_client.get_table(
            online.instance,
            table_name(config, view),
            default_read_rows_operation_timeout=bound,
            default_read_rows_attempt_timeout=bound,
            default_mutate_rows_operation_timeout=bound,
            default_mutate_rows_attempt_timeout=bound,
            default_operation_timeout=bound,
            default_attempt_timeout=bound,
        )

    def online_write_batch(
        self,
        config: RepoConfig,
        table: FeatureView,
        data: list[Row],
        progress: Callable[[int], Any] | None,
    ) -> None:
        from google.cloud.bigtable.data import RowMutationEntry, SetCell
        from google.cloud.bigtable.data.exceptions import MutationsExceptionGroup

        family = self.feature_column_family
        entries = []
        for key, values, event_ts, _ in data:
            cells = [
                SetCell(family, name.encode(), value.SerializeToString(), _SERVER_TIME)
                for name, value in values.items()
            ]
            stamp = make_tzaware(event_ts).isoformat().encode()
            cells.append(SetCell(family, _EVENT_TS, stamp, _SERVER_TIME))
            entries.append(RowMutationEntry(row_key(config, table, key), cells))
        if not entries:
            return
        try:
            self.data_table(config, table).bulk_mutate_rows(entries)
        except MutationsExceptionGroup as e:
            raise BigtableWriteError(f"bigtable write failed: {e}") from e
        if progress:
            progress(len(entries))

    def online_read(
        self,
        config: RepoConfig,
        table: FeatureView,
        entity_keys: list[EntityKey],
        requested_features: list[str] | None = None,
    ) -> list[tuple[datetime | None, dict[str, Value] | None]]:
        from google.cloud.bigtable.data import ReadRowsQuery, row_filters

        keys = [row_key(config, table, key) for key in entity_keys]
        latest: Any = row_filters.CellsColumnLimitFilter(1)
        if requested_features:
            names = "|".join([*requested_features, _EVENT_TS.decode()])
            wanted = row_filters.ColumnQualifierRegexFilter(f"^({names})$".encode())
            latest = row_filters.RowFilterChain(filters=[wanted, latest])
        query = ReadRowsQuery(row_keys=keys, row_filter=latest)
        rows = {row.row_key: row for row in self.data_table(config, table).read_rows(query)}
        return [_parse_row(rows.get(key)) for key in keys]

    def update(
        self,
        config: RepoConfig,
        tables_to_delete: Sequence[FeatureView],
        tables_to_keep: Sequence[FeatureView],
        entities_to_delete: Sequence[Entity],
        entities_to_keep: Sequence[Entity],
        partial: bool,
    ) -> None:
        for view in tables_to_keep:
            table_name(config, view)  # fail before creating a table we could not use
        # Feast's admin client is created inside and reads the variable then.
        with _environ("BIGTABLE_EMULATOR_HOST", config.online_store.emulator_host):
            super().update(
                config,
                tables_to_delete,
                tables_to_keep,
                entities_to_delete,
                entities_to_keep,
                partial,
            )

    def ping(self, config: RepoConfig, view: FeatureView) -> None:
        """Read a row no entity has from ``view``'s table; a missing table still
        counts as an answer. Raises the client's errors when the server is down."""
        emulator = config.online_store.emulator_host
        if emulator:
            # The emulator answers instantly; a refused port should not cost
            # timeout_s of gRPC retries.
            host, port = emulator.rsplit(":", 1)
            socket.create_connection((host, int(port)), config.online_store.timeout_s).close()
        from google.api_core.exceptions import NotFound

        with contextlib.suppress(NotFound):  # the server answered: table not applied
            self.online_read(config, view, [PING_KEY], [])

    async def close(self) -> None:
        """Feast's close hook (``FeatureStore.close``): release the data client."""
        client, self.data_client = self.data_client, None
        if client is not None:
            client.close()

    @staticmethod
    def unavailable_errors() -> tuple[type[BaseException], ...]:
        """Exceptions meaning "store unreachable or too slow"."""
        from google.api_core import exceptions as api
        from google.cloud.bigtable.data import exceptions as data

        return (
            api.ServiceUnavailable,
            api.DeadlineExceeded,
            api.RetryError,
            data.MutationsExceptionGroup,
            data.RetryExceptionGroup,
            BigtableWriteError,
            OSError,
        )


def _parse_row(row: Any) -> tuple[datetime | None, dict[str, Value] | None]:
    """``(event time, {feature: Value})`` of a row, ``(None, None)`` when absent."""
    if row is None:
        return None, None
    event_ts = None
    values: dict[str, Value] = {}
    for cell in row.cells:
        if cell.qualifier == _EVENT_TS:
            event_ts = datetime.fromisoformat(cell.value.decode())
        else:
            values[cell.qualifier.decode()] = Value.FromString(cell.value)
    return event_ts, values
