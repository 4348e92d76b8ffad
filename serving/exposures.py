"""Exposure logging: one event per item a response showed, published through the
service's Pub/Sub publisher (``POST /v1/events``'s ``EventPublisher``, one publish
request per batch: ``publish_batch``), off the request path.

A request only appends what it showed to a bounded buffer (a lock and an append).
A background thread drains the buffer every ``interval_s`` seconds, builds the
events and publishes them ``batch_size`` at a time. When the buffer already holds
``capacity`` exposures, a response's exposures are dropped, all of them (an
experiment's attribution needs whole responses), and counted
``rtp_serving_exposures_total{outcome="dropped"}``; a batch Pub/Sub does not
acknowledge is counted ``failed`` (the client library has already retried it).

An exposure event (``EXPOSURE_CONTEXT`` keys in its context) has the event id
``<request_id>-<position>``, so a redelivery is deduplicated downstream; its time
is the response's (epoch milliseconds); ``position`` is 0-based.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
from collections.abc import Callable

from beam_pipelines.events import EngagementEvent
from serving.config import ExposuresConfig
from serving.metrics import ServingMetrics

LOG = logging.getLogger(__name__)
EXPOSURE_CONTEXT = ("position", "request_id", "experiment", "variant", "source")
Publish = Callable[[list[EngagementEvent]], list[str]]
"""Blocking: message ids once published, an exception otherwise."""


@dataclasses.dataclass(frozen=True, slots=True)
class Shown:
    """What one response showed, in order."""

    request_id: str
    user_id: str
    item_ids: tuple[str, ...]
    sources: tuple[str, ...]
    at_ms: int
    surface: str | None = None
    experiment: str | None = None
    variant: str | None = None

    def events(self, event_type: str) -> list[EngagementEvent]:
        assigned = {} if self.experiment is None else {"experiment": self.experiment}
        if self.variant is not None:
            assigned["variant"] = self.variant
        return [
            EngagementEvent(
                event_id=f"{self.request_id}-{position}",
                user_id=self.user_id,
                item_id=item_id,
                event_type=event_type,
                timestamp_ms=self.at_ms,
                surface=self.surface,
                context={
                    "position": position,
                    "request_id": self.request_id,
                    **assigned,
                    "source": source,
                },
            )
            for position, (item_id, source) in enumerate(
                zip(self.item_ids, self.sources, strict=True)
            )
        ]


class ExposureLog:
    """The bounded buffer and its publishing thread (``start``, ``offer``, ``stop``)."""

    def __init__(self, publish: Publish, metrics: ServingMetrics, config: ExposuresConfig) -> None:
        self.publish = publish
        self.config = config
        self._pending: collections.deque[Shown] = collections.deque()
        self._queued = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._published = metrics.exposures.labels("published")
        self._dropped = metrics.exposures.labels("dropped")
        self._failed = metrics.exposures.labels("failed")
        self._failing = False  # log a Pub/Sub outage once, not every drain

    def offer(self, shown: Shown) -> bool:
        """Queue a response's exposures; False (and counted) when the buffer is full."""
        n = len(shown.item_ids)
        with self._lock:
            accepted = self._queued + n <= self.config.capacity
            if accepted:
                self._pending.append(shown)
                self._queued += n
        if not accepted:
            self._dropped.inc(n)
        return accepted

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="exposures", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 15.0) -> None:
        """Publish what is buffered (waiting up to ``timeout_s``), then stop; whatever
        could not be published by then is counted as dropped."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        left = self._take()
        if left:
            self._dropped.inc(sum(len(s.item_ids) for s in left))

    def _take(self) -> list[Shown]:
        with self._lock:
            taken = list(self._pending)
            self._pending.clear()
            self._queued = 0
        return taken

    def _run(self) -> None:
        while not self._stopping.wait(self.config.interval_s):
            self.drain()
        self.drain()

    def drain(self) -> None:
        """Publish everything buffered now, ``batch_size`` events per call."""
        events = [e for shown in self._take() for e in shown.events(self.config.event_type)]
        size = self.config.batch_size
        for start in range(0, len(events), size):
            batch = events[start : start + size]
            try:
                self.publish(batch)
            except Exception as e:  # PublishError, or anything a publisher raises
                if not self._failing:
                    LOG.warning("exposure events not published (counted as failed): %s", e)
                self._failing = True
                self._failed.inc(len(batch))
            else:
                if self._failing:
                    LOG.warning("exposure events are published again")
                self._failing = False
                self._published.inc(len(batch))
