"""Create the local stack's topics and subscriptions on the Pub/Sub emulator.

The same names and wiring as infra/terraform (events topic and the job's
subscription with a dead-letter policy, the job's dead-letter topic, the
undeliverable topic, an audit subscription on each dead-letter topic). Reads
``PUBSUB_EMULATOR_HOST`` and ``PUBSUB_PROJECT_ID``; waits up to 60 s for the
emulator; existing resources are left as they are.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time

from google.api_core import exceptions
from google.cloud import pubsub_v1

EVENTS_TOPIC = "engagement-events"
EVENTS_SUBSCRIPTION = "engagement-events-pipeline"
DEAD_LETTER_TOPIC = "engagement-dead-letters"
UNDELIVERABLE_TOPIC = "engagement-events-undeliverable"
MAX_DELIVERY_ATTEMPTS = 10


def _create(call, request: dict, timeout_s: float = 30.0) -> None:
    with contextlib.suppress(exceptions.AlreadyExists):  # a rerun keeps what exists
        call(request=request, timeout=timeout_s)


def init(project: str, deadline_s: float = 60.0) -> None:
    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    topic = lambda name: publisher.topic_path(project, name)  # noqa: E731
    subscription = lambda name: subscriber.subscription_path(project, name)  # noqa: E731
    give_up = time.monotonic() + deadline_s
    while True:  # the emulator's JVM takes a few seconds to listen
        try:
            _create(publisher.create_topic, {"name": topic(EVENTS_TOPIC)}, timeout_s=5)
            break
        except (exceptions.ServiceUnavailable, exceptions.DeadlineExceeded):
            if time.monotonic() > give_up:
                raise
            time.sleep(1)
    for name in (DEAD_LETTER_TOPIC, UNDELIVERABLE_TOPIC):
        _create(publisher.create_topic, {"name": topic(name)})
    _create(
        subscriber.create_subscription,
        {
            "name": subscription(EVENTS_SUBSCRIPTION),
            "topic": topic(EVENTS_TOPIC),
            "ack_deadline_seconds": 60,
            "retain_acked_messages": True,  # a restarted job seeks back (resume.py)
            "dead_letter_policy": {
                "dead_letter_topic": topic(UNDELIVERABLE_TOPIC),
                "max_delivery_attempts": MAX_DELIVERY_ATTEMPTS,
            },
        },
    )
    for name in (DEAD_LETTER_TOPIC, UNDELIVERABLE_TOPIC):
        _create(
            subscriber.create_subscription,
            {"name": subscription(f"{name}-audit"), "topic": topic(name)},
        )
    print(f"pubsub_init: topics and subscriptions ready in project {project}")


if __name__ == "__main__":
    if not os.environ.get("PUBSUB_EMULATOR_HOST"):
        sys.exit("pubsub_init: PUBSUB_EMULATOR_HOST is not set; this is for the emulator only")
    init(os.environ.get("PUBSUB_PROJECT_ID", "rtp-local"))
