"""Our Feast online stores: subclasses of Feast's own, named by class path in a
``RepoConfig``'s ``online_store.type`` (``ONLINE_STORE_TYPES``), each in its module.

They add what the services need on top of Feast's stores, through public hooks
only: connection settings in the typed config, a ``ping``, the client exceptions
that mean "store unreachable" (``unavailable_errors``), and a ``close`` for
Feast's async close hook (``FeatureStore.close``). Importing a module imports Feast.
"""

ONLINE_STORE_TYPES = {
    "sqlite": "feature_repo.online_stores.sqlite.RtpSqliteOnlineStore",
    "redis": "feature_repo.online_stores.redis.RtpRedisOnlineStore",
    "bigtable": "feature_repo.online_stores.bigtable.RtpBigtableOnlineStore",
}
"""Our store config ``type`` -> Feast ``online_store.type`` (the class path)."""
