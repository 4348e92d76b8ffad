"""HTTP contract of the service with a fake service behind it: validation, limits,
token, events, readiness and metrics. No model, no store."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beam_pipelines.events import EngagementEvent
from serving import fallbacks as fb
from serving.app import create_app
from serving.config import ServingConfig
from serving.events import PublishError
from serving.metrics import ServingMetrics
from serving.recommender import NothingToServe, Recommendation, Recommended

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NOW_MS = 1_790_000_000_000


class FakeRecommender:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []
        self.overrides: list[tuple] = []
        self.nothing = False

    def recommend(self, user_id: str, k: int, overrides: tuple = ()) -> Recommendation:
        self.calls.append((user_id, k))
        self.overrides.append(overrides)
        if self.nothing:
            raise NothingToServe("store_unavailable: no popular list to fall back on")
        if user_id == "new":
            items = [Recommended("i9", 0.5, "popular")]
            return Recommendation(user_id, items, None, None, fb.TRENDING, fb.UNKNOWN_USER)
        items = [Recommended(f"i{j}", 1.0 / (j + 1), "ranked") for j in range(k)]
        return Recommendation(user_id, items, 3, 12.5)


class FakePublisher:
    def __init__(self) -> None:
        self.published: list[EngagementEvent] = []
        self.fail = False

    async def publish(self, events: list[EngagementEvent]) -> list[str]:
        if self.fail:
            raise PublishError("publishing to projects/p/topics/t failed: DeadlineExceeded")
        self.published.extend(events)
        return [str(i) for i in range(len(events))]

    def publish_batch(self, events: list[EngagementEvent]) -> list[str]:
        if self.fail:
            raise PublishError("publishing to projects/p/topics/t failed: DeadlineExceeded")
        self.published.extend(events)
        return [str(i) for i in range(len(events))]


class FakeService:
    def __init__(self) -> None:
        self.metrics = ServingMetrics()
        self.recommender = FakeRecommender()
        self.publisher: FakePublisher | None = FakePublisher()
        self.status = {"models": "ok", "store": "ok"}
        self.started = self.stopped = False

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.stopped = True

    def readiness(self) -> dict[str, str]:
        return self.status


@pytest.fixture
def service() -> FakeService:
    return FakeService()


@pytest.fixture
def client(service: FakeService) -> Iterator[TestClient]:
    config = ServingConfig(model_base="unused", token=TOKEN, limits={"max_body_bytes": 4096})
    with TestClient(create_app(config, service)) as test_client:  # type: ignore[arg-type]
        yield test_client


def event(**overrides: Any) -> dict[str, Any]:
    body = {
        "event_id": "e1",
        "user_id": "u1",
        "item_id": "i1",
        "event_type": "like",
        "timestamp": NOW_MS,
    }
    return {**body, **overrides}


def test_lifespan_starts_and_stops_the_service(service: FakeService) -> None:
    config = ServingConfig(model_base="unused")
    with TestClient(create_app(config, service)):  # type: ignore[arg-type]
        assert service.started
    assert service.stopped


def test_recommendations(client: TestClient, service: FakeService) -> None:
    response = client.get("/v1/recommendations?user_id=u1&k=3&surface=feed", headers=AUTH)

    assert response.status_code == 200
    body = response.json()
    assert [i["item_id"] for i in body["items"]] == ["i0", "i1", "i2"]
    assert body["items"][1] == {"item_id": "i1", "score": 0.5, "source": "ranked"}
    assert body["model_version"] == 3 and body["feature_age_s"] == 12.5
    assert body["fallback"] is None and body["surface"] == "feed"
    assert service.recommender.calls == [("u1", 3)]


def test_default_k(client: TestClient, service: FakeService) -> None:
    assert client.get("/v1/recommendations?user_id=u1", headers=AUTH).status_code == 200
    assert service.recommender.calls == [("u1", 20)]


def test_fallback_is_reported(client: TestClient) -> None:
    body = client.get("/v1/recommendations?user_id=new", headers=AUTH).json()

    assert (body["fallback"], body["fallback_reason"]) == ("trending", "unknown_user")
    assert body["model_version"] is None


@pytest.mark.parametrize(
    ("query", "error", "message"),
    [
        ("user_id=u1&color=red", "unknown_parameter", "color"),
        ("user_id=u1&k=0", "invalid_parameter", "between 1 and 1000"),
        ("user_id=u1&k=-3", "invalid_parameter", "between 1 and 1000"),
        ("user_id=u1&k=1001", "invalid_parameter", "between 1 and 1000"),
        ("user_id=u1&k=ten", "invalid_parameter", "k must be an integer"),
        ("user_id=u1&k=1e3", "invalid_parameter", "k must be an integer"),
        ("user_id=u1&k=99999999999999", "invalid_parameter", "k must be an integer"),
        ("k=3", "missing_parameter", "user_id is required"),
        ("user_id=", "invalid_parameter", "user_id must not be empty"),
        ("user_id=" + "x" * 129, "invalid_parameter", "129 characters, at most 128"),
        ("user_id=u1&surface=" + "s" * 200, "invalid_parameter", "surface has 200"),
        ("user_id=u%01", "invalid_parameter", "control characters"),
        ("user_id=u1&user_id=u2", "repeated_parameter", "user_id"),
    ],
)
def test_bad_recommendation_requests(
    client: TestClient, service: FakeService, query: str, error: str, message: str
) -> None:
    response = client.get(f"/v1/recommendations?{query}", headers=AUTH)

    assert response.status_code == 400
    assert response.json()["error"] == error
    assert message in response.json()["message"]
    assert service.recommender.calls == []


def test_nothing_to_serve_is_503(client: TestClient, service: FakeService) -> None:
    service.recommender.nothing = True

    response = client.get("/v1/recommendations?user_id=u1", headers=AUTH)

    assert response.status_code == 503
    assert "no popular list" in response.json()["message"]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
    ],
)
def test_token_is_required(client: TestClient, headers: dict[str, str]) -> None:
    for method, path in [
        ("GET", "/v1/recommendations?user_id=u1"),
        ("POST", "/v1/events"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
    ]:
        response = client.request(method, path, headers=headers)
        assert response.status_code == 401, path
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["error"] == "unauthorized"


def test_healthz_needs_no_token(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}


def test_readyz(client: TestClient, service: FakeService) -> None:
    """503 only when nothing can be served: no store and no popular list."""
    response = client.get("/readyz", headers=AUTH)
    assert response.status_code == 200 and response.json()["degraded"] is False

    # Model server down, store up: the embedding fallback serves, degraded.
    service.status = {"models": "ranker v3 at 127.0.0.1:1: UNAVAILABLE", "store": "ok"}
    response = client.get("/readyz", headers=AUTH)
    assert response.status_code == 200
    assert response.json()["degraded"] is True
    assert "UNAVAILABLE" in response.json()["models"]

    # Store down, a popular list: popular items for everyone, degraded.
    service.status = {"models": "ok", "store": "refused", "popular": "ok"}
    response = client.get("/readyz", headers=AUTH)
    assert response.status_code == 200 and response.json()["degraded"] is True

    # Store down and no popular list: nothing to serve.
    service.status = {"models": "ok", "store": "refused", "popular": "no popular list"}
    response = client.get("/readyz", headers=AUTH)
    assert response.status_code == 503
    assert response.json()["ready"] is False


def test_events_are_validated_and_published(client: TestClient, service: FakeService) -> None:
    response = client.post("/v1/events", json=event(), headers=AUTH)

    assert response.status_code == 202
    assert response.json()["accepted"] == 1
    assert service.publisher is not None
    assert [e.event_id for e in service.publisher.published] == ["e1"]

    batch = [event(event_id="e2"), event(event_id="e3", event_type="skip")]
    response = client.post("/v1/events", json=batch, headers=AUTH)
    assert response.status_code == 202 and response.json()["accepted"] == 2


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"event_id": "e1", ', "malformed_json"),
        (b"[1, 2", "malformed_json"),
        (b"[]", "empty_batch"),
        (b'"just a string"', "not_object"),
        (json.dumps(event(event_type="teleport")).encode(), "unknown_event_type"),
        (json.dumps(event(color="red")).encode(), "unknown_field"),
        (json.dumps(event(user_id="")).encode(), "empty_field"),
        (json.dumps(event(item_id="i" * 200)).encode(), "field_too_long"),
        (json.dumps(event(timestamp="yesterday")).encode(), "bad_timestamp"),
        (
            json.dumps({k: v for k, v in event().items() if k != "user_id"}).encode(),
            "missing_field",
        ),
    ],
)
def test_bad_events_are_400_with_the_reason(
    client: TestClient, service: FakeService, body: bytes, reason: str
) -> None:
    response = client.post("/v1/events", content=body, headers=AUTH)

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_event"
    assert response.json()["rejected"][0]["reason"] == reason
    assert service.publisher is not None and service.publisher.published == []


def test_one_bad_event_rejects_the_batch(client: TestClient, service: FakeService) -> None:
    batch = [event(event_id="ok"), event(event_id="bad", event_type="teleport")]

    response = client.post("/v1/events", json=batch, headers=AUTH)

    assert response.status_code == 400
    assert response.json()["rejected"] == [
        {"index": 1, "reason": "unknown_event_type", "detail": "event_type 'teleport'"}
    ]
    assert service.publisher is not None and service.publisher.published == []


def test_oversize_body_is_413(client: TestClient) -> None:
    big = json.dumps([event(event_id=f"e{i}") for i in range(100)]).encode()

    response = client.post("/v1/events", content=big, headers=AUTH)
    assert response.status_code == 413
    assert "4096" in response.json()["message"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the stream is cut off
        yield from (big[i : i + 1000] for i in range(0, len(big), 1000))

    response = client.post("/v1/events", content=chunks(), headers=AUTH)
    assert response.status_code == 413


def test_events_without_a_topic_are_503(client: TestClient, service: FakeService) -> None:
    service.publisher = None

    response = client.post("/v1/events", json=event(), headers=AUTH)

    assert response.status_code == 503
    assert "--pubsub-topic" in response.json()["message"]


def test_publish_failure_is_503(client: TestClient, service: FakeService) -> None:
    assert service.publisher is not None
    service.publisher.fail = True

    response = client.post("/v1/events", json=event(), headers=AUTH)

    assert response.status_code == 503
    assert response.json()["error"] == "publish_failed"


def test_unknown_route_and_method(client: TestClient) -> None:
    assert client.get("/v1/nothing", headers=AUTH).status_code == 404
    assert client.post("/v1/recommendations", headers=AUTH).status_code == 405


def test_metrics_count_latency_fallbacks_and_events(client: TestClient) -> None:
    statuses = [
        client.get("/v1/recommendations?user_id=u1", headers=AUTH).status_code,
        client.get("/v1/recommendations?user_id=new", headers=AUTH).status_code,
        client.post("/v1/events", content=b"{", headers=AUTH).status_code,
    ]
    assert statuses == [200, 200, 400]

    # The middleware records a request after its response is sent, so the client can
    # ask /metrics before the second request's observation lands: ask again briefly.
    counted = 'rtp_serving_request_seconds_count{route="/v1/recommendations",status="2xx"} 2.0'
    for _ in range(200):
        text = client.get("/metrics", headers=AUTH).text
        if counted in text:
            break
        time.sleep(0.01)

    lines = [line for line in text.splitlines() if "request_seconds_count" in line]
    assert counted in text, lines
    assert 'rtp_serving_fallbacks_total{fallback="trending",reason="unknown_user"} 1.0' in text
    assert 'rtp_serving_events_total{outcome="malformed_json"} 1.0' in text


class Blocking(FakeRecommender):
    """Holds every request until ``release`` is set; ``started`` counts the calls."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.started = threading.Semaphore(0)

    def recommend(self, user_id: str, k: int, overrides: tuple = ()) -> Recommendation:
        self.started.release()
        self.release.wait(10)
        return super().recommend(user_id, k, overrides)


