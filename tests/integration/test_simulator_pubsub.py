"""The simulator publishes to the real Pub/Sub emulator: counts, data and attributes."""

from __future__ import annotations

import time

from google.cloud import pubsub_v1

from rtp.simulator import publish
from rtp.simulator.config import SimulatorConfig
from rtp.simulator.simulation import simulate

PROJECT = "test-project"
TOPIC = f"projects/{PROJECT}/topics/engagement-events"
SUBSCRIPTION = f"projects/{PROJECT}/subscriptions/simulator-check"
RATE = 2000.0


def _pull_all(subscriber, expected: int, timeout_s: float = 60.0) -> dict[int, object]:
    """Messages by their ``line`` attribute (redeliveries collapse)."""
    received: dict[int, object] = {}
    deadline = time.monotonic() + timeout_s
    while len(received) < expected and time.monotonic() < deadline:
        response = subscriber.pull(
            request={"subscription": SUBSCRIPTION, "max_messages": 1000}, timeout=10
        )
        if not response.received_messages:
            continue
        for message in response.received_messages:
            received[int(message.message.attributes["line"])] = message.message
        ack_ids = [m.ack_id for m in response.received_messages]
        subscriber.acknowledge(request={"subscription": SUBSCRIPTION, "ack_ids": ack_ids})
    return received


def test_publish_2000_events_and_pull_them_back(pubsub_emulator, monkeypatch):
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator.address)
    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    publisher.create_topic(name=TOPIC)
    subscriber.create_subscription(name=SUBSCRIPTION, topic=TOPIC, ack_deadline_seconds=60)
    config = SimulatorConfig(n_events=2000, n_users=100, n_items=500, dirty_fraction=0.05)
    records = list(simulate(config))
    started_ms = int(time.time() * 1000)
    stats = publish.publish_records(records, TOPIC, rate=RATE)
    ended_ms = int(time.time() * 1000)
    assert stats.published == len(records) == 2105 and stats.failed == 0
    assert stats.achieved_rate <= RATE * 1.1
    assert stats.elapsed_s >= (len(records) - RATE / 10) / RATE

    received = _pull_all(subscriber, len(records))
    assert sorted(received) == [r.line for r in records]
    for record in records:
        message = received[record.line]
        assert message.data == record.data
        event_ts = int(message.attributes["event_ts"])
        if record.event_time_ms is None:
            assert started_ms <= event_ts <= ended_ms
        else:
            assert event_ts == record.event_time_ms
    subscriber.close()


def test_rtp_simulate_publishes_uploads_to_the_items_topic(pubsub_emulator, monkeypatch, capsys):
    """``rtp simulate --uploads-topic``: every item released during the stream reaches
    the real emulator as item metadata the item pipeline parses."""
    import json

    from beam_pipelines.items import parse_item
    from rtp.simulator import cli

    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator.address)
    uploads_topic = f"projects/{PROJECT}/topics/item-uploads"
    subscription = f"projects/{PROJECT}/subscriptions/uploads-check"
    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    publisher.create_topic(name=uploads_topic)
    subscriber.create_subscription(name=subscription, topic=uploads_topic)
    args = ["--events", "1500", "--users", "100", "--items", "800", "--seed", "3"]
    topic = f"projects/{PROJECT}/topics/events-with-uploads"
    assert cli.main([*args, "--publish-topic", topic, "--uploads-topic", uploads_topic]) == 0
    summary = json.loads(capsys.readouterr().out)
    expected = summary["publish"]["uploads"]
    assert expected > 0 and summary["publish"]["failed"] == 0
    received: dict[str, int] = {}
    deadline = time.monotonic() + 60
    while len(received) < expected and time.monotonic() < deadline:
        response = subscriber.pull(request={"subscription": subscription, "max_messages": 500})
        for message in response.received_messages:
            item = parse_item(message.message.data)
            received[item.item_id] = item.upload_ms
        if response.received_messages:
            subscriber.acknowledge(
                request={
                    "subscription": subscription,
                    "ack_ids": [m.ack_id for m in response.received_messages],
                }
            )
    assert len(received) == expected
    assert all(ms is not None for ms in received.values())
    subscriber.close()
