"""An upload is recommended by content with no new model version: item metadata
published to the real Pub/Sub emulator, encoded by the streaming item job into
the SQLite online store and the item table, served by the real service (in-process
tiny export) to a user whose recent items share its topic.

Reports the time from the upload's publication to the first response that
returns it (the job's bundle, the encoder, the store write, the item-table file,
the service's next refresh).
"""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from feature_repo import features as f
from rtp.tfserving_standin.tiny_export import export_tiny
from serving.app import create_app
from serving.config import ServingConfig
from tests.helpers.item_job import publish, reader, reader_config, wait_for_row
from tests.helpers.users import user_row

pytestmark = pytest.mark.timeout(900)
SPORTS = {
    "c-sport-1": ("Buzzer beater wins the final", ["basketball", "highlights"]),
    "c-sport-2": ("Top ten slam dunks of the season", ["basketball", "dunk"]),
    "c-sport-3": ("Point guard crossover skills", ["basketball", "training"]),
}
COOKING = {
    "c-cook-1": ("Easy weeknight pasta", ["recipe", "pasta"]),
    "c-cook-2": ("How to bake sourdough bread", ["baking", "recipe"]),
}
CATALOGUE = [*SPORTS, *COOKING, *(f"i{i:04d}" for i in range(40))]


def metadata(item_id: str, title: str, tags: list[str], topic: str) -> dict:
    now_ms = int(time.time() * 1000)
    return {"item_id": item_id, "title": title, "tags": tags, "topic": topic, "upload_ms": now_ms}


def recommended(client: TestClient, user: str) -> dict:
    response = client.get(f"/v1/recommendations?user_id={user}&k=10")
    assert response.status_code == 200, response.text
    return response.json()


def test_an_upload_is_recommended_by_content_without_a_new_model(item_job, tmp_path) -> None:
    job = item_job.job
    # The catalogue's metadata goes through the same job: their content vectors
    # are the users' profiles.
    for item, (title, tags) in {**SPORTS, **COOKING}.items():
        topic = "sports" if item in SPORTS else "cooking"
        publish(item_job, metadata(item, title, tags, topic))
    for item in [*SPORTS, *COOKING]:
        wait_for_row(job, item_job.log, item_job.db, item, timeout_s=300)

    base = tmp_path / "models"
    export_tiny(base, CATALOGUE, version=1)
    with reader(item_job.db) as store:
        store.write_rows(f.USER_REALTIME, [user_row("fan", list(SPORTS), int(time.time() * 1000))])
    config = ServingConfig(
        model_base=str(base),
        models={"type": "inprocess", "reload_s": None},
        store=reader_config(item_job.db),
        ranking={"seed": 1, "explore_share": 0.0},
        new_items={"table_path": str(item_job.out / "items"), "refresh_s": 0.25, "slots": 1},
    )
    with TestClient(create_app(config)) as client:
        before = recommended(client, "fan")
        assert before["fallback"] is None, before
        assert all(i["source"] != "new_item" for i in before["items"])

        publish(item_job, metadata("new-cook", "Grandma's lasagna recipe", ["pasta"], "cooking"))
        published = time.monotonic()
        publish(
            item_job,
            metadata("new-sport", "Insane dunk at the buzzer", ["basketball", "dunk"], "sports"),
        )
        deadline = published + 180
        while time.monotonic() < deadline:
            assert job.poll() is None, f"item job exited {job.returncode}"
            body = recommended(client, "fan")
            found = [i for i in body["items"] if i["item_id"] == "new-sport"]
            if found:
                break
            time.sleep(0.1)
        latency_s = time.monotonic() - published
    assert found, f"new-sport not recommended in 180 s: {body}"
    print(f"upload -> recommended (no new model version): {latency_s:.2f} s")

    assert body["model_version"] == before["model_version"] == 1
    assert body["fallback"] is None
    assert found[0]["source"] == "new_item" and found[0]["score"] >= 0.3
    # One reserved slot: the upload on the user's topic, not the one on cooking.
    assert [i["item_id"] for i in body["items"] if i["source"] == "new_item"] == ["new-sport"]
    assert "new-sport" not in CATALOGUE
