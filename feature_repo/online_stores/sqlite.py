"""Embedded SQLite online store: Feast's, with the file in WAL mode and a ping."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from feast import Entity, FeatureView, RepoConfig
from feast.infra.online_stores.sqlite import SqliteOnlineStore, SqliteOnlineStoreConfig
from pydantic import Field


class RtpSqliteOnlineStoreConfig(SqliteOnlineStoreConfig):
    """Feast's SQLite config plus the bound of our ping."""

    type: Literal["feature_repo.online_stores.sqlite.RtpSqliteOnlineStore"] = (
        "feature_repo.online_stores.sqlite.RtpSqliteOnlineStore"
    )
    """Online store type selector (this class's path)."""

    timeout_s: float = Field(5.0, gt=0)
    """Seconds ``ping`` waits for a locked file. Feast's own connection waits
    Python sqlite3's default 5 s."""


def db_path(config: RepoConfig) -> Path:
    """The database file, a relative ``path`` taken from the repo directory (as Feast does)."""
    path = Path(config.online_store.path)
    if config.repo_path and not path.is_absolute():
        return Path(config.repo_path) / path
    return path


class RtpSqliteOnlineStore(SqliteOnlineStore):
    def update(
        self,
        config: RepoConfig,
        tables_to_delete: Sequence[FeatureView],
        tables_to_keep: Sequence[FeatureView],
        entities_to_delete: Sequence[Entity],
        entities_to_keep: Sequence[Entity],
        partial: bool,
    ) -> None:
        # Feast commits every write batch; in the default rollback-journal mode each
        # commit syncs the file several times (~60 ms here), which capped the
        # streaming job at a few writes/s. WAL appends instead and lets readers (the
        # service) run beside the writer. The mode is stored in the file, so setting
        # it once, before Feast connects on apply, holds for every later connection.
        timeout_s = config.online_store.timeout_s
        with contextlib.closing(sqlite3.connect(db_path(config), timeout=timeout_s)) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
        super().update(
            config, tables_to_delete, tables_to_keep, entities_to_delete, entities_to_keep, partial
        )

    def ping(self, config: RepoConfig, view: FeatureView) -> None:
        """Open the file and run a query (``view`` is not needed); raises
        ``sqlite3.OperationalError`` or ``OSError`` when it cannot be used."""
        timeout_s = config.online_store.timeout_s
        with contextlib.closing(sqlite3.connect(db_path(config), timeout=timeout_s)) as conn:
            conn.execute("SELECT 1").fetchone()

    @staticmethod
    def unavailable_errors() -> tuple[type[BaseException], ...]:
        """Exceptions meaning "store unreachable or too slow"."""
        return (sqlite3.OperationalError, OSError)
