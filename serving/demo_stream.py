"""The streaming half of ``rtp demo``: emulator → streaming job → SQLite store.

``StreamingFeed`` starts the Pub/Sub emulator, creates the topic and a
subscription and starts the streaming job as a subprocess (DirectRunner); each
``feed(records)`` publishes a part of the simulated stream (dirty records
included) and waits until the store holds every clean event fed so far exactly
once. The job keeps running between parts, as it would in production; leaving
the context stops the job and the emulator by process id.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import pathlib
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from beam_pipelines.simulator import SimRecord
from feature_repo.features import USER_REALTIME

PROJECT = "rtp-demo"


# The demo publishes each part as one backlog, which the emulator delivers out of
# order: by up to ~20 minutes of event time for 200 users, by more than an hour
# for a few dozen (fewer events per hour of event time). A 2-hour bound keeps
# those events while the simulator's injected late events (6 hours behind) stay late.
DEMO_ALLOWED_LATENESS_S = 7200


def _clean_users(records: Sequence[SimRecord]) -> dict[str, str]:
    """event_id → user_id of every clean record."""
    users = {}
    for record in records:
        if record.is_clean:
            event = json.loads(record.data)
            users[event["event_id"]] = event["user_id"]
    return users


def _dead_letters(directory: pathlib.Path) -> list[dict]:
    return [
        json.loads(line)
        for path in directory.glob("*.jsonl")
        for line in path.read_text().splitlines()
    ]


def _late_by_user(clean: dict[str, str], directory: pathlib.Path) -> collections.Counter[str]:
    """Per user, clean events with a ``late`` letter: accounted for, not lost.

    Only ``late`` letters count: a ``duplicate`` letter carries the id of a clean
    event that was applied once. A ``late`` one may too (a copy of an applied
    event that arrived beyond the bound), so this can exceed the events not applied."""
    ids = {
        letter.get("event_id")
        for letter in _dead_letters(directory)
        if letter["reason"] == "late" and letter.get("event_id") in clean
    }
    return collections.Counter(clean[i] for i in ids)


def _store_counts(store, users: list[str]) -> dict[str, int]:
    counts = {}
    for start in range(0, len(users), 200):
        for user_id, row in store.read(USER_REALTIME, users[start : start + 200]).items():
            counts[user_id] = row["user_event_count"] if row else 0
    return counts


def _start_job(subscription: str, out: pathlib.Path, model_base: str | None) -> subprocess.Popen:
    argv = [sys.executable, "-m", "beam_pipelines.streaming"]
    argv += [f"--input_subscription={subscription}", f"--dead_letter_dir={out / 'dead_letters'}"]
    argv += [f"--store_path={out / 'online.db'}"]
    argv += [f"--allowed_lateness_s={DEMO_ALLOWED_LATENESS_S}"]
    if model_base:
        argv += [f"--model_base={model_base}"]
    log = open(out / "streaming.log", "wb")  # noqa: SIM115 - the child owns it until it exits
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _unaccounted(expected: dict[str, int], counts: dict[str, int], late) -> int:
    """Clean events neither in the store nor dead-lettered as late."""
    return sum(max(n - counts.get(u, 0) - late[u], 0) for u, n in expected.items())


def _wait_for(store, expected, clean, letters: pathlib.Path, deadline_s: float, job):
    """Until every clean event is in the store or a dead letter (or the deadline)."""
    users = sorted(expected)
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            counts = _store_counts(store, users)
        except Exception:  # the job creates the tables on its first write
            counts = {}
        done = not _unaccounted(expected, counts, _late_by_user(clean, letters))
        if done or time.monotonic() > deadline or job.poll() is not None:
            return counts
        time.sleep(1.0)


class StreamingFeed:
    """The streaming job behind a local Pub/Sub emulator, fed one part at a time.

    ``features``: directory of the SQLite store (``online.db``), dead letters and
    the job's log. ``model_base``: item embeddings for the job (None: hashed
    vectors). ``timeout_s``: the longest wait for one part to reach the store.
    Entering raises ``ComponentMissing`` when no emulator is installed.
    """

    def __init__(self, features: pathlib.Path, model_base: str | None, timeout_s: float):
        self.features = features
        self.store_path = features / "online.db"
        self._model_base = model_base
        self._timeout_s = timeout_s
        self._fed: list[SimRecord] = []
        self._letters: collections.Counter[str] = collections.Counter()
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> StreamingFeed:
        from google.cloud import pubsub_v1

        from beam_pipelines.local_servers import pubsub_emulator, stop_process_group

        self.features.mkdir(parents=True, exist_ok=True)
        with contextlib.ExitStack() as stack:
            emulator = stack.enter_context(pubsub_emulator(PROJECT))
            previous = os.environ.get("PUBSUB_EMULATOR_HOST")
            os.environ["PUBSUB_EMULATOR_HOST"] = emulator.address
            stack.callback(_restore_env, "PUBSUB_EMULATOR_HOST", previous)
            print(f"  Pub/Sub emulator on {emulator.address}; streaming job (DirectRunner)")
            self._publisher = pubsub_v1.PublisherClient()
            subscriber = pubsub_v1.SubscriberClient()
            self._topic = self._publisher.topic_path(PROJECT, "engagement-events")
            subscription = subscriber.subscription_path(PROJECT, "engagement-events-features")
            self._publisher.create_topic(name=self._topic)
            subscriber.create_subscription(name=subscription, topic=self._topic)
            self._job = _start_job(subscription, self.features, self._model_base)
            stack.callback(stop_process_group, self._job)
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def feed(self, records: Sequence[SimRecord], log: pathlib.Path) -> dict[str, Any]:
        """Publish ``records``; return once every clean event fed so far is in the
        store (or dead-lettered as late). ``log`` is unused (the backfill's input)."""
        from beam_pipelines.jobs_common import store_config
        from beam_pipelines.simulator_publish import publish_records
        from feature_repo.store import FeatureStoreClient

        self._fed += records
        clean = _clean_users(self._fed)
        expected = dict(collections.Counter(clean.values()))  # clean events per user
        letters_dir = self.features / "dead_letters"
        started = time.monotonic()
        stats = publish_records(records, self._topic, publisher=self._publisher)
        print(f"  published {stats.published} messages; waiting for the store to catch up")
        with FeatureStoreClient(store_config(None, str(self.store_path))) as store:
            counts = _wait_for(store, expected, clean, letters_dir, self._timeout_s, self._job)
        elapsed = time.monotonic() - started
        time.sleep(2.0)  # dead letters are flushed at bundle ends
        late = _late_by_user(clean, letters_dir)
        twice = sorted(u for u, n in counts.items() if n > expected.get(u, 0))
        if twice or _unaccounted(expected, counts, late):
            raise RuntimeError(
                f"streaming job applied {sum(counts.values())} of {sum(expected.values())} "
                f"clean events (more than sent for {twice[:5] or 'no user'}; the rest should "
                f"be dead letters 'late'); see {self.features / 'streaming.log'}"
            )
        letters = collections.Counter(r["reason"] for r in _dead_letters(letters_dir))
        new_letters, self._letters = letters - self._letters, letters
        applied = sum(counts.values())
        return {
            "published": stats.published,
            "applied_so_far": applied,
            "clean_events_late_so_far": sum(expected.values()) - applied,
            "users": len([n for n in counts.values() if n]),
            "dead_lettered_by_reason": dict(sorted(new_letters.items())),
            "seconds_from_first_publish_to_all_in_store": round(elapsed, 1),
        }


def _restore_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