def wait_for_gauge(client: TestClient, value: float) -> None:
    gauge = f"rtp_serving_recommendations_in_flight {value}"
    for _ in range(1000):
        if gauge in client.get("/metrics", headers=AUTH).text:
            return
        threading.Event().wait(0.01)
    raise AssertionError(f"in flight never reached {value}")


def test_overload_is_shed_with_503_and_retry_after() -> None:
    """workers 1, max_waiting 0: with one request running, the next is shed at once
    (503 ``overloaded``, ``Retry-After``) before its parameters are read; once the
    first finishes, requests are served."""
    service = FakeService()
    service.recommender = blocking = Blocking()
    limits = {"workers": 1, "max_waiting": 0}
    config = ServingConfig(model_base="unused", token=TOKEN, limits=limits)
    with TestClient(create_app(config, service)) as client:  # type: ignore[arg-type]
        results: list[int] = []
        held = threading.Thread(
            target=lambda: results.append(
                client.get("/v1/recommendations?user_id=u", headers=AUTH).status_code
            )
        )
        held.start()
        assert blocking.started.acquire(timeout=10)
        shed = client.get("/v1/recommendations?user_id=v&color=red", headers=AUTH)
        assert shed.status_code == 503
        assert shed.json()["error"] == "overloaded"
        assert shed.headers["Retry-After"] == "1"
        assert client.get("/healthz").status_code == 200  # other routes are not limited
        blocking.release.set()
        held.join(10)
        assert results == [200]
        assert client.get("/v1/recommendations?user_id=w", headers=AUTH).status_code == 200
        metrics = client.get("/metrics", headers=AUTH).text
        assert 'rtp_serving_errors_total{kind="overloaded"} 1.0' in metrics
        assert "rtp_serving_recommendations_in_flight 0.0" in metrics


