"""Publish a simulated stream to Pub/Sub at a target rate (``rtp simulate --publish-topic``).

Each message carries the line as data and two attributes: ``event_ts`` (event time,
epoch ms as a string, what the streaming job reads as its ``timestamp_attribute``;
the publish time when the line has no usable timestamp) and ``line`` (the 0-based
line number, to join dead letters with the simulator's labels). The client honours
``PUBSUB_EMULATOR_HOST``; under the emulator a missing topic is created.

With an uploads topic, each item released after the stream's start is published
there as item metadata (``beam_pipelines.items``' contract: id, title, topic,
duration, upload time; not the simulator's latent quality or popularity) just
before the first event at or after its release, so the item pipeline sees it
"uploaded" while the stream runs; attribute ``upload_ts`` (epoch ms).
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import pubsub_v1

from rtp.simulator.encoding import dumps
from rtp.simulator.records import ItemInfo
from rtp.simulator.simulation import SimRecord

_TOPIC_PATH = re.compile(r"^projects/[^/]+/topics/[^/]+$")
_PRUNE_EVERY = 1000
_RESULT_TIMEOUT_S = 120.0


@dataclasses.dataclass(frozen=True)
class PublishStats:
    """Outcome of a publish run. ``achieved_rate``: acknowledged messages per second."""

    published: int
    failed: int
    elapsed_s: float
    achieved_rate: float
    uploads: int = 0  # item metadata messages acknowledged on the uploads topic

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class TokenBucket:
    """Paces callers to ``rate`` tokens per second, allowing bursts of ``burst`` tokens."""

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if rate <= 0:
            raise ValueError(f"rate must be > 0 events/s, got {rate}")
        self.rate = rate
        # A tenth of a second's worth smooths sleep jitter without visible bursts.
        self.burst = max(1.0, rate / 10) if burst is None else burst
        self._clock, self._sleep = clock, sleep
        self._tokens = self.burst
        self._last = clock()

    def take(self) -> None:
        """Block until one token is available, then spend it."""
        while True:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            if self._tokens >= 1.0 - 1e-9:  # float slack: never spin on a 1e-17 deficit
                self._tokens -= 1.0
                return
            self._sleep((1.0 - self._tokens) / self.rate)


def batch_settings_for(rate: float | None) -> pubsub_v1.types.BatchSettings:
    """Batches that flush often enough for ``rate`` (events/s; None = unpaced)."""
    if rate is None:
        return pubsub_v1.types.BatchSettings(
            max_messages=1000, max_bytes=4_000_000, max_latency=0.05
        )
    latency = min(0.05, max(0.005, 100.0 / rate))  # ~100 messages or 50 ms a batch
    messages = int(min(1000, max(10, rate * latency * 2)))
    return pubsub_v1.types.BatchSettings(
        max_messages=messages, max_bytes=4_000_000, max_latency=latency
    )


def make_publisher(rate: float | None) -> pubsub_v1.PublisherClient:
    """A client with batching for ``rate`` and bounded in-flight messages."""
    flow = pubsub_v1.types.PublishFlowControl(
        message_limit=10_000,
        byte_limit=64 * 1024 * 1024,
        limit_exceeded_behavior=pubsub_v1.types.LimitExceededBehavior.BLOCK,
    )
    return pubsub_v1.PublisherClient(
        batch_settings=batch_settings_for(rate),
        publisher_options=pubsub_v1.types.PublisherOptions(flow_control=flow),
    )


def ensure_topic(publisher: pubsub_v1.PublisherClient, topic_path: str) -> None:
    """Create ``topic_path`` if it does not exist (meant for the emulator)."""
    with contextlib.suppress(gexc.AlreadyExists):
        publisher.create_topic(name=topic_path)


def attributes(record: SimRecord, now_ms: int) -> dict[str, str]:
    """``event_ts`` (event time or ``now_ms``, epoch ms) and ``line``."""
    event_ts = record.event_time_ms if record.event_time_ms is not None else now_ms
    return {"event_ts": str(event_ts), "line": str(record.line)}


class _Outcomes:
    """Counts finished publish futures; keeps only unfinished ones in memory."""

    def __init__(self) -> None:
        self.pending: list[concurrent.futures.Future] = []
        self.ok = 0
        self.failed = 0
        self._prune_at = _PRUNE_EVERY

    def add(self, future: concurrent.futures.Future) -> None:
        self.pending.append(future)
        if len(self.pending) >= self._prune_at:
            self._collect(wait=False)
            # Amortised O(1): never rescan a list that is still mostly in flight.
            self._prune_at = max(_PRUNE_EVERY, 2 * len(self.pending))

    def _collect(self, wait: bool) -> None:
        if wait:
            concurrent.futures.wait(self.pending, timeout=_RESULT_TIMEOUT_S)
        still = []
        for future in self.pending:
            if not future.done():
                still.append(future)
            elif future.exception() is None:
                self.ok += 1
            else:
                self.failed += 1
        self.pending = still

    def finish(self) -> None:
        self._collect(wait=True)
        self.failed += len(self.pending)  # timed out
        self.pending = []


@dataclasses.dataclass(frozen=True)
class Upload:
    """An item's metadata message and its release (upload) time."""

    release_ms: int
    data: bytes


