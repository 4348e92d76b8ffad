"""The event log of a topic: a subscription of its own whose messages are written
to a JSONL file, each event once (``rtp demo --experiment`` reads its exposures and
engagements back for the report).

Pub/Sub delivers at least once: a redelivered message (same ``event_id``) is
acknowledged and counted, not written again. A message that is not a JSON object
with an ``event_id`` is written as it is and counted ``unreadable``.
"""

from __future__ import annotations

import contextlib
import json
import pathlib
import threading
import time
from typing import Any, Self

from beam_pipelines.experiments.attribution import EXPOSURE_TYPE


class TopicLog:
    """``subscription``: created on ``topic`` when entered (before anything is
    published, so that nothing is missed); ``path``: the JSONL written."""

    def __init__(self, topic: str, subscription: str, path: pathlib.Path) -> None:
        self.topic, self.subscription, self.path = topic, subscription, path
        self.written = 0
        self.redelivered = 0
        self.unreadable = 0
        self.exposures = 0  # logged exposures (``_is_exposure``)
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        self._last_write = time.monotonic()
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Self:
        from google.cloud import pubsub_v1

        with contextlib.ExitStack() as stack:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = stack.enter_context(open(self.path, "wb"))
            subscriber = pubsub_v1.SubscriberClient()
            stack.callback(subscriber.close)
            subscriber.create_subscription(
                name=self.subscription, topic=self.topic, ack_deadline_seconds=60
            )
            future = subscriber.subscribe(self.subscription, self._received)
            stack.callback(_cancel, future)
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _received(self, message: Any) -> None:
        data = message.data
        try:
            event = json.loads(data)
            event_id = event["event_id"]
        except (ValueError, TypeError, KeyError):
            event, event_id = None, None
        with self._lock:
            if event_id is not None and event_id in self._seen:
                self.redelivered += 1
            else:
                if event_id is None:
                    self.unreadable += 1
                else:
                    self._seen.add(event_id)
                    self.exposures += _is_exposure(event)
                self._file.write(data + b"\n")
                self._file.flush()
                self.written += 1
                self._last_write = time.monotonic()
        message.ack()

    def wait_quiet(self, exposures: int, quiet_s: float = 3.0, timeout_s: float = 120.0) -> bool:
        """Until at least ``exposures`` exposures are written and nothing new came for
        ``quiet_s`` seconds; False if ``timeout_s`` passed first."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                done = self.exposures >= exposures
                quiet = time.monotonic() - self._last_write >= quiet_s
            if done and quiet:
                return True
            time.sleep(0.2)
        return False

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {
                "written": self.written,
                "exposures": self.exposures,
                "redelivered": self.redelivered,
                "unreadable": self.unreadable,
            }


def _is_exposure(event: Any) -> bool:
    """A logged exposure: the exposure type with the request id of its response."""
    if not isinstance(event, dict) or event.get("event_type") != EXPOSURE_TYPE:
        return False
    context = event.get("context")
    return isinstance(context, dict) and "request_id" in context


def _cancel(future: Any) -> None:
    future.cancel()
    with contextlib.suppress(Exception):  # cancelled: result() raises, as documented
        future.result(timeout=10)
