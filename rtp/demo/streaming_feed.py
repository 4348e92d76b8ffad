"""The streaming half of ``rtp demo``: emulator → streaming job → SQLite store.

``StreamingFeed`` starts the Pub/Sub emulator, creates the topic and a
subscription and starts the streaming job as a subprocess (DirectRunner); each
``feed(records)`` publishes a part of the simulated stream (dirty records
included) and waits until every message published so far is accounted for:
applied exactly once or dead-lettered exactly once with its reason, never both,
never neither (``beam_pipelines.accounting``). Which of the two a labelled-late
event gets depends on delivery order: the emulator may deliver it before its
user's newer events, and then the per-user lateness rule applies it. The job
keeps running between parts, as it would in production; leaving the context
stops the job and the emulator by process id.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from beam_pipelines.accounting import Accounting, Ledger, letters_in
from feature_repo.features import USER_EVENT_COUNT, USER_REALTIME
from rtp.simulator.records import SimRecord

PROJECT = "rtp-demo"
REWARD = "short_video"  # the job's default reward preset: its event types validate


# The demo publishes each part as one backlog, which the emulator delivers out of
# order: by up to ~20 minutes of event time for 200 users, by more than an hour
# for a few dozen (fewer events per hour of event time). A 2-hour bound keeps
# those events; the simulator's injected late events (6 hours behind) are late when
# they arrive after their user's newer events, applied when they arrive before.
DEMO_ALLOWED_LATENESS_S = 7200


def demo_ledger() -> Ledger:
    """The published messages' ledger, validated as the job validates them."""
    from beam_pipelines.events import ValidationConfig
    from beam_pipelines.rewards import load_reward_config

    return Ledger(ValidationConfig(event_types=load_reward_config(REWARD).event_types))


def store_counts(store, users: list[str]) -> dict[str, int]:
    """Each user's applied events (``user_event_count``) in the store; 0 without a row."""
    counts = {}
    for start in range(0, len(users), 200):
        for user_id, row in store.read(USER_REALTIME, users[start : start + 200]).items():
            counts[user_id] = row[USER_EVENT_COUNT] if row else 0
    return counts


def check_accounting(ledger: Ledger, letters_dir: pathlib.Path, store) -> Accounting | None:
    """The accounting now; None while a dead-letter line is half written or the
    store has no tables yet (the job creates them on its first write)."""
    letters = letters_in(sorted(letters_dir.glob("*.jsonl")))
    if letters is None:
        return None
    try:
        counts = store_counts(store, ledger.users)
    except Exception:  # no tables before the job's first write
        return None
    return ledger.check(letters, counts)


def _start_job(subscription: str, out: pathlib.Path, model_base: str | None) -> subprocess.Popen:
    argv = [sys.executable, "-m", "beam_pipelines.streaming"]
    argv += [f"--input_subscription={subscription}", f"--dead_letter_dir={out / 'dead_letters'}"]
    argv += [f"--store_path={out / 'online.db'}"]
    argv += [f"--allowed_lateness_s={DEMO_ALLOWED_LATENESS_S}"]
    if model_base:
        argv += [f"--model_base={model_base}"]
    log = open(out / "streaming.log", "wb")  # noqa: SIM115 - the child owns it until it exits
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _wait_for(store, ledger: Ledger, letters: pathlib.Path, deadline_s: float, job):
    """Until every published message is applied or dead-lettered (or the deadline,
    or the job exits); returns the last accounting (None if none could be made)."""
    deadline = time.monotonic() + deadline_s
    result = None
    while True:
        result = check_accounting(ledger, letters, store) or result
        done = result is not None and not result.unaccounted
        if done or time.monotonic() > deadline or job.poll() is not None:
            return result
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
        self._ledger = demo_ledger()
        self._accounting: Accounting | None = None
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> StreamingFeed:
        from google.cloud import pubsub_v1

        from rtp.local_servers import pubsub_emulator, stop_process_group

        self.features.mkdir(parents=True, exist_ok=True)
        with contextlib.ExitStack() as stack:
            emulator = stack.enter_context(pubsub_emulator(PROJECT))
            previous = os.environ.get("PUBSUB_EMULATOR_HOST")
            os.environ["PUBSUB_EMULATOR_HOST"] = emulator.address
            stack.callback(_restore_env, "PUBSUB_EMULATOR_HOST", previous)
            print(f"  Pub/Sub emulator on {emulator.address}; streaming job (DirectRunner)")
            self._publisher = pubsub_v1.PublisherClient()
            subscriber = pubsub_v1.SubscriberClient()
            self.topic = self._publisher.topic_path(PROJECT, "engagement-events")
            subscription = subscriber.subscription_path(PROJECT, "engagement-events-features")
            self._publisher.create_topic(name=self.topic)
            subscriber.create_subscription(name=subscription, topic=self.topic)
            self._job = _start_job(subscription, self.features, self._model_base)
            stack.callback(stop_process_group, self._job)
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def feed(self, records: Sequence[SimRecord], log: pathlib.Path) -> dict[str, Any]:
        """Publish ``records``; return once every message published so far is applied
        or dead-lettered, and the accounting holds. ``log`` is unused (the backfill's
        input). Raises RuntimeError if it does not hold (the deadline passed with
        messages unaccounted for, or one counted twice)."""
        from beam_pipelines.jobs_common import store_config
        from feature_repo.store import FeatureStoreClient
        from rtp.simulator.publish import publish_records

        self._ledger.add(r.data for r in records)
        letters_dir = self.features / "dead_letters"
        started = time.monotonic()
        stats = publish_records(records, self.topic, publisher=self._publisher)
        print(f"  published {stats.published} messages; waiting for the store to catch up")
        with FeatureStoreClient(store_config(None, str(self.store_path))) as store:
            _wait_for(store, self._ledger, letters_dir, self._timeout_s, self._job)
            elapsed = time.monotonic() - started
            time.sleep(2.0)  # anything still in flight (a redelivery) shows up now
            result = _wait_for(store, self._ledger, letters_dir, 5.0, self._job)
        if result is None or not result.holds or stats.failed:
            line = result.line() if result is not None else "no accounting (store never written)"
            problems = "; ".join(result.problems[:3]) if result is not None else ""
            raise RuntimeError(
                f"accounting does not hold: {line}"
                f"{'; ' + problems if problems else ''}"
                f"{f'; {stats.failed} publishes failed' if stats.failed else ''}; "
                f"see {self.features / 'streaming.log'}"
            )
        previous, self._accounting = self._accounting, result
        part = _part_of(result, previous)
        (self.features / "accounting.json").write_text(json.dumps(result.to_dict(), indent=2))
        return {
            "published": stats.published,
            "applied": part["applied"],
            "users": len(_users_applied(result)),
            "seconds_from_first_publish_to_all_accounted": round(elapsed, 1),
            "dead_lettered_by_reason": part["dead_lettered_by_reason"],
            "accounting": result.line(),
        }


def _users_applied(result: Accounting) -> set[str]:
    return {user for user, _ in result.applied_keys}


def _part_of(result: Accounting, previous: Accounting | None) -> dict[str, Any]:
    """What the latest part added: applied events and dead letters by reason."""
    if previous is None:
        return {
            "applied": result.applied,
            "dead_lettered_by_reason": dict(sorted(result.dead_lettered_by_reason.items())),
        }
    letters = result.dead_lettered_by_reason - previous.dead_lettered_by_reason
    return {
        "applied": result.applied - previous.applied,
        "dead_lettered_by_reason": dict(sorted(letters.items())),
    }


def _restore_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
