"""Model versions: the service follows a newer complete export without a restart,
stays on a pinned version, and ignores an export still being written."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from feature_repo import features as f
from feature_repo.store import FeatureStoreClient
from rtp.tfserving_standin.tiny_export import export_tiny
from serving.app import create_app
from serving.config import ServingConfig

pytestmark = pytest.mark.timeout(600)
ITEMS = [f"i{i:03d}" for i in range(40)]
NOW_MS = int(time.time() * 1000)


def write_user(store: dict) -> None:
    values = {n: 1 for n, kind in f.USER_FEATURES.items() if kind in (f.FLOAT, f.INT)}
    row = {
        **values,
        f.USER_KEY: "u1",
        f.EVENT_TIMESTAMP: NOW_MS,
        "user_last_event_ms": NOW_MS,
        "user_emb_short": [0.1] * 8,
        "user_emb_long": [0.2] * 8,
        "user_embedding_version": "1",
        "user_recent_items": ["i001"],
        "user_recent_ts_ms": [NOW_MS],
        "user_recent_rewards": [1.0],
    }
    with FeatureStoreClient(store) as client:
        client.write_rows(f.USER_REALTIME, [row])


def version_served(client: TestClient) -> int:
    response = client.get("/v1/recommendations?user_id=u1&k=5")
    assert response.status_code == 200, response.text
    assert response.json()["fallback"] is None
    return response.json()["model_version"]


def test_follows_new_versions_unless_pinned(tmp_path: Path) -> None:
    base = tmp_path / "models"
    export_tiny(base, ITEMS, k=20, version=1)
    store = {
        "type": "sqlite",
        "path": str(tmp_path / "online.db"),
        "registry_path": str(tmp_path / "registry.db"),
        "offline_dir": str(tmp_path / "offline"),
    }
    write_user(store)
    following = ServingConfig(model_base=str(base), store=store, models={"reload_s": 0.2})
    pinned = ServingConfig(
        model_base=str(base), store=store, models={"reload_s": 0.2, "version": 1}
    )
    with TestClient(create_app(following)) as live, TestClient(create_app(pinned)) as fixed:
        assert version_served(live) == 1
        # An export in progress (no _COMPLETE markers yet) is not picked up.
        (base / "retrieval" / "7").mkdir()
        time.sleep(1.0)
        assert version_served(live) == 1

        export_tiny(base, ITEMS, k=20, version=2, seed=1)
        deadline = time.monotonic() + 60
        while version_served(live) != 2 and time.monotonic() < deadline:
            time.sleep(0.2)

        assert version_served(live) == 2
        assert "rtp_serving_model_version 2.0" in live.get("/metrics").text
        assert version_served(fixed) == 1
