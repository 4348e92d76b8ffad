"""Our Feast online store classes: Feast builds them from the class path in the
RepoConfig, and they carry the connection settings the services rely on."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from feature_repo import features as f
from feature_repo.store import FeatureStoreClient, SqliteStoreConfig, sqlite_settings


def test_feast_builds_our_store_from_its_class_path(tmp_path: Path) -> None:
    from feature_repo.online_stores.sqlite import RtpSqliteOnlineStoreConfig

    with FeatureStoreClient(sqlite_settings(tmp_path / "online.db")) as client:
        online = client.store.config.online_store
        assert isinstance(online, RtpSqliteOnlineStoreConfig)
        assert online.type == "feature_repo.online_stores.sqlite.RtpSqliteOnlineStore"
        written = {f.ITEM_KEY: "i1", f.EVENT_TIMESTAMP: 1_790_000_000_000}
        written |= {name: 1.5 for name in f.FEATURE_VIEWS[f.ITEM_REALTIME][1]}
        client.write_rows(f.ITEM_REALTIME, [written])
        # written through the client's own store instance, read through Feast's
        assert client.read(f.ITEM_REALTIME, ["i1"])["i1"] is not None


def test_sqlite_file_is_put_in_wal_mode_on_apply(tmp_path: Path) -> None:
    path = tmp_path / "online.db"
    with FeatureStoreClient(SqliteStoreConfig(**sqlite_settings(path))):
        pass
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_redis_connection_is_bounded_unless_the_string_says_otherwise() -> None:
    from feature_repo.online_stores.redis import RtpRedisOnlineStoreConfig

    bounded = RtpRedisOnlineStoreConfig(connection_string="h:1", timeout_s=0.5)
    assert bounded.connection_string == (
        "h:1,socket_timeout=0.5,socket_connect_timeout=0.5,retry=null"
    )
    given = RtpRedisOnlineStoreConfig(connection_string="h:1,socket_timeout=9", timeout_s=0.5)
    assert given.connection_string == "h:1,socket_timeout=9,socket_connect_timeout=0.5,retry=null"