def upload_message(item: ItemInfo) -> bytes:
    """What an upload service would publish: no latent ground truth."""
    return dumps(
        {
            "item_id": item.item_id,
            "title": item.title,
            "topic": item.topic,
            "duration_ms": item.duration_ms,
            "upload_time": item.release_ms,
        }
    )


def uploads_after(items: Iterable[ItemInfo], start_ms: int) -> list[Upload]:
    """Items released after ``start_ms``, oldest release first (earlier ones are the
    starting catalogue: the ``items.jsonl`` sidecar)."""
    released = sorted((i for i in items if i.release_ms > start_ms), key=lambda i: i.release_ms)
    return [Upload(i.release_ms, upload_message(i)) for i in released]


def _topic_client(
    topic_paths: Iterable[str],
    rate: float | None,
    publisher: pubsub_v1.PublisherClient | None,
    create_topic: bool | None,
) -> pubsub_v1.PublisherClient:
    for path in topic_paths:
        if not _TOPIC_PATH.match(path):
            raise ValueError(f"topic_path must be projects/P/topics/T, got {path!r}")
    client = make_publisher(rate) if publisher is None else publisher
    if create_topic or (create_topic is None and os.environ.get("PUBSUB_EMULATOR_HOST")):
        for path in topic_paths:
            ensure_topic(client, path)
    return client


def publish_records(
    records: Iterable[SimRecord],
    topic_path: str,
    rate: float | None = None,
    publisher: pubsub_v1.PublisherClient | None = None,
    create_topic: bool | None = None,
    uploads: Sequence[Upload] = (),
    uploads_topic: str | None = None,
) -> PublishStats:
    """Publish every record to ``topic_path`` at ``rate`` events/s (None: unpaced),
    and each of ``uploads`` to ``uploads_topic`` before the first event at or after
    its release (the rest at the end).

    ``create_topic`` None means: create it only under ``PUBSUB_EMULATOR_HOST``.
    Returns once every message is acknowledged or failed.
    """
    if uploads and uploads_topic is None:
        raise ValueError("uploads need an uploads_topic")
    topics = [topic_path, *([uploads_topic] if uploads_topic else [])]
    client = _topic_client(topics, rate, publisher, create_topic)
    bucket = TokenBucket(rate) if rate else None
    outcomes, uploaded = _Outcomes(), _Outcomes()
    pending = collections.deque(uploads)

    def upload_until(t_ms: float) -> None:
        while pending and pending[0].release_ms <= t_ms:
            upload = pending.popleft()
            attrs = {"upload_ts": str(upload.release_ms)}
            uploaded.add(client.publish(uploads_topic, upload.data, **attrs))

    started = time.monotonic()
    for record in records:
        if record.event_time_ms is not None:
            upload_until(record.event_time_ms)
        if bucket is not None:
            bucket.take()
        attrs = attributes(record, int(time.time() * 1000))
        outcomes.add(client.publish(topic_path, record.data, **attrs))
    upload_until(float("inf"))
    outcomes.finish()
    uploaded.finish()
    elapsed = time.monotonic() - started
    if publisher is None:
        client.stop()
    rate_achieved = outcomes.ok / elapsed if elapsed > 0 else 0.0
    return PublishStats(
        outcomes.ok,
        outcomes.failed + uploaded.failed,
        round(elapsed, 3),
        round(rate_achieved, 1),
        uploads=uploaded.ok,
    )
