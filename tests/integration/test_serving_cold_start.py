"""A fresh service on an empty store: ``rtp serve --models MODEL_BASE`` answers a
user it has never seen with 200 and the model version's training popularity
(``fallback: popular``), and ``/readyz`` says it can serve. Without that list (an
export from before ``popular.json``) the cold user gets 503 and so does
``/readyz``: nothing can be served."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from beam_pipelines.jobs_common import store_config
from rtp.tfserving_standin.tiny_export import export_tiny
from serving.app import create_app
from serving.config import ServingConfig

pytestmark = pytest.mark.timeout(600)
ITEMS = [f"i{i:04d}" for i in range(50)]
POPULAR = {"i0007": 30.0, "i0003": 12.0, "i0042": 12.0, "i0001": 1.0}


def serving_config(base: Path, store: Path) -> ServingConfig:
    return ServingConfig(
        model_base=str(base),
        models={"type": "inprocess", "reload_s": None},
        store=store_config(None, str(store)),
    )


def test_a_cold_user_on_an_empty_store_gets_the_training_popularity(tmp_path: Path) -> None:
    base = tmp_path / "models"
    export_tiny(base, ITEMS, version=1, popular=POPULAR)
    with TestClient(create_app(serving_config(base, tmp_path / "online.db"))) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["popular"] == "ok"
        response = client.get("/v1/recommendations?user_id=1&k=3")
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["fallback"], body["fallback_reason"]) == ("popular", "unknown_user")
        assert [i["item_id"] for i in body["items"]] == ["i0007", "i0003", "i0042"]
        assert body["model_version"] is None  # no model answered


def test_without_a_popular_list_nothing_can_be_served(tmp_path: Path) -> None:
    base = tmp_path / "models"
    export_tiny(base, ITEMS, version=1)  # an empty popular.json
    store = tmp_path / "store"
    store.write_text("not a directory")  # the store cannot open either
    with TestClient(create_app(serving_config(base, store / "online.db"))) as client:
        assert client.get("/v1/recommendations?user_id=1").status_code == 503
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["popular"] != "ok"