def test_a_full_queue_sheds_its_oldest_waiter_and_serves_the_newest() -> None:
    """workers 1, max_waiting 1: u runs, v waits; w arrives at the full queue, so v
    is shed and w waits; when u finishes, w runs."""
    service = FakeService()
    service.recommender = blocking = Blocking()
    limits = {"workers": 1, "max_waiting": 1, "max_wait_ms": 60_000}
    config = ServingConfig(model_base="unused", token=TOKEN, limits=limits)
    with TestClient(create_app(config, service)) as client:  # type: ignore[arg-type]
        results: dict[str, int] = {}

        def ask(user: str) -> threading.Thread:
            def run() -> None:
                url = f"/v1/recommendations?user_id={user}"
                results[user] = client.get(url, headers=AUTH).status_code

            thread = threading.Thread(target=run)
            thread.start()
            return thread

        threads = [ask("u")]
        assert blocking.started.acquire(timeout=10)
        threads.append(ask("v"))
        wait_for_gauge(client, 2.0)
        threads.append(ask("w"))
        threads[1].join(10)
        assert results == {"v": 503}
        blocking.release.set()
        for thread in threads:
            thread.join(10)
        assert results == {"u": 200, "v": 503, "w": 200}
        assert [user for user, _ in service.recommender.calls] == ["u", "w"]


