"""``POST /v1/events`` through the real Pub/Sub emulator: validated events arrive on
the topic with the ``event_ts`` attribute the streaming job reads; bad ones do not.
The exposure events of a recommendation arrive the same way."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from google.cloud import pubsub_v1

from beam_pipelines.events import parse_event
from rtp import local_servers as servers
from serving.app import create_app
from serving.config import ServingConfig
from serving.events import EventPublisher
from serving.metrics import ServingMetrics
from serving.recommender import Recommendation, Recommended

pytestmark = pytest.mark.timeout(300)
PROJECT = "test-project"
TOPIC = f"projects/{PROJECT}/topics/serving-events"
SUBSCRIPTION = f"projects/{PROJECT}/subscriptions/serving-events-test"
NOW_MS = int(time.time() * 1000)


class ThreeItems:
    def recommend(self, user_id: str, k: int, overrides: tuple = ()) -> Recommendation:
        items = [Recommended(f"i{j}", 1.0, "ranked") for j in range(3)]
        return Recommendation(user_id, items, 1, 0.0)


class EventsOnlyService:
    """The real publisher and a fixed recommender; no models or store (this test is
    about the events that go out)."""

    def __init__(self, topic: str) -> None:
        self.metrics = ServingMetrics()
        self.recommender = ThreeItems()
        self.publisher = EventPublisher(topic, timeout_s=20)

    def start(self) -> None:
        self.publisher.open()

    def stop(self) -> None:
        self.publisher.close()

    def readiness(self) -> dict[str, str]:
        return {"events": "ok"}


@pytest.fixture
def client(
    pubsub_emulator: servers.Server, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TestClient]:
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator.address)
    config = ServingConfig(model_base="unused", pubsub_topic=TOPIC)
    service = EventsOnlyService(TOPIC)
    with TestClient(create_app(config, service)) as test_client:  # type: ignore[arg-type]
        subscriber = pubsub_v1.SubscriberClient()
        subscriber.create_subscription(name=SUBSCRIPTION, topic=TOPIC)
        yield test_client
        subscriber.delete_subscription(subscription=SUBSCRIPTION)
        subscriber.close()


def pull(expected: int) -> list:
    subscriber = pubsub_v1.SubscriberClient()
    received: list = []
    deadline = time.monotonic() + 30
    while len(received) < expected and time.monotonic() < deadline:
        response = subscriber.pull(subscription=SUBSCRIPTION, max_messages=10, timeout=5)
        received += [m.message for m in response.received_messages]
        if response.received_messages:
            ack = [m.ack_id for m in response.received_messages]
            subscriber.acknowledge(subscription=SUBSCRIPTION, ack_ids=ack)
    subscriber.close()
    return received


def test_posted_events_reach_the_topic(client: TestClient) -> None:
    events = [
        {
            "event_id": f"e{i}",
            "user_id": "u1",
            "item_id": f"i{i}",
            "event_type": "like",
            "timestamp": NOW_MS + i,
            "surface": "short_video_feed",
        }
        for i in range(3)
    ]
    bad = dict(events[0], event_type="teleport")

    assert client.post("/v1/events", json=bad).status_code == 400
    response = client.post("/v1/events", json=events)

    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == 3
    messages = pull(3)
    by_id = {json.loads(m.data)["event_id"]: m for m in messages}
    assert sorted(by_id) == ["e0", "e1", "e2"]
    assert json.loads(by_id["e1"].data) == dict(events[1], timestamp=NOW_MS + 1)
    assert by_id["e2"].attributes["event_ts"] == str(NOW_MS + 2)


def test_exposures_of_a_recommendation_reach_the_topic(client: TestClient) -> None:
    body = client.get("/v1/recommendations?user_id=u7&k=3").json()

    messages = pull(3)
    events = sorted((parse_event(m.data) for m in messages), key=lambda e: e.event_id)
    assert [e.item_id for e in events] == ["i0", "i1", "i2"]
    assert {e.event_type for e in events} == {"impression"}
    assert events[2].context == {
        "position": 2,
        "request_id": body["request_id"],
        "source": "ranked",
    }
    assert messages[0].attributes["event_ts"] == str(events[0].timestamp_ms)
    published = 'rtp_serving_exposures_total{outcome="published"} 3.0'
    deadline = time.monotonic() + 10  # counted once the publish call returns
    while published not in client.get("/metrics").text and time.monotonic() < deadline:
        time.sleep(0.05)
    assert published in client.get("/metrics").text
