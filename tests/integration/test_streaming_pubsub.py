"""The streaming job end to end: simulated events with 5 % dirty lines through the
real Pub/Sub emulator into the job (a subprocess on the DirectRunner) and the
embedded SQLite online store. Every event ends up applied exactly once or in a
dead letter with the simulator's expected reason, and the online values equal
the backfill's final values for the same events.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pubsub_v1 = pytest.importorskip("google.cloud.pubsub_v1")

from beam_pipelines import simulator_publish  # noqa: E402
from beam_pipelines.backfill import run_backfill  # noqa: E402
from beam_pipelines.events import parse_event  # noqa: E402
from beam_pipelines.jobs_common import store_config  # noqa: E402
from beam_pipelines.simulator import (  # noqa: E402
    SimulatorConfig,
    StreamWriter,
    sidecar_paths,
    simulate,
)
from beam_pipelines.transforms.dead_letters import DeadLetter  # noqa: E402
from feature_repo.features import (  # noqa: E402
    ITEM_FEATURES,
    ITEM_REALTIME,
    USER_FEATURES,
    USER_REALTIME,
)
from tests.helpers.compare import assert_same_entities  # noqa: E402

PROJECT = "test-project"
TOPIC = f"projects/{PROJECT}/topics/engagement-events-job"
SUBSCRIPTION = f"projects/{PROJECT}/subscriptions/engagement-events-job"
# Clean events; 5 % dirty lines come on top (RTP_PUBSUB_TEST_EVENTS to change it).
N_EVENTS = int(os.environ.get("RTP_PUBSUB_TEST_EVENTS", "3000"))
WARM_UP = 20  # lines published before the job is up
RATE = 100.0  # events/s of the live stream after them
START_S = 150.0  # job start-up on a busy machine (Beam and Feast imports)
DEADLINE_S = 60.0 + N_EVENTS / RATE  # after start-up: the live stream, then draining
HOUR_MS = 3_600_000
# Exact after the float32 round trip of the store: ids, counts, times, versions
# and the recent lists (sorted by event time, ties by event id).
EXACT = {
    "user_embedding_version",
    "user_event_count",
    "user_last_event_ms",
    "user_recent_items",
    "user_recent_ts_ms",
    "item_event_count",
    "item_last_event_ms",
}


def _simulate(out: Path) -> list:
    """The stream as JSONL + labels sidecar (``rtp simulate --out``), event times
    ending about half an hour before now."""
    start_ms = int(time.time() * 1000) - int(2.5 * HOUR_MS)
    config = SimulatorConfig(
        n_events=N_EVENTS,
        n_users=200,
        n_items=1000,
        seed=11,
        dirty_fraction=0.05,
        start_ms=start_ms,
    )
    sim = simulate(config)
    with StreamWriter(out) as writer:
        records = list(writer.tee(sim))
        writer.finish(sim)
    return records


def _dead_letters(directory: Path) -> list[DeadLetter] | None:
    """Every dead letter written so far; None while a file is half written."""
    letters = []
    try:
        for path in sorted(directory.glob("*.jsonl")):
            letters += [DeadLetter.from_json(x) for x in path.read_bytes().splitlines()]
    except ValueError:
        return None
    return letters


def _reader(store_path: Path):
    """A read-only client of the job's store (the job applies the definitions)."""
    from feature_repo.store import FeatureStoreClient

    config = {**store_config(None, str(store_path)), "apply_on_open": False}
    return FeatureStoreClient(config)


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class _Expected:
    """What the job must produce, from the stream and its labels sidecar."""

    def __init__(self, stream: Path):
        lines = stream.read_bytes().split(b"\n")[:-1]
        labels = {}
        for text in sidecar_paths(stream)["labels"].read_text().splitlines():
            label = json.loads(text)
            labels[label["line"]] = label
        self.users, self.items = collections.Counter(), collections.Counter()
        self.letters = collections.Counter()
        for number, data in enumerate(lines):
            label = labels.get(number)
            if label is None:  # clean: applied exactly once
                event = parse_event(data)
                self.users[event.user_id] += 1
                self.items[event.item_id] += 1
            elif label["kind"] in ("duplicate", "late"):
                event_id = parse_event(data).event_id
                self.letters[(label["expected_reason"], event_id)] += 1
            else:
                self.letters[(label["expected_reason"], data)] += 1
        self.clean = len(lines) - len(labels)
        self.kinds = collections.Counter(label["kind"] for label in labels.values())


def _letter_key(letter: DeadLetter):
    return (letter.reason, letter.payload if letter.event_id is None else letter.event_id)


def _counts_reached(client, expected: _Expected) -> bool:
    users = client.read(USER_REALTIME, list(expected.users))
    items = client.read(ITEM_REALTIME, list(expected.items))
    return all(
        row is not None and row["user_event_count"] == expected.users[u] for u, row in users.items()
    ) and all(
        row is not None and row["item_event_count"] == expected.items[i] for i, row in items.items()
    )


def _wait_for_job(job, log: Path, store: Path, letters_dir: Path, expected: _Expected):
    """Poll until the store holds every expected count and every dead letter is
    written; fail on the deadline or if the job dies."""
    deadline = time.monotonic() + DEADLINE_S
    client = None
    try:
        while True:
            assert job.poll() is None, f"streaming job exited {job.returncode}:\n{_tail(log)}"
            assert time.monotonic() < deadline, f"job did not catch up:\n{_tail(log)}"
            time.sleep(3.0)
            if client is None:
                if not (store.parent / "registry.db").exists():
                    continue
                try:
                    client = _reader(store).open()
                except Exception:  # the job is still applying the definitions
                    client = None
                    continue
            letters = _dead_letters(letters_dir)
            if letters is None or len(letters) < sum(expected.letters.values()):
                continue
            if _counts_reached(client, expected):
                return
    finally:
        if client is not None:
            client.close()


