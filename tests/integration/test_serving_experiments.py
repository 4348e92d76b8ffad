"""An A/B of streamed versus frozen features through the real service (in-process
sequential retriever + co-engagement from SQLite) and the Pub/Sub emulator: the two
variants answer the same user history differently, every shown item reaches the
topic as an exposure with its variant, and the report reads them back."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from google.cloud import pubsub_v1

from beam_pipelines.events import EngagementEvent, parse_event
from beam_pipelines.experiments.assignment import Assigner
from beam_pipelines.experiments.config import ExperimentsConfig
from beam_pipelines.experiments.report import build_report
from beam_pipelines.jobs_common import store_config
from beam_pipelines.rewards import SHORT_VIDEO
from feature_repo import features as f
from feature_repo.store import FeatureStoreClient
from rtp import local_servers as servers
from rtp.tfserving_standin.tiny_export import export_tiny
from serving.app import create_app
from serving.config import ServingConfig
from tests.integration.test_serving_fresh_events import ITEMS, user_row

pytestmark = pytest.mark.timeout(600)
TOPIC = "projects/test-project/topics/serving-exposures"
SUBSCRIPTION = "projects/test-project/subscriptions/serving-exposures-test"
BEFORE = ["i0001", "i0002", "i0003"]
NEIGHBOURS = [f"i{i:04d}" for i in range(50, 55)]


def experiments(now_ms: int) -> ExperimentsConfig:
    freeze = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime((now_ms - 30 * 60_000) / 1000))
    return ExperimentsConfig.model_validate(
        {
            "experiments": [
                {
                    "name": "freshness",
                    "salt": "freshness-it",
                    "control": "streamed",
                    "variants": [
                        {"name": "streamed"},
                        {"name": "frozen", "features": "frozen", "freeze_at": freeze},
                    ],
                }
            ]
        }
    )


def users_by_variant(config: ExperimentsConfig) -> dict[str, str]:
    assigner, found = Assigner(config), {}
    for i in range(100):
        found.setdefault(assigner.assign(f"user{i}").variant or "", f"user{i}")
    return found


def write_features(store_path: Path, users: list[str], now_ms: int) -> None:
    """Each user: three engagements an hour ago, then i0040 a minute ago, which is
    co-engaged with i0050..i0054."""
    rows, windows = [], []
    for user in users:
        row = user_row(user, ["i0040", *BEFORE], now_ms - 60_000)
        row["user_recent_ts_ms"] = [now_ms - 60_000] + [now_ms - 3_600_000 - k for k in range(3)]
        rows.append(row)
        windows.append(
            {
                f.USER_KEY: user,
                f.EVENT_TIMESTAMP: now_ms,
                "user_interacted_items": ["i0040", *BEFORE],
            }
        )
    pairs = {
        f.ITEM_KEY: "i0040",
        f.EVENT_TIMESTAMP: now_ms,
        "item_neighbors": NEIGHBOURS,
        "item_neighbor_pairs": [5.0] * len(NEIGHBOURS),
    }
    with FeatureStoreClient(store_config(None, str(store_path))) as store:
        store.write_rows(f.USER_REALTIME, rows)
        store.write_rows(f.USER_COENGAGEMENT, windows)
        store.write_rows(f.ITEM_COENGAGEMENT, [pairs])


@pytest.fixture
def subscription(
    pubsub_emulator: servers.Server, monkeypatch: pytest.MonkeyPatch
) -> Iterator[pubsub_v1.SubscriberClient]:
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator.address)
    publisher = pubsub_v1.PublisherClient()
    publisher.create_topic(name=TOPIC)
    subscriber = pubsub_v1.SubscriberClient()
    subscriber.create_subscription(name=SUBSCRIPTION, topic=TOPIC)
    yield subscriber
    subscriber.delete_subscription(subscription=SUBSCRIPTION)
    publisher.delete_topic(topic=TOPIC)
    subscriber.close()


def pull(subscriber: pubsub_v1.SubscriberClient, expected: int) -> list[EngagementEvent]:
    events: list[EngagementEvent] = []
    deadline = time.monotonic() + 30
    while len(events) < expected and time.monotonic() < deadline:
        response = subscriber.pull(subscription=SUBSCRIPTION, max_messages=50, timeout=5)
        events += [parse_event(m.message.data) for m in response.received_messages]
        if response.received_messages:
            ack = [m.ack_id for m in response.received_messages]
            subscriber.acknowledge(subscription=SUBSCRIPTION, ack_ids=ack)
    return events


def test_streamed_versus_frozen_features(
    tmp_path: Path, subscription: pubsub_v1.SubscriberClient
) -> None:
    base = tmp_path / "models"
    export_tiny(base, ITEMS, version=1)
    now_ms = int(time.time() * 1000)  # at the test, not at collection: ages are asserted
    config = experiments(now_ms)
    users = users_by_variant(config)
    write_features(tmp_path / "online.db", list(users.values()), now_ms)
    serving = ServingConfig(
        model_base=str(base),
        models={"type": "inprocess", "reload_s": None},
        store=store_config(None, str(tmp_path / "online.db")),
        ranking={"seed": 1, "explore_share": 0.0},
        pubsub_topic=TOPIC,
        experiments=config,
    )
    with TestClient(create_app(serving)) as client:
        bodies = {
            variant: client.get(f"/v1/recommendations?user_id={user}&k=10").json()
            for variant, user in users.items()
        }
    streamed, frozen = bodies["streamed"], bodies["frozen"]
    assert (streamed["experiment"], streamed["variant"]) == ("freshness", "streamed")
    assert frozen["variant"] == "frozen"
    shown = {v: [i["item_id"] for i in b["items"]] for v, b in bodies.items()}
    # Streamed: the minute-old engagement brings its co-engaged items and is not shown
    # again. Frozen half an hour ago: the service knows only the hour-old events.
    assert set(shown["streamed"][:5]) == set(NEIGHBOURS) and "i0040" not in shown["streamed"]
    assert set(shown["frozen"][:5]) != set(NEIGHBOURS)  # only the model's (untrained) order
    assert streamed["feature_age_s"] < 120 < frozen["feature_age_s"]

    exposures = pull(subscription, 20)  # the service stopped: everything is published
    assert len(exposures) == 20
    by_request = {e.context["request_id"] for e in exposures}
    assert by_request == {streamed["request_id"], frozen["request_id"]}
    seen = next(e for e in exposures if e.context["variant"] == "frozen")
    like = EngagementEvent("like-1", seen.user_id, seen.item_id, "like", seen.timestamp_ms + 1000)
    report = build_report([*exposures, like], SHORT_VIDEO, config)
    variants = report["experiments"]["freshness"]["variants"]
    assert {v: variants[v]["exposures"] for v in variants} == {"streamed": 10, "frozen": 10}
    assert variants["frozen"]["engagements"] == 1
