"""The streaming job end to end: simulated events with 5 % dirty lines through the
real Pub/Sub emulator into the job (a subprocess on the DirectRunner) and the
embedded SQLite online store. Every published message ends up applied exactly
once or dead-lettered exactly once (invalid lines with the simulator's expected
reason), and the online values equal the backfill's final values for the events
the job applied.

Whether an injected late event is applied or dead-lettered ``late`` depends on
delivery order (the emulator may deliver it before its user's newer events), so
the checks hold for any delivery order: the accounting invariant, and the
backfill (event-time order) over exactly the events the job applied.
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

from tests.helpers.components import require_import

pubsub_v1 = require_import(
    "google.cloud.pubsub_v1", "pip install -e '.[test]' (google-cloud-pubsub is a dependency)"
)

from beam_pipelines.accounting import Accounting, Ledger  # noqa: E402
from beam_pipelines.backfill import run_backfill  # noqa: E402
from beam_pipelines.events import ValidationConfig, parse_event  # noqa: E402
from beam_pipelines.jobs_common import store_config  # noqa: E402
from beam_pipelines.rewards import SHORT_VIDEO  # noqa: E402
from beam_pipelines.transforms.dead_letters import DeadLetter  # noqa: E402
from feature_repo.features import (  # noqa: E402
    ITEM_FEATURES,
    ITEM_REALTIME,
    USER_FEATURES,
    USER_REALTIME,
)
from rtp.simulator import publish  # noqa: E402
from rtp.simulator.config import SimulatorConfig  # noqa: E402
from rtp.simulator.simulation import simulate  # noqa: E402
from rtp.simulator.writer import StreamWriter, sidecar_paths  # noqa: E402
from tests.helpers.compare import assert_same_online  # noqa: E402

PROJECT = "test-project"
TOPIC = f"projects/{PROJECT}/topics/engagement-events-job"
SUBSCRIPTION = f"projects/{PROJECT}/subscriptions/engagement-events-job"
# Clean events; 5 % dirty lines come on top (RTP_PUBSUB_TEST_EVENTS to change it).
N_EVENTS = int(os.environ.get("RTP_PUBSUB_TEST_EVENTS", "3000"))
WARM_UP = 20  # lines published before the job is up
RATE = 100.0  # events/s of the live stream after them
# No wall-clock bound is asserted: a job that never starts or never catches up
# meets this timeout (start-up, the live stream at RATE, draining, the backfill).
pytestmark = pytest.mark.timeout(1800)
HOUR_MS = 3_600_000


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


def _counts(client, users: list[str]) -> dict[str, int]:
    rows = client.read(USER_REALTIME, users)
    return {u: row["user_event_count"] if row else 0 for u, row in rows.items()}


def _wait_for_job(job, log: Path, store: Path, letters_dir: Path, ledger: Ledger):
    """Poll until every published message is applied or dead-lettered; fail if the
    job dies (a job that hangs meets the module's pytest timeout)."""
    client = None
    try:
        while True:
            assert job.poll() is None, f"streaming job exited {job.returncode}:\n{_tail(log)}"
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
            if letters is None:
                continue
            if not ledger.check(letters, _counts(client, ledger.users)).unaccounted:
                time.sleep(3.0)  # anything in flight (a redelivery) shows up too
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
    while not (registry.exists() and registry.stat().st_size > 0):
        assert job.poll() is None, f"streaming job exited {job.returncode}:\n{_tail(log)}"
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
    ledger = Ledger(ValidationConfig(event_types=SHORT_VIDEO.event_types))
    ledger.add(r.data for r in records)
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
            warm_up = publish.publish_records(records[:WARM_UP], TOPIC)
            _wait_for_sink(job, log, store)
            live = publish.publish_records(records[WARM_UP:], TOPIC, rate=RATE)
            assert warm_up.published + live.published == len(records)
            assert warm_up.failed == live.failed == 0
            _wait_for_job(job, log, store, letters_dir, ledger)
            caught_up_s = time.monotonic() - started
        finally:
            _stop(job)
    letters = _dead_letters(letters_dir)
    with _reader(store) as client:
        accounting = ledger.check(letters, _counts(client, ledger.users))
        online = {
            USER_REALTIME: client.read(USER_REALTIME, sorted(expected.users)),
            ITEM_REALTIME: client.read(ITEM_REALTIME, sorted(expected.items)),
        }
    print(f"accounting: {accounting.line()}")
    # The backfill (default: event-time order) over every copy of each event the job
    # applied: the same events, so the same order-independent features.
    applied = tmp / "applied.jsonl"
    with applied.open("wb") as out:
        for r in records:
            if r.kind in ("clean", "duplicate", "late"):
                event = parse_event(r.data)
                if (event.user_id, event.event_id) in accounting.applied_keys:
                    out.write(r.data + b"\n")
    backfilled_db = tmp / "backfill" / "online.db"
    store = ["--store_path", str(backfilled_db)]
    summary = run_backfill(
        ["--events", str(applied), "--out", str(tmp / "backfill"), "--online", *store]
    )
    with _reader(backfilled_db) as client:
        backfilled = {
            USER_REALTIME: client.read(USER_REALTIME, sorted(expected.users)),
            ITEM_REALTIME: client.read(ITEM_REALTIME, sorted(expected.items)),
        }
    print(f"job started, took {len(records)} messages and caught up in {caught_up_s:.1f} s")
    return {
        "expected": expected,
        "accounting": accounting,
        "letters": letters,
        "online": online,
        "backfilled": backfilled,
        "summary": summary,
    }


def test_every_message_is_applied_once_or_dead_lettered_once(run):
    expected: _Expected = run["expected"]
    assert expected.clean == N_EVENTS and expected.kinds["duplicate"] and expected.kinds["late"]
    accounting: Accounting = run["accounting"]
    assert accounting.holds, (accounting.line(), accounting.problems)
    assert accounting.published == accounting.applied + accounting.dead_lettered - (
        accounting.redelivered
    )
    # Every clean event is applied (the injected late ones may be too, if delivered
    # before their user's newer events); each clean event's user count includes it.
    users = run["online"][USER_REALTIME]
    assert all(users[u]["user_event_count"] >= n for u, n in expected.users.items())
    assert N_EVENTS <= accounting.applied <= N_EVENTS + expected.kinds["late"]
    # The parser's decisions do not depend on delivery order: exactly the labels.
    got = collections.Counter(
        _letter_key(letter) for letter in run["letters"] if letter.event_id is None
    )
    invalid = collections.Counter(
        {key: n for key, n in expected.letters.items() if isinstance(key[1], bytes)}
    )
    assert got == invalid, (list(invalid - got)[:5], list(got - invalid)[:5])


def test_online_values_equal_the_backfill_final_values(run):
    """Pub/Sub may reorder deliveries; every feature is order-independent for the
    same applied events (decayed sums, rates, pooled embeddings, Beta posterior,
    newest time; the recent lists are sorted by event time), so all of them match
    the backfill over the events the job applied: exactly for ids, counts, times
    and lists, to float32 precision (stored as float32, summed in another order)
    for the rest."""
    assert run["summary"]["applied"] == run["accounting"].applied
    assert run["summary"]["late"] == 0  # event-time order: a bounded log has no late data
    for view, schema in ((USER_REALTIME, USER_FEATURES), (ITEM_REALTIME, ITEM_FEATURES)):
        online, backfilled = run["online"][view], run["backfilled"][view]
        assert all(row is not None for row in online.values())
        assert_same_online(online, backfilled, schema)
