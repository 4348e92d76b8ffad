"""The closed loop (``rtp simulate --closed-loop``): simulated users ask the running
service what to watch and react to what it shows.

Each session of a user is one ``GET /v1/recommendations``; the simulator's own user
model (``behaviour.Behaviour``: interests that drift and shift between sessions,
watch probability and watch ratio from the item's relevance and quality) reacts to
the items in the order shown, and the reactions (``view``, ``skip``, ``like``, ...)
go back through ``POST /v1/events``, one request per session. The service logs
what it showed (its exposure events), so the loop runs for real: service →
exposures + events → Pub/Sub → streaming job → features → service.

Two clocks. Interests evolve in simulated time, as in the open-loop stream (a user's
next session starts a log-normal gap of hours later), so a few minutes of loop
cover days of a user's life. Event times are wall-clock: a session's events are
stamped one millisecond apart, in order, from the moment its response arrived
(``watch_ms`` keeps the watch time), and the user's next request waits until the
clock has passed the last of them. So every reaction falls after the exposure that
caused it and before the user's next exposures: an item shown again is not credited
with the earlier session's reaction (the attribution join takes the most recent
exposure at or before an event). The service's exposures are the impressions: the
simulator publishes none of its own.

A service that is unreachable or answers 5xx/429 is retried with exponential
back-off (honouring ``Retry-After``), each failure counted by reason; after
``give_up_s`` seconds without a single success the loop stops and says so.
"""

from __future__ import annotations

import collections
import dataclasses
import heapq
import statistics
import time
from collections.abc import Callable
from typing import Any

from rtp.simulator.behaviour import SessionEvent, User
from rtp.simulator.encoding import dumps, event_object
from rtp.simulator.service_client import Refused, ServiceClient, Unavailable
from rtp.simulator.simulation import Simulation

IMPRESSION = "impression"  # the service logs these itself, as exposures
MAX_EVENTS_PER_POST = 500  # the service's default limits.max_events


@dataclasses.dataclass
class LoopStats:
    """What the loop did. ``shown``: items in the responses, the exposures the
    service should have logged; ``unavailable``: failed calls by reason (each was
    retried); ``events_failed``: events given up on when the loop stopped."""

    sessions: int = 0
    shown: int = 0
    events_published: int = 0
    events_failed: int = 0
    events_by_type: collections.Counter[str] = dataclasses.field(
        default_factory=collections.Counter
    )
    unavailable: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    backoff_s: float = 0.0
    empty_responses: int = 0
    unknown_items: int = 0
    fallbacks: dict[str, collections.Counter[str]] = dataclasses.field(default_factory=dict)
    """Variant → the service's fallbacks (``trending``, ...) in its responses."""
    sessions_by_variant: collections.Counter[str] = dataclasses.field(
        default_factory=collections.Counter
    )
    feature_age_s: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    shown_by_variant: collections.Counter[str] = dataclasses.field(
        default_factory=collections.Counter
    )
    repeats_by_variant: collections.Counter[str] = dataclasses.field(
        default_factory=collections.Counter
    )
    """Items shown to a user who had been shown them before in the loop: the user
    model reacts to a repeat as to a first showing (it has no novelty effect)."""
    stopped: str | None = None
    elapsed_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        ages = {v: round(statistics.median(a), 1) for v, a in self.feature_age_s.items() if a}
        return {
            "sessions": self.sessions,
            "shown": self.shown,
            "events_published": self.events_published,
            "events_failed": self.events_failed,
            "events_by_type": dict(sorted(self.events_by_type.items())),
            "unavailable": dict(sorted(self.unavailable.items())),
            "backoff_s": round(self.backoff_s, 1),
            "empty_responses": self.empty_responses,
            "unknown_items": self.unknown_items,
            "fallbacks_by_variant": {v: dict(c) for v, c in sorted(self.fallbacks.items())},
            "sessions_by_variant": dict(sorted(self.sessions_by_variant.items())),
            "median_feature_age_s_by_variant": dict(sorted(ages.items())),
            "repeat_share_by_variant": {
                v: round(self.repeats_by_variant[v] / n, 3)
                for v, n in sorted(self.shown_by_variant.items())
            },
            "stopped": self.stopped,
            "elapsed_s": round(self.elapsed_s, 1),
        }


class Backoff:
    """Exponential back-off, seconds: ``first_s``, doubling up to ``max_s``; a
    ``Retry-After`` from the service replaces the computed delay (up to ``max_s``)."""

    def __init__(self, first_s: float = 0.2, max_s: float = 5.0) -> None:
        if not 0 < first_s <= max_s:
            raise ValueError(f"need 0 < first_s <= max_s, got {first_s}, {max_s}")
        self.first_s, self.max_s = first_s, max_s
        self._next = first_s

    def delay(self, retry_after_s: float | None = None) -> float:
        delay = self._next if retry_after_s is None else min(retry_after_s, self.max_s)
        self._next = min(self._next * 2, self.max_s)
        return delay

    def reset(self) -> None:
        self._next = self.first_s


class ServiceGone(RuntimeError):
    """No call succeeded for ``give_up_s`` seconds."""


