"""Through the real service (in-process sequential retriever + co-engagement from the
SQLite online store): one new event in a user's features changes the next answer,
with no new model version. The store rows are what the streaming job writes
(``user_realtime``, ``user_coengagement``, ``item_coengagement``)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from beam_pipelines.jobs_common import store_config
from feature_repo import features as f
from feature_repo.store import FeatureStoreClient
from rtp.tfserving_standin.tiny_export import export_tiny
from serving.app import create_app
from serving.config import ServingConfig
from tests.helpers.users import user_row

pytestmark = pytest.mark.timeout(600)
ITEMS = [f"i{i:04d}" for i in range(60)]


def top(client: TestClient, user: str) -> tuple[list[str], dict]:
    response = client.get(f"/v1/recommendations?user_id={user}&k=10")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["fallback"] is None, body
    return [i["item_id"] for i in body["items"]], body


def test_one_new_event_changes_the_next_answer(tmp_path: Path) -> None:
    base = tmp_path / "models"
    export_tiny(base, ITEMS, version=1)
    store_path = tmp_path / "online.db"
    config = ServingConfig(
        model_base=str(base),
        models={"type": "inprocess", "reload_s": None},
        store=store_config(None, str(store_path)),
        ranking={"seed": 1, "explore_share": 0.0},
    )
    now_ms = int(time.time() * 1000)
    before = ["i0001", "i0002", "i0003"]
    with FeatureStoreClient(store_config(None, str(store_path))) as store:
        store.write_rows(f.USER_REALTIME, [user_row("u", before, now_ms - 1000)])
        store.write_rows(
            f.USER_COENGAGEMENT,
            [{f.USER_KEY: "u", f.EVENT_TIMESTAMP: now_ms - 1000, "user_interacted_items": before}],
        )
        # The item the user engages with next is co-engaged with i0050..i0054.
        neighbours = [f"i{i:04d}" for i in range(50, 55)]
        store.write_rows(
            f.ITEM_COENGAGEMENT,
            [
                {
                    f.ITEM_KEY: "i0040",
                    f.EVENT_TIMESTAMP: now_ms,
                    "item_neighbors": neighbours,
                    "item_neighbor_pairs": [5.0] * len(neighbours),
                }
            ],
        )
    with TestClient(create_app(config)) as client:
        first, body = top(client, "u")
        version = body["model_version"]
        # One event arrives: the streaming job rewrites the user's rows.
        after = ["i0040", *before]
        with FeatureStoreClient(store_config(None, str(store_path))) as store:
            store.write_rows(f.USER_REALTIME, [user_row("u", after, now_ms)])
            store.write_rows(
                f.USER_COENGAGEMENT,
                [{f.USER_KEY: "u", f.EVENT_TIMESTAMP: now_ms, "user_interacted_items": after}],
            )
        second, body = top(client, "u")
    assert body["model_version"] == version  # no new model
    assert second != first
    assert set(neighbours) & set(second), second  # the co-engaged items come in
    assert "i0040" not in second  # the item just engaged with is not shown again
