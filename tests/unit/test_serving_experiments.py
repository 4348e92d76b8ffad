"""Experiments in the service: each response carries a request id and the user's
variant, the variant's settings reach the recommender, and shown items are
published as exposure events off the request path (dropped and counted when the
buffer is full)."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from beam_pipelines.events import EngagementEvent, parse_event
from beam_pipelines.experiments.assignment import Assigner
from beam_pipelines.experiments.config import ExperimentsConfig
from serving.app import create_app
from serving.config import ExposuresConfig, ServingConfig
from serving.events import PublishError
from serving.exposures import ExposureLog, Shown
from serving.features import FrozenRows, features_as_of
from serving.metrics import ServingMetrics
from tests.unit.test_serving_app import AUTH, TOKEN, FakeService
from tests.unit.test_serving_recommender import (
    NOW_MS,
    PairStore,
    SequentialModels,
    recommender,
    user,
)

EXPERIMENTS = {
    "experiments": [
        {
            "name": "explore",
            "salt": "explore-1",
            "variants": [
                {"name": "control", "weight": 1e-6},  # everyone lands in "more"
                {"name": "more", "explore_share": 0.5},
            ],
        }
    ]
}


class ThreadRecordingPublisher:
    """FakePublisher (``publish_batch``) that records which thread publishes and can
    hold a publish."""

    def __init__(self) -> None:
        self.published: list[EngagementEvent] = []
        self.threads: set[str] = set()
        self.release = threading.Event()
        self.release.set()
        self.fail = False

    def publish_batch(self, events: list[EngagementEvent]) -> list[str]:
        self.threads.add(threading.current_thread().name)
        self.release.wait(10)
        if self.fail:
            raise PublishError("publishing to projects/p/topics/t failed: Unavailable")
        self.published.extend(events)
        return [str(i) for i in range(len(events))]


def count(client: TestClient, outcome: str) -> float:
    text = client.get("/metrics", headers=AUTH).text
    found = re.search(rf'rtp_serving_exposures_total{{outcome="{outcome}"}} (\S+)', text)
    return float(found.group(1)) if found else 0.0


def wait_for(predicate, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.fixture
def service() -> FakeService:
    fake = FakeService()
    fake.publisher = ThreadRecordingPublisher()  # type: ignore[assignment]
    return fake


def app_client(service: FakeService, **settings: Any) -> TestClient:
    config = ServingConfig(model_base="unused", token=TOKEN, **settings)
    return TestClient(create_app(config, service))  # type: ignore[arg-type]


@pytest.fixture
def client(service: FakeService) -> Iterator[TestClient]:
    with app_client(service, experiments=EXPERIMENTS) as test_client:
        yield test_client


def test_response_has_request_id_and_variant(client: TestClient, service: FakeService) -> None:
    first = client.get("/v1/recommendations?user_id=u1&k=3", headers=AUTH).json()
    second = client.get("/v1/recommendations?user_id=u1&k=3", headers=AUTH).json()

    assert re.fullmatch(r"[0-9a-f]{32}", first["request_id"])
    assert first["request_id"] != second["request_id"]
    assert (first["experiment"], first["variant"]) == ("explore", "more")
    assert service.recommender.overrides[0] == (("explore_share", 0.5),)


def test_no_experiments_means_null_variant_and_no_overrides(service: FakeService) -> None:
    with app_client(service) as client:
        body = client.get("/v1/recommendations?user_id=u1", headers=AUTH).json()
    assert body["experiment"] is None and body["variant"] is None
    assert service.recommender.overrides == [()]


def test_exposures_are_published_off_the_request_path(
    client: TestClient, service: FakeService
) -> None:
    publisher = service.publisher
    assert isinstance(publisher, ThreadRecordingPublisher)
    publisher.release.clear()  # Pub/Sub hangs: responses must not wait for it
    started = time.perf_counter()
    body = client.get("/v1/recommendations?user_id=u1&k=3&surface=feed", headers=AUTH).json()
    assert time.perf_counter() - started < 2.0
    assert publisher.published == []
    publisher.release.set()
    wait_for(lambda: len(publisher.published) == 3)

    assert publisher.threads == {"exposures"}
    events = publisher.published
    assert [e.item_id for e in events] == [i["item_id"] for i in body["items"]]
    assert [e.event_id for e in events] == [f"{body['request_id']}-{p}" for p in range(3)]
    assert events[1].event_type == "impression" and events[1].surface == "feed"
    assert events[1].context == {
        "position": 1,
        "request_id": body["request_id"],
        "experiment": "explore",
        "variant": "more",
        "source": "ranked",
    }
    assert parse_event(events[1].to_json()) == events[1]  # valid under the contract
    wait_for(lambda: count(client, "published") == 3.0)


def test_no_publisher_logs_and_counts_nothing(service: FakeService) -> None:
    service.publisher = None
    with app_client(service) as client:
        assert client.get("/v1/recommendations?user_id=u1", headers=AUTH).status_code == 200
        assert "rtp_serving_exposures_total{" not in client.get("/metrics", headers=AUTH).text


def test_a_full_buffer_drops_and_counts(service: FakeService) -> None:
    publisher = service.publisher
    assert isinstance(publisher, ThreadRecordingPublisher)
    publisher.release.clear()
    with app_client(service, exposures={"capacity": 5, "interval_s": 0.01}) as client:
        client.get("/v1/recommendations?user_id=u1&k=4", headers=AUTH)  # 4 queued
        wait_for(lambda: publisher.threads == {"exposures"})  # taken, publish held
        client.get("/v1/recommendations?user_id=u1&k=4", headers=AUTH)  # 4 queued
        client.get("/v1/recommendations?user_id=u1&k=4", headers=AUTH)  # 8 > 5: dropped
        assert count(client, "dropped") == 4.0
        publisher.release.set()
        wait_for(lambda: count(client, "published") == 8.0)
    assert len(publisher.published) == 8


def test_failed_publishes_are_counted() -> None:
    publisher = ThreadRecordingPublisher()
    publisher.fail = True
    metrics = ServingMetrics()
    log = ExposureLog(publisher.publish_batch, metrics, ExposuresConfig(batch_size=2))
    log.offer(Shown("r", "u", ("a", "b", "c"), ("ranked",) * 3, NOW_MS))

    log.drain()

    failed = metrics.registry.get_sample_value("rtp_serving_exposures_total", {"outcome": "failed"})
    assert failed == 3.0


def test_stop_publishes_what_is_left() -> None:
    publisher = ThreadRecordingPublisher()
    log = ExposureLog(publisher.publish_batch, ServingMetrics(), ExposuresConfig(interval_s=10))
    log.start()
    log.offer(Shown("r", "u", ("a",), ("explore",), NOW_MS))
    log.stop()
    assert [e.context["source"] for e in publisher.published] == ["explore"]


# --- the variant's settings in the recommender ------------------------------------------


def test_candidate_sources_override() -> None:
    service = recommender(PairStore({"u": user()}), SequentialModels())
    both = service.recommend("u", 3)
    retriever = service.recommend("u", 3, (("candidate_sources", ("retriever",)),))
    pairs = service.recommend("u", 3, (("candidate_sources", ("coengagement",)),))

    assert [r.item_id for r in both.items] == ["d", "a", "c"]  # d: co-engagement 2 + 0.1
    assert [r.item_id for r in retriever.items] == ["a", "c", "d"]  # 2·P only
    assert [r.item_id for r in pairs.items] == ["d"]  # b's only neighbour in the catalogue


def test_explore_share_override() -> None:
    service = recommender(PairStore({"u": user()}), SequentialModels())
    plain = service.recommend("u", 4)
    explored = service.recommend("u", 4, (("explore_share", 0.5),))
    assert [r.source for r in plain.items].count("explore") == 0
    assert [r.source for r in explored.items].count("explore") == 2
    assert service.ranking_for((("explore_share", 0.5),)) is service.ranking_for(
        (("explore_share", 0.5),)
    )


def test_features_as_of_drops_events_after_the_freeze() -> None:
    row = user(
        user_recent_items=["x", "y", "x", "z"],
        user_recent_ts_ms=[50, 40, 30, 10],
        user_recent_rewards=[1.0, 0.5, 1.0, 2.0],
        user_last_event_ms=50,
    )
    frozen, hidden = features_as_of(row, 35)

    assert frozen["user_recent_items"] == ["x", "z"]
    assert frozen["user_recent_ts_ms"] == [30, 10]
    assert frozen["user_recent_rewards"] == [1.0, 2.0]
    assert frozen["user_last_event_ms"] == 30
    assert frozen["user_embedding_version"] is None  # re-pooled by align_user
    assert hidden == {"y"}  # x was also seen before the freeze
    assert features_as_of(row, 50) == (row, frozenset())


def test_frozen_rows_keep_the_first_read_once_newer_events_fill_the_window() -> None:
    """Frozen at 35: the first read still has the user's events before it; later,
    newer events have pushed them out of the last-N, and rewinding that row alone
    would leave nothing (a stale user). The first rewound row is served instead."""
    rows = FrozenRows(capacity=1)
    first = user(
        user_recent_items=["y", "x"],
        user_recent_ts_ms=[40, 30],
        user_recent_rewards=[0.5, 1.0],
        user_last_event_ms=40,
    )
    later = user(
        user_recent_items=["w", "v", "y"],
        user_recent_ts_ms=[60, 50, 40],
        user_recent_rewards=[1.0, 1.0, 0.5],
        user_last_event_ms=60,
    )
    assert features_as_of(later, 35)[0]["user_last_event_ms"] == 0  # nothing left

    kept, hidden = rows.as_of("u", first, 35)
    assert kept["user_recent_items"] == ["x"] and hidden == {"y"}
    again, hidden = rows.as_of("u", later, 35)
    assert again is kept and again["user_last_event_ms"] == 30
    assert hidden == {"w", "v", "y"}  # the window is read now: hide what came after
    rows.as_of("other", later, 35)  # capacity 1: u is evicted
    assert rows.as_of("u", later, 35)[0]["user_last_event_ms"] == 0


def test_frozen_features_in_the_recommender() -> None:
    """u engaged with a an hour ago and with b a minute ago; frozen half an hour ago,
    the service does not know b: b is not excluded and leaves the pair window (no
    co-engagement boost for d); streamed, b is excluded and d is boosted."""
    row = user(
        user_recent_items=["b", "a"],
        user_recent_ts_ms=[NOW_MS - 60_000, NOW_MS - 3_600_000],
        user_recent_rewards=[1.0, 1.0],
    )
    service = recommender(PairStore({"u": row}), SequentialModels())
    streamed = service.recommend("u", 3)
    frozen = service.recommend("u", 3, (("freeze_ms", NOW_MS - 1_800_000),))

    assert [r.item_id for r in streamed.items] == ["d", "c", "e"]
    assert [r.item_id for r in frozen.items] == ["b", "c", "d"]
    assert frozen.feature_age_s == 3600.0


def test_experiments_flag_and_config_round_trip(tmp_path) -> None:
    from serving.app import config_from_args, parser

    path = tmp_path / "experiments.yaml"
    path.write_text(
        "experiments:\n  - name: f\n    salt: f1\n    variants:\n      - {name: control}\n"
        "      - {name: frozen, features: frozen, freeze_at: '2024-06-01T00:00:00Z'}\n"
    )
    config = config_from_args(parser().parse_args(["--models", "/m", "--experiments", str(path)]))
    assert isinstance(config.experiments, ExperimentsConfig)
    again = ServingConfig.model_validate(config.model_dump(mode="json"))  # --workers path
    assert again.experiments == config.experiments
    assert (
        Assigner(again.experiments).assign("u").pairs
        == Assigner(config.experiments).assign("u").pairs
    )