# --- fuzzing: no input makes the HTTP layer answer 5xx ---------------------------------

_QUERY_KEYS = st.sampled_from(["user_id", "k", "surface", "color", "", "user_id[]"])
_QUERY_VALUES = st.text(st.characters(codec="utf-8"), max_size=40) | st.integers().map(str)
_JSON = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=6)
    ),
    max_leaves=20,
)


_FIXTURE_OK = [HealthCheck.function_scoped_fixture]


@pytest.fixture(scope="module")
def fuzz_client() -> Iterator[TestClient]:
    config = ServingConfig(model_base="unused", token=TOKEN, limits={"max_body_bytes": 4096})
    with TestClient(create_app(config, FakeService())) as test_client:  # type: ignore[arg-type]
        yield test_client


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.tuples(_QUERY_KEYS, _QUERY_VALUES), max_size=5))
def test_any_query_gets_a_4xx_or_an_answer_never_5xx(fuzz_client: TestClient, pairs) -> None:
    response = fuzz_client.get("/v1/recommendations", params=pairs, headers=AUTH)
    assert response.status_code < 500, response.text
    assert "error" in response.json() or response.status_code == 200


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    _JSON
    | st.builds(lambda e, k, v: {**event(), k: v}, st.none(), st.text(max_size=12), _JSON)
    | st.lists(st.builds(lambda v: {**event(), "watch_ms": v}, _JSON), max_size=3)
)
def test_any_event_body_gets_a_4xx_or_202_never_5xx(fuzz_client: TestClient, body) -> None:
    response = fuzz_client.post("/v1/events", content=json.dumps(body), headers=AUTH)
    assert response.status_code < 500, response.text


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(max_size=600))
def test_any_bytes_as_an_event_body_get_a_4xx_never_5xx(fuzz_client: TestClient, raw) -> None:
    response = fuzz_client.post("/v1/events", content=raw, headers=AUTH)
    assert response.status_code < 500, response.text


def test_service_metrics_stay_per_app_after_feast_metrics_is_imported() -> None:
    """``feast.metrics`` (imported lazily by Feast's online reads) switches a
    ``prometheus_client`` imported after it to shared multiprocess values; the
    service imports ``prometheus_client`` first, so its registries stay its own."""
    import os
    import subprocess
    import sys

    code = (
        "import serving.app\n"
        "import feast.metrics\n"
        "from serving.metrics import ServingMetrics\n"
        "a, b = ServingMetrics(), ServingMetrics()\n"
        "a.errors.labels('x').inc()\n"
        "b.errors.labels('x')\n"
        "print(b.registry.get_sample_value('rtp_serving_errors_total', {'kind': 'x'}))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("PROMETHEUS_MULTIPROC")}
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        env=env,
    )
    assert out.stdout.strip() == "0.0", out.stdout + out.stderr
