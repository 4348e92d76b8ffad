"""The streaming graph writing to a real online store: an older event that arrives
after a newer one (within the lateness bound) changes the state but not the row's
event time (rows are stamped with the entity's newest event time), and the store
must still end up holding the newest state.

Redis fails this: Feast's redis store skips a write whose event time is not newer
than the stored one, so the update is silently lost online until the entity's
next newer event. SQLite upserts unconditionally.
"""

from __future__ import annotations

import uuid

import pytest

from beam_pipelines.rewards import SHORT_VIDEO
from beam_pipelines.sinks import FeastSinkFactory
from beam_pipelines.transforms.graph import ITEM_ROWS, USER_ROWS, ComputeFeatures, FeatureSettings
from beam_pipelines.transforms.write import WriteFeatures
from feature_repo.features import ITEM_REALTIME, USER_REALTIME
from feature_repo.store import FeatureStoreClient
from tests.helpers.events import SECOND_MS, T0_MS, event_json
from tests.helpers.pipelines import StreamBuilder, streaming_pipeline


def _config(backend: str, tmp_path, request) -> dict:
    common = {
        "feast_project": f"tie{uuid.uuid4().hex[:8]}",
        "registry_path": str(tmp_path / "registry.db"),
        "offline_dir": str(tmp_path / "offline"),
    }
    if backend == "sqlite":
        return {"type": "sqlite", "path": str(tmp_path / "online.db"), **common}
    server = request.getfixturevalue("redis_server")
    return {"type": "redis", "connection_string": server.address, **common}


@pytest.mark.parametrize(
    "backend",
    [
        "sqlite",
        "redis",
    ],
)
def test_an_older_event_applied_later_reaches_the_online_store(backend, tmp_path, request):
    newest = T0_MS + 60 * SECOND_MS
    stream = (
        StreamBuilder(T0_MS)
        .deliver([(event_json("e1", "u1", "i1", "like", newest), newest)])
        # 60 s older, within the 600 s bound: applied, in a later bundle and write.
        .deliver([(event_json("e2", "u1", "i1", "share", T0_MS), T0_MS)])
    )
    config = _config(backend, tmp_path, request)
    sink = FeastSinkFactory(config)
    p = streaming_pipeline()
    features = p | stream.build() | ComputeFeatures(FeatureSettings(rewards=SHORT_VIDEO))
    _ = features[USER_ROWS] | "WriteUsers" >> WriteFeatures(sink, USER_REALTIME, backoff_s=0)
    _ = features[ITEM_ROWS] | "WriteItems" >> WriteFeatures(sink, ITEM_REALTIME, backoff_s=0)
    p.run().wait_until_finish()

    with FeatureStoreClient(config) as client:
        user = client.read(USER_REALTIME, ["u1"])["u1"]
        item = client.read(ITEM_REALTIME, ["i1"])["i1"]
    assert user["user_last_event_ms"] == item["item_last_event_ms"] == newest
    assert (user["user_event_count"], item["item_event_count"]) == (2, 2)
    assert user["user_recent_items"] == ["i1", "i1"]