def _stop(job) -> None:
    for sig in (signal.SIGINT, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(job.pid, sig)
        try:
            job.wait(timeout=15)
            return
        except subprocess.TimeoutExpired:
            continue


def _start_job(tmp: Path, env: dict) -> tuple[subprocess.Popen, Path, Path, Path]:
    store, letters_dir, log = (
        tmp / "job" / "online.db",
        tmp / "job" / "dead_letters",
        tmp / "job.log",
    )
    store.parent.mkdir()
    args = [
        sys.executable,
        "-m",
        "beam_pipelines.streaming",
        f"--input_subscription={SUBSCRIPTION}",
        f"--dead_letter_dir={letters_dir}",
        f"--store_path={store}",
        "--allowed_lateness_s=600",
    ]
    with log.open("wb") as out:
        job = subprocess.Popen(
            args,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            cwd=Path(__file__).parents[2],
        )
    return job, store, letters_dir, log


def _wait_for_sink(job, log: Path, store: Path) -> None:
    """Until the job's store sink is open (it applied the Feast definitions)."""
    registry = store.parent / "registry.db"
    deadline = time.monotonic() + START_S
    while not (registry.exists() and registry.stat().st_size > 0):
        assert job.poll() is None, f"streaming job exited {job.returncode}:\n{_tail(log)}"
        assert time.monotonic() < deadline, f"job did not start:\n{_tail(log)}"
        time.sleep(1.0)


@pytest.fixture(scope="module")
def run(pubsub_emulator, tmp_path_factory):
    """Start the job, publish the stream live, wait until the job caught up, stop
    it; run the backfill over the same lines.

    Published as a live stream at a rate the job keeps up with, after a few
    warm-up lines carry it through its start-up. A backlog would come back out of
    order: the emulator shuffles it by hundreds of lines and the DirectRunner runs
    queued bundles of a stateful step newest first, so valid events would land more
    than the 600 s lateness behind their user's newest and be dead-lettered 'late'.
    """
    tmp = tmp_path_factory.mktemp("pubsub_job")
    stream = tmp / "events.jsonl"
    records = _simulate(stream)
    expected = _Expected(stream)
    env = {**os.environ, "PUBSUB_EMULATOR_HOST": pubsub_emulator.address}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator.address)
        publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
        publisher.create_topic(name=TOPIC)
        subscriber.create_subscription(name=SUBSCRIPTION, topic=TOPIC, ack_deadline_seconds=60)
        subscriber.close()
        publisher.stop()
        job, store, letters_dir, log = _start_job(tmp, env)
        started = time.monotonic()
        try:
            warm_up = simulator_publish.publish_records(records[:WARM_UP], TOPIC)
            _wait_for_sink(job, log, store)
            live = simulator_publish.publish_records(records[WARM_UP:], TOPIC, rate=RATE)
            assert warm_up.published + live.published == len(records)
            assert warm_up.failed == live.failed == 0
            _wait_for_job(job, log, store, letters_dir, expected)
            caught_up_s = time.monotonic() - started
        finally:
            _stop(job)
    with _reader(store) as client:
        online = {
            USER_REALTIME: client.read(USER_REALTIME, sorted(expected.users)),
            ITEM_REALTIME: client.read(ITEM_REALTIME, sorted(expected.items)),
        }
    summary = run_backfill(["--events", str(stream), "--out", str(tmp / "backfill"), "--online"])
    with _reader(tmp / "backfill" / "online.db") as client:
        backfilled = {
            USER_REALTIME: client.read(USER_REALTIME, sorted(expected.users)),
            ITEM_REALTIME: client.read(ITEM_REALTIME, sorted(expected.items)),
        }
    print(f"job started, took {len(records)} messages and caught up in {caught_up_s:.1f} s")
    return {
        "expected": expected,
        "letters": _dead_letters(letters_dir),
        "online": online,
        "backfilled": backfilled,
        "summary": summary,
    }


def test_every_event_is_applied_once_or_dead_lettered_with_its_reason(run):
    expected: _Expected = run["expected"]
    assert expected.clean == N_EVENTS and expected.kinds["duplicate"] and expected.kinds["late"]
    users, items = run["online"][USER_REALTIME], run["online"][ITEM_REALTIME]
    assert {u: row["user_event_count"] for u, row in users.items()} == dict(expected.users)
    assert {i: row["item_event_count"] for i, row in items.items()} == dict(expected.items)
    assert sum(row["user_event_count"] for row in users.values()) == N_EVENTS
    got = collections.Counter(_letter_key(letter) for letter in run["letters"])
    missing, unexpected = expected.letters - got, got - expected.letters
    assert not missing and not unexpected, (list(missing)[:5], list(unexpected)[:5])


def test_online_values_equal_the_backfill_final_values(run):
    """Pub/Sub may reorder deliveries a little; every feature is order-independent
    within the lateness bound (decayed sums, rates, pooled embeddings, Beta
    posterior, newest time; the recent lists are sorted by event time), so all of
    them match: exactly for ids, counts, times and lists, to float32 precision
    (stored as float32, summed in another order) for the rest."""
    assert run["summary"]["applied"] == N_EVENTS
    for view, schema in ((USER_REALTIME, USER_FEATURES), (ITEM_REALTIME, ITEM_FEATURES)):
        online, backfilled = run["online"][view], run["backfilled"][view]
        assert all(row is not None for row in online.values())
        exact = [name for name in schema if name in EXACT]
        approx = [name for name in schema if name not in EXACT]
        assert_same_entities(online, backfilled, rel=0, abs_=0, columns=exact)
        assert_same_entities(online, backfilled, rel=1e-6, abs_=1e-6, columns=approx)
