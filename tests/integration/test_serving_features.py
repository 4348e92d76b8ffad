"""The service's fast feature reads (one entity's row, numbers in bulk) give
``FeatureStoreClient.read``'s answer, on the embedded SQLite store and on a real Redis."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from feature_repo import features as f
from feature_repo.store import FeatureStoreClient, StoreUnavailableError
from rtp import local_servers as servers
from serving.features import FastReader, LazyStore, read_numbers
from tests.helpers.components import component

pytestmark = pytest.mark.timeout(300)
NOW_MS = 1_790_000_000_000


def rows(view: str, n: int) -> list[dict[str, Any]]:
    key, schema = f.FEATURE_VIEWS[view]
    values = {
        f.FLOAT: 0.25,
        f.INT: 7,
        f.STRING: "v1",
        f.FLOAT_LIST: [0.5, -1.25],
        f.INT_LIST: [1, 2],
        f.STRING_LIST: ["a", "b"],
    }
    return [
        {
            key: f"e{i}",
            f.EVENT_TIMESTAMP: NOW_MS + i,
            **{name: values[kind] for name, kind in schema.items()},
        }
        for i in range(n)
    ]


def check_same_answers(config: dict[str, Any]) -> None:
    with FeatureStoreClient(config) as client:
        for view in (f.USER_REALTIME, f.ITEM_REALTIME):
            client.write_rows(view, rows(view, 3))
        fast = FastReader(client)
        for view in (f.USER_REALTIME, f.ITEM_REALTIME):
            ids = ["e2", "missing", "e0", "e2"]
            assert fast.read(view, ids) == client.read(view, ids)
            assert fast.read(view, ["missing"]) == {"missing": None}
        names = [n for n, kind in f.ITEM_FEATURES.items() if kind in (f.FLOAT, f.INT)]
        ids = ["e2", "missing", "e0"]
        values, known = fast.read_numbers(f.ITEM_REALTIME, ids, names)
        generic = read_numbers(client, f.ITEM_REALTIME, ids, names)
        assert values.tolist() == generic[0].tolist() and known.tolist() == generic[1].tolist()
        assert known.tolist() == [True, False, True] and values[0].any() and not values[1].any()
        with pytest.raises(TypeError, match="not a number"):
            fast.read_numbers(f.USER_REALTIME, ["e0"], ["user_recent_items"])


def test_sqlite(tmp_path: Path) -> None:
    check_same_answers(
        {
            "type": "sqlite",
            "path": str(tmp_path / "online.db"),
            "registry_path": str(tmp_path / "registry.db"),
            "offline_dir": str(tmp_path / "offline"),
        }
    )


def test_redis_and_its_outage(tmp_path: Path) -> None:
    context = servers.redis_server()
    with component():
        server = context.__enter__()
    config = {
        "type": "redis",
        "connection_string": server.address,
        "timeout_s": 0.3,
        "registry_path": str(tmp_path / "registry.db"),
        "offline_dir": str(tmp_path / "offline"),
    }
    try:
        check_same_answers(config)
        store = LazyStore(lambda: FeatureStoreClient(config))
        assert store.read(f.USER_REALTIME, ["e1"])["e1"] is not None
    finally:
        context.__exit__(None, None, None)
    with pytest.raises(StoreUnavailableError, match="redis online store unavailable"):
        store.read(f.USER_REALTIME, ["e1"])
    store.close()
