"""The closed loop against a fake service: what it sends back is what the simulator's
user model makes of what was shown, and an unavailable service is retried, counted
and finally given up on, never a crash."""

from __future__ import annotations

import json

import pytest

from rtp.simulator.closed_loop import IMPRESSION, Backoff, ClosedLoop
from rtp.simulator.config import SimulatorConfig
from rtp.simulator.service_client import ServiceClient, Unavailable
from rtp.simulator.simulation import simulate
from tests.helpers.clock import FakeClock

CONFIG = SimulatorConfig(n_events=0, n_users=20, n_items=200, n_topics=8, seed=3)
ITEM_IDS = simulate(CONFIG).catalogue.item_ids


class FakeService:
    """Answers the first items of the catalogue; fails the calls listed in ``down``
    (0-based call numbers) with 503."""

    def __init__(self, item_ids: list[str], down: set = frozenset()):
        self.item_ids, self.down, self.calls = item_ids, set(down), 0
        self.responses: dict[str, tuple[int, list[str]]] = {}
        self.posted: list[dict] = []
        self.now_ms = 1_000_000

    def wall_ms(self) -> int:
        """A second passes between two looks at the wall clock."""
        self.now_ms += 1000
        return self.now_ms

    def _maybe_fail(self) -> None:
        self.calls += 1
        if self.calls - 1 in self.down or "all" in self.down:
            raise Unavailable("http_503", "down", retry_after_s=None)

    def recommend(self, user_id: str, k: int) -> dict:
        self._maybe_fail()
        request_id = f"r{len(self.responses)}"
        start = (len(self.responses) * 7) % (len(self.item_ids) - k)
        items = self.item_ids[start : start + k]
        self.responses[request_id] = (self.now_ms, items)
        return {
            "request_id": request_id,
            "items": [{"item_id": i} for i in items],
            "variant": "v" + str(len(self.responses) % 2),
            "fallback": None,
            "feature_age_s": 1.0,
        }

    def post_events(self, body: bytes) -> int:
        self._maybe_fail()
        events = json.loads(body)
        self.posted += events
        return len(events)


def loop(service: FakeService, clock: FakeClock, **kwargs) -> ClosedLoop:
    sim = simulate(CONFIG)
    return ClosedLoop(
        sim,
        service,  # type: ignore[arg-type]
        clock=clock,
        sleep=clock.sleep,
        wall_ms=service.wall_ms,
        **kwargs,
    )


def test_users_react_to_what_the_service_showed() -> None:
    service, clock = FakeService(ITEM_IDS), FakeClock()
    stats = loop(service, clock, k=10, events=500).run()
    assert stats.stopped is None
    assert stats.events_published == len(service.posted) >= 500
    assert stats.shown == 10 * len(service.responses) == 10 * stats.sessions
    ids = [e["event_id"] for e in service.posted]
    assert len(ids) == len(set(ids))
    for event in service.posted:
        assert event["event_type"] != IMPRESSION  # the service logs those
        shown_ms, items = service.responses[event["context"]["request_id"]]
        assert event["item_id"] in items
        assert items[event["context"]["position"]] == event["item_id"]
        ts = event["timestamp"]
        if isinstance(ts, int):  # web users send RFC 3339
            # After its exposure, before the next response (any user's, so its user's).
            assert shown_ms < ts < next_response_ms(service, shown_ms)
    # Every shown item gets exactly one of view / skip / hide (the watch decision).
    decisions = [e for e in service.posted if e["event_type"] in ("view", "skip", "hide")]
    assert len(decisions) == stats.shown
    assert sum(stats.sessions_by_variant.values()) == stats.sessions
    # The fake service walks the catalogue 7 items a response, 10 at a time: a user
    # asking again soon is shown some items a second time.
    assert 0 < sum(stats.repeats_by_variant.values()) < stats.shown
    assert sum(stats.shown_by_variant.values()) == stats.shown


def test_unavailable_service_is_retried_with_backoff_and_counted() -> None:
    service, clock = (
        FakeService(ITEM_IDS, down={0, 1, 2, 5}),
        FakeClock(),
    )
    stats = loop(service, clock, events=50, backoff=Backoff(0.5, 4.0)).run()
    assert stats.stopped is None and stats.events_published >= 50
    assert stats.unavailable == {"http_503": 4}
    assert stats.backoff_s == pytest.approx(0.5 + 1.0 + 2.0 + 0.5)  # reset after a success
    assert clock.now == pytest.approx(stats.backoff_s)


def test_a_service_that_stays_down_stops_the_loop_not_the_process() -> None:
    service, clock = FakeService(ITEM_IDS, down={"all"}), FakeClock()
    stats = loop(service, clock, events=50, give_up_s=30.0).run()
    assert stats.stopped is not None and "no answer for 30 s" in stats.stopped
    assert stats.events_published == 0 and stats.sessions == 0
    assert 30.0 <= clock.now <= 40.0
    assert stats.unavailable["http_503"] >= 6


def test_rate_spaces_the_published_events() -> None:
    service, clock = FakeService(ITEM_IDS), FakeClock()
    stats = loop(service, clock, events=200, rate=100.0).run()
    # The first batch goes at once; the rest wait for their share of the second.
    assert clock.now == pytest.approx((stats.events_published - len_last(service)) / 100.0)


def next_response_ms(service: FakeService, after_ms: int) -> int:
    return min((ms for ms, _ in service.responses.values() if ms > after_ms), default=2**62)


def len_last(service: FakeService) -> int:
    last = service.posted[-1]["context"]["request_id"]
    return sum(e["context"]["request_id"] == last for e in service.posted)


def test_unreachable_url_raises_unavailable() -> None:
    from rtp.local_servers import free_port

    client = ServiceClient(f"http://127.0.0.1:{free_port()}", timeout_s=1.0)
    with pytest.raises(Unavailable) as raised:
        client.recommend("u1", 5)
    assert raised.value.reason == "unreachable"
    with pytest.raises(ValueError, match="http"):
        ServiceClient("localhost:8080")