class ClosedLoop:
    """Drives the users of ``sim`` (in their state after the lines it has produced,
    e.g. a history) against the service behind ``client``.

    ``k``: items asked per session; ``events``: the users' events to publish (the
    last session is published whole); ``rate``: the most events per second
    (None: as fast as the service answers); ``give_up_s``: seconds without any
    successful call before the loop stops. ``clock``/``sleep``/``wall_ms`` are
    injectable for tests (monotonic seconds, a sleep, epoch milliseconds).
    """

    def __init__(
        self,
        sim: Simulation,
        client: ServiceClient,
        *,
        k: int = 10,
        events: int = 10_000,
        rate: float | None = None,
        give_up_s: float = 60.0,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        wall_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        if k < 1 or events < 0 or give_up_s <= 0 or (rate is not None and rate <= 0):
            raise ValueError(
                f"need k >= 1, events >= 0, give_up_s > 0 and rate > 0 events/s, "
                f"got k={k}, events={events}, give_up_s={give_up_s}, rate={rate}"
            )
        self.sim, self.client = sim, client
        self.k, self.events, self.give_up_s = k, events, give_up_s
        self.backoff = backoff or Backoff()
        self._clock, self._sleep, self._wall_ms = clock, sleep, wall_ms
        self._min_gap_s = 1.0 / rate if rate else 0.0
        self._next_publish = clock()
        self._index = {item_id: i for i, item_id in enumerate(sim.catalogue.item_ids)}
        self._last_success = clock()
        self._shown_to: dict[str, set[str]] = {}
        self.stats = LoopStats()

    def run(self) -> LoopStats:
        """Sessions until ``events`` events are published (or failed), or the service
        is gone for ``give_up_s`` (``stats.stopped`` says so)."""
        started = self._clock()
        behaviour, users = self.sim.behaviour, self.sim.users
        heap = []
        for user in users:
            user.pending.clear()  # a history's unfinished session ends here
            start = behaviour.next_session_start(user) if user.sessions else None
            heap.append((start or behaviour.first_session_start(), user.idx))
        heapq.heapify(heap)
        self._last_success = self._clock()
        try:
            while self.stats.events_published + self.stats.events_failed < self.events:
                t0, idx = heapq.heappop(heap)
                self._session(users[idx], t0)
                heapq.heappush(heap, (behaviour.next_session_start(users[idx]), idx))
        except ServiceGone as gone:
            self.stats.stopped = str(gone)
        self.stats.elapsed_s = self._clock() - started
        return self.stats

    def _session(self, user: User, t0: int) -> None:
        body = self._retrying(lambda: self.client.recommend(user.user_id, self.k))
        response_ms = self._wall_ms()
        self._record(body, user.user_id)
        feed = [self._index[i["item_id"]] for i in body["items"] if i["item_id"] in self._index]
        self.stats.unknown_items += len(body["items"]) - len(feed)
        if not feed:
            self.stats.empty_responses += 1
            return
        self.sim.behaviour.start_session(user, t0, feed)
        reactions = [e for e in user.pending if e.event_type != IMPRESSION]
        user.pending.clear()
        lines = [
            self._line(user, event, response_ms + 1 + n, body["request_id"])
            for n, event in enumerate(reactions)
        ]
        self.stats.sessions += 1
        for start in range(0, len(lines), MAX_EVENTS_PER_POST):
            self._publish(lines[start : start + MAX_EVENTS_PER_POST])
        while self._wall_ms() <= response_ms + len(lines):  # at most a few ms
            self._sleep(0.001)

    def _record(self, body: dict[str, Any], user_id: str) -> None:
        stats = self.stats
        items = [i["item_id"] for i in body["items"]]
        stats.shown += len(items)
        variant = body.get("variant") or "-"
        stats.sessions_by_variant[variant] += 1
        stats.shown_by_variant[variant] += len(items)
        before = self._shown_to.setdefault(user_id, set())
        stats.repeats_by_variant[variant] += sum(i in before for i in items)
        before.update(items)
        if body.get("fallback"):
            stats.fallbacks.setdefault(variant, collections.Counter())[body["fallback"]] += 1
        if body.get("feature_age_s") is not None:
            stats.feature_age_s.setdefault(variant, []).append(body["feature_age_s"])

    def _line(self, user: User, event: SessionEvent, ts: int, request_id: str | None) -> bytes:
        obj = event_object(
            self.sim.catalogue,
            user,
            event._replace(ts=ts),
            f"{request_id}-{event.position}-{event.event_type}",
        )
        obj["context"]["request_id"] = request_id
        self.stats.events_by_type[event.event_type] += 1
        return dumps(obj)

    def _publish(self, lines: list[bytes]) -> None:
        self._pace(len(lines))
        body = b"[" + b",".join(lines) + b"]"
        try:
            self.stats.events_published += self._retrying(lambda: self.client.post_events(body))
        except ServiceGone:
            self.stats.events_failed += len(lines)
            raise

    def _pace(self, n: int) -> None:
        """Hold the events to ``rate`` per second, on average."""
        wait = self._next_publish - self._clock()
        if wait > 0:
            self._sleep(wait)
        self._next_publish = max(self._next_publish, self._clock()) + n * self._min_gap_s

    def _retrying(self, call: Callable[[], Any]) -> Any:
        """``call()``, retried with back-off while the service is unavailable;
        ``ServiceGone`` after ``give_up_s`` without a success. ``Refused`` (a 4xx)
        is not retried: it stops the loop too, with the service's message."""
        while True:
            try:
                result = call()
            except Unavailable as e:
                self.stats.unavailable[e.reason] += 1
                if self._clock() - self._last_success > self.give_up_s:
                    raise ServiceGone(f"no answer for {self.give_up_s:g} s; last: {e}") from None
                delay = self.backoff.delay(e.retry_after_s)
                self.stats.backoff_s += delay
                self._sleep(delay)
                continue
            except Refused as e:
                raise ServiceGone(f"refused: {e}") from None
            self.backoff.reset()
            self._last_success = self._clock()
            return result
