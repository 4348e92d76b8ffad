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


def _records(args: argparse.Namespace):
    from beam_pipelines.simulator import SimulatorConfig, simulate

    config = SimulatorConfig(
        n_events=args.events,
        n_users=args.users,
        n_items=args.items,
        seed=args.seed,
        dirty_fraction=args.dirty_fraction,
    )
    return list(simulate(config))


def _expected_counts(records) -> dict[str, int]:
    counts: collections.Counter[str] = collections.Counter()
    for record in records:
        if record.is_clean:
            counts[json.loads(record.data)["user_id"]] += 1
    return dict(counts)


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
    log = open(out / "streaming.log", "wb")  # noqa: SIM115 - the child owns it until it exits
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _wait_for(store, expected: dict[str, int], deadline_s: float, job) -> dict[str, int]:
    users = sorted(expected)
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            counts = _store_counts(store, users)
        except Exception:  # the job creates the tables on its first write
            counts = {}
        if counts == expected or time.monotonic() > deadline or job.poll() is not None:
            return counts
        time.sleep(1.0)


def run_streaming_demo(args: argparse.Namespace, out: pathlib.Path) -> dict:
    from google.cloud import pubsub_v1

    from beam_pipelines.jobs_common import store_config
    from beam_pipelines.local_servers import pubsub_emulator, stop_process_group
    from beam_pipelines.simulator_publish import publish_records
    from feature_repo.store import FeatureStoreClient

    features = out / "features"
    features.mkdir(parents=True, exist_ok=True)
    records = _records(args)
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
                counts = _wait_for(store, expected, args.stream_timeout_s, job)
            elapsed = time.monotonic() - started
            time.sleep(2.0)  # dead letters are flushed at bundle ends
        finally:
            stop_process_group(job)
    applied = sum(counts.values())
    if counts != expected:
        raise RuntimeError(
            f"streaming job applied {applied} of {sum(expected.values())} clean events; "
            f"see {features / 'streaming.log'}"
        )
    letters = collections.Counter(
        json.loads(line)["reason"]
        for path in (features / "dead_letters").glob("*.jsonl")
        for line in path.read_text().splitlines()
    )
    return {
        "published": stats.published,
        "applied": applied,
        "users": len(counts),
        "dead_lettered_by_reason": dict(sorted(letters.items())),
        "seconds_from_first_publish_to_all_in_store": round(elapsed, 1),
    }
