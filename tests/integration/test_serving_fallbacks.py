"""Each fallback of the running service, exercised by stopping the component it
covers: a real Redis online store, the TF Serving stand-in over gRPC, a real
export (untrained weights). Feature rows are written straight to the store."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from feature_repo import features as f
from feature_repo.store import FeatureStoreClient
from rtp import local_servers as servers
from rtp.tfserving_standin.launch import standin
from rtp.tfserving_standin.tiny_export import export_tiny
from serving.app import create_app
from serving.config import ServingConfig
from tests.helpers.components import component

pytestmark = pytest.mark.timeout(900)
ITEMS = [f"i{i:04d}" for i in range(300)]
DIM = 8
VERSION = 5
NOW_MS = int(time.time() * 1000)
DAY_MS = 86_400_000


def user_row(user_id: str, last_ms: int, recent: list[str], seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    values = {
        name: 0.5 if kind == f.FLOAT else 3
        for name, kind in f.USER_FEATURES.items()
        if kind in (f.FLOAT, f.INT)
    }
    return {
        **values,
        f.USER_KEY: user_id,
        f.EVENT_TIMESTAMP: last_ms,
        "user_emb_short": rng.standard_normal(DIM).tolist(),
        "user_emb_long": rng.standard_normal(DIM).tolist(),
        "user_embedding_version": str(VERSION),
        "user_last_event_ms": last_ms,
        "user_recent_items": recent,
        "user_recent_ts_ms": [last_ms] * len(recent),
        "user_recent_rewards": [1.0] * len(recent),
    }


def item_row(item_id: str, engagements: float) -> dict[str, Any]:
    values = {name: 1.0 for name, kind in f.ITEM_FEATURES.items() if kind == f.FLOAT}
    return {
        **values,
        f.ITEM_KEY: item_id,
        f.EVENT_TIMESTAMP: NOW_MS - 60_000,
        "item_event_count": 10,
        "item_engagements_short": engagements,
        "item_engagements_long": engagements,
        "item_last_event_ms": NOW_MS - 60_000,
    }


@pytest.fixture(scope="module")
def model_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("models")
    export_tiny(base, ITEMS, dim=DIM, k=100, version=VERSION)
    return base


@pytest.fixture(scope="module")
def tfserving(model_base: Path) -> Iterator[tuple[str, Path]]:
    delay_file = model_base / "delay_s"
    with standin(model_base, delay_file=delay_file, rest=False) as (server, _):
        yield server.address, delay_file


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[tuple[servers.Server, dict[str, Any]]]:
    context = servers.redis_server()
    with component():
        server = context.__enter__()
    store = {
        "type": "redis",
        "connection_string": server.address,
        "timeout_s": 0.3,
        "registry_path": str(tmp_path / "registry.db"),
        "offline_dir": str(tmp_path / "offline"),
    }
    with FeatureStoreClient(store) as client:
        client.write_rows(
            f.USER_REALTIME,
            [
                user_row("fresh", NOW_MS - 60_000, ["i0001", "i0002"], 1),
                user_row("stale", NOW_MS - 60 * DAY_MS, ["i0299"], 2),
            ],
        )
        client.write_rows(
            f.ITEM_REALTIME,
            [item_row(item, 100.0 - i) for i, item in enumerate(ITEMS[:50])]
            + [item_row("i0299", 1000.0)],
        )
    try:
        yield server, store
    finally:
        context.__exit__(None, None, None)


def config(
    model_base: Path, store: dict[str, Any], address: str, cache: Path | None = None
) -> ServingConfig:
    return ServingConfig(
        model_base=str(model_base),
        models={
            "type": "grpc",
            "address": address,
            "timeout_s": 0.5,
            "retrieval_model": "retrieval",
        },
        store=store,
        ranking={"seed": 1},
        # No breaker here: every request tries the model server, as the test expects.
        fallback={"breaker_failures": 100, "popular_cache_path": cache and str(cache)},
    )


def get(client: TestClient, user_id: str, k: int = 10) -> dict[str, Any]:
    response = client.get(f"/v1/recommendations?user_id={user_id}&k={k}")
    assert response.status_code == 200, response.text
    return response.json()


def test_models_then_each_fallback(
    model_base: Path,
    tfserving: tuple[str, Path],
    redis: tuple[servers.Server, dict],
    tmp_path: Path,
) -> None:
    address, delay_file = tfserving
    server, store = redis
    cache = tmp_path / "popular.json"
    app = create_app(config(model_base, store, address, cache))
    with TestClient(app) as client:
        assert client.get("/readyz").json() == {
            "ready": True,
            "degraded": False,
            "models": "ok",
            "store": "ok",
            "popular": "ok",
        }

        body = get(client, "fresh")
        assert body["fallback"] is None and body["model_version"] == VERSION
        assert 55 < body["feature_age_s"] < 600
        items = [i["item_id"] for i in body["items"]]
        assert len(items) == 10 and not {"i0001", "i0002"} & set(items)
        assert {i["source"] for i in body["items"]} <= {"ranked", "explore"}

        # Unknown user and stale features: trending (the stale user's recent item dropped).
        unknown = get(client, "nobody", 3)
        assert (unknown["fallback"], unknown["fallback_reason"]) == ("trending", "unknown_user")
        assert [i["item_id"] for i in unknown["items"]] == ["i0299", "i0000", "i0001"]
        stale = get(client, "stale", 3)
        assert (stale["fallback"], stale["fallback_reason"]) == ("trending", "stale_features")
        assert [i["item_id"] for i in stale["items"]] == ["i0000", "i0001", "i0002"]

        # Model server slow: the embedding fallback, after the timeout.
        delay_file.write_text("3")
        try:
            slow = get(client, "fresh")  # the timeout (0.5 s), not the delay, ends the call
        finally:
            delay_file.unlink()
        assert (slow["fallback"], slow["fallback_reason"]) == ("embedding", "model_unavailable")
        assert "DEADLINE_EXCEEDED" in slow["fallback_detail"]
        assert len(slow["items"]) == 10
        assert not {"i0001", "i0002"} & {i["item_id"] for i in slow["items"]}
        assert get(client, "fresh")["fallback"] is None  # fast again

        # Store down: the popular list kept locally; /readyz still ready (the popular
        # list can be served), degraded, and says why.
        servers.stop_server(server)
        down = get(client, "fresh", 3)
        assert (down["fallback"], down["fallback_reason"]) == ("popular_cache", "store_unavailable")
        assert [i["item_id"] for i in down["items"]] == ["i0299", "i0000", "i0001"]
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["degraded"] is True
        assert ready.json()["store"] != "ok"

        metrics = client.get("/metrics").text
        assert (
            'rtp_serving_fallbacks_total{fallback="embedding",reason="model_unavailable"}'
            in metrics
        )
        assert f"rtp_serving_model_version {float(VERSION)}" in metrics
    assert cache.is_file()

    # A restart while the store is still down: the cache file is all there is.
    with TestClient(create_app(config(model_base, store, address, cache))) as client:
        body = get(client, "fresh", 2)
        assert body["fallback"] == "popular_cache"
        assert [i["item_id"] for i in body["items"]] == ["i0299", "i0000"]
    # ... and without one (nor a training popularity in this export) there is nothing
    # to serve: 503, not 500, and /readyz says so.
    with TestClient(create_app(config(model_base, store, address))) as client:
        response = client.get("/v1/recommendations?user_id=fresh")
        assert response.status_code == 503
        assert response.json()["error"] == "unavailable"
        assert client.get("/readyz").status_code == 503


def test_model_server_stopped(model_base: Path, redis: tuple[servers.Server, dict]) -> None:
    _, store = redis
    with standin(model_base, rest=False) as (server, _):
        app = create_app(config(model_base, store, server.address))
        client = TestClient(app)
        client.__enter__()
        assert get(client, "fresh")["fallback"] is None
    try:
        body = get(client, "fresh")
        assert (body["fallback"], body["fallback_reason"]) == ("embedding", "model_unavailable")
        assert "UNAVAILABLE" in body["fallback_detail"]
        assert client.get("/readyz").json()["models"] != "ok"
    finally:
        client.__exit__(None, None, None)
