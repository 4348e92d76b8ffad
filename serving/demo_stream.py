"""The streaming half of ``rtp demo``: emulator → streaming job → SQLite store.

Starts the Pub/Sub emulator, creates the topic and a subscription, starts the
streaming job as a subprocess (DirectRunner), publishes the simulated stream
(dirty records included) and waits until the store holds every clean event
exactly once, then stops the job and the emulator by process id.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import pathlib
import subprocess
import sys
import time

from feature_repo.features import USER_REALTIME

PROJECT = "rtp-demo"


# The demo publishes its stream as one backlog, which the emulator delivers out
# of order by up to ~20 minutes of event time; a 1-hour bound keeps those events
# while the simulator's injected late events (6 hours behind) stay late.
DEMO_ALLOWED_LATENESS_S = 3600


def _expected_counts(records) -> dict[str, int]:
    counts: collections.Counter[str] = collections.Counter()
    for record in records:
        if record.is_clean:
            counts[json.loads(record.data)["user_id"]] += 1
    return dict(counts)


def _dead_letters(directory: pathlib.Path) -> list[dict]:
    return [
        json.loads(line)
        for path in directory.glob("*.jsonl")
        for line in path.read_text().splitlines()
    ]


def _clean_ids_dead_lettered(records, directory: pathlib.Path) -> int:
    """Clean events the job dead-lettered as late (beyond the bound): accounted for, not lost.

    Only ``late`` letters count: a ``duplicate`` letter carries the id of a clean
    event that was applied once."""
    clean = {json.loads(r.data)["event_id"] for r in records if r.is_clean}
    return sum(
        1
        for letter in _dead_letters(directory)
        if letter["reason"] == "late" and letter.get("event_id") in clean
    )


def _store_counts(store, users: list[str]) -> dict[str, int]:
    counts = {}
    for start in range(0, len(users), 200):
        for user_id, row in store.read(USER_REALTIME, users[start : start + 200]).items():
            counts[user_id] = row["user_event_count"] if row else 0
    return counts


def _start_job(subscription: str, out: pathlib.Path) -> subprocess.Popen:
    argv = [sys.executable, "-m", "beam_pipelines.streaming"]
    argv += [f"--input_subscription={subscription}", f"--dead_letter_dir={out / 'dead_letters'}"]
    argv += [f"--store_path={out / 'online.db'}"]
    argv += [f"--allowed_lateness_s={DEMO_ALLOWED_LATENESS_S}"]
    log = open(out / "streaming.log", "wb")  # noqa: SIM115 - the child owns it until it exits
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _wait_for(store, expected, records, letters: pathlib.Path, deadline_s: float, job):
    """Until every clean event is in the store or a dead letter (or the deadline)."""
    users, total = sorted(expected), sum(expected.values())
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            counts = _store_counts(store, users)
        except Exception:  # the job creates the tables on its first write
            counts = {}
        accounted = sum(counts.values()) + _clean_ids_dead_lettered(records, letters)
        if accounted >= total or time.monotonic() > deadline or job.poll() is not None:
            return counts
        time.sleep(1.0)


def run_streaming_demo(args: argparse.Namespace, out: pathlib.Path, records: list) -> dict:
    """``records``: the simulated stream the demo wrote, published as it is."""
    from google.cloud import pubsub_v1

    from beam_pipelines.jobs_common import store_config
    from beam_pipelines.local_servers import pubsub_emulator, stop_process_group
    from beam_pipelines.simulator_publish import publish_records
    from feature_repo.store import FeatureStoreClient

    features = out / "features"
    features.mkdir(parents=True, exist_ok=True)
    expected = _expected_counts(records)
    with pubsub_emulator(PROJECT) as emulator:
        os.environ["PUBSUB_EMULATOR_HOST"] = emulator.address
        print(f"[2/3] Pub/Sub emulator on {emulator.address}; streaming job (DirectRunner)")
        publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
        topic = publisher.topic_path(PROJECT, "engagement-events")
        subscription = subscriber.subscription_path(PROJECT, "engagement-events-features")
        publisher.create_topic(name=topic)
        subscriber.create_subscription(name=subscription, topic=topic)
        job = _start_job(subscription, features)
        try:
            started = time.monotonic()
            stats = publish_records(records, topic, publisher=publisher)
            print(f"  published {stats.published} messages; waiting for the store to catch up")
            with FeatureStoreClient(store_config(None, str(features / "online.db"))) as store:
                counts = _wait_for(
                    store, expected, records, features / "dead_letters", args.stream_timeout_s, job
                )
            elapsed = time.monotonic() - started
            time.sleep(2.0)  # dead letters are flushed at bundle ends
        finally:
            stop_process_group(job)
    applied = sum(counts.values())
    clean_late = _clean_ids_dead_lettered(records, features / "dead_letters")
    if applied + clean_late != sum(expected.values()):
        raise RuntimeError(
            f"streaming job applied {applied} and dead-lettered {clean_late} of "
            f"{sum(expected.values())} clean events; see {features / 'streaming.log'}"
        )
    letters = collections.Counter(r["reason"] for r in _dead_letters(features / "dead_letters"))
    return {
        "published": stats.published,
        "applied": applied,
        "clean_events_dead_lettered_late": clean_late,
        "users": len(counts),
        "dead_lettered_by_reason": dict(sorted(letters.items())),
        "seconds_from_first_publish_to_all_in_store": round(elapsed, 1),
    }
