"""Restart safety end to end: the streaming job (a subprocess) on the Pub/Sub
emulator is killed with SIGKILL mid-stream and restarted on the same
subscription; it must end with the same online features as an uninterrupted
run over the same events, none lost and none counted twice.

What the kill takes: the messages the job had pulled (Beam's DirectRunner
acknowledges them as it pulls) but whose rows had not reached the store, and
whatever rows a stage had written for some stages of an event and not others.
The restart seeks the subscription back to the store's progress mark minus the
replay window, so those messages come again, with many already applied ones:
each key's state restored from the store knows the ids it applied, so these
are dead-lettered ``duplicate`` and counted once.

The stream has no late event under any delivery order (event times follow the
publishing clock) and no user meets 50 distinct items, so every feature,
co-engagement included, is independent of delivery order and the two runs must
agree: exactly on ids, counts, times and lists, to float32 on the decayed sums.
"""

from __future__ import annotations

import collections
import json
import os
import time
import uuid
from pathlib import Path

import pytest

from tests.helpers.components import require_import

require_import("google.cloud.pubsub_v1", "pip install -e '.[test]'")

from beam_pipelines.transforms.dead_letters import DeadLetter  # noqa: E402
from feature_repo.features import (  # noqa: E402
    ITEM_COENGAGEMENT,
    ITEM_FEATURES,
    ITEM_REALTIME,
    USER_COENGAGEMENT,
    USER_FEATURES,
    USER_REALTIME,
)
from feature_repo.store import FeatureStoreClient  # noqa: E402
from tests.helpers.compare import assert_same_online  # noqa: E402
from tests.helpers.stream_job import (  # noqa: E402
    PROJECT,
    Publisher,
    StreamJob,
    counts,
    create_subscription,
    create_topic,
    live_stream,
    read_views,
    store_args,
    wait_until_applied,
)
from tests.integration.test_feature_store import store_settings  # noqa: E402

pytestmark = [
    pytest.mark.timeout(1500),
    # google-cloud-bigtable warns on every client it points at an emulator.
    pytest.mark.filterwarnings("ignore:Connecting to Bigtable emulator:RuntimeWarning"),
]
N_EVENTS, USERS, ITEMS = 1200, 60, 150
RATE = 40.0  # events/s: the stream lasts 30 s, the kill comes 40 % into it
KILL_AFTER = 0.4


def _config(backend: str, tmp: Path, request) -> dict:
    config = store_settings(backend, tmp, request)
    return config if backend == "sqlite" else {**config, "feast_project": _project()}


def _project() -> str:
    return f"restart{uuid.uuid4().hex[:8]}"


def _reader(config: dict, job: StreamJob) -> FeatureStoreClient:
    """A client of the job's store once the job has applied the definitions."""
    registry = Path(config["registry_path"])
    while True:
        job.alive()
        if registry.exists() and registry.stat().st_size > 0:
            try:
                return FeatureStoreClient({**config, "apply_on_open": False}).open()
            except Exception:  # the job is still applying them
                pass
        time.sleep(1.0)


def _letters(directory: Path) -> list[DeadLetter]:
    return [
        DeadLetter.from_json(line)
        for path in sorted(directory.glob("*.jsonl"))
        for line in path.read_bytes().splitlines()
    ]


class _Run:
    """One job's topic, subscription, store and dead letters."""

    def __init__(self, name: str, backend: str, tmp: Path, request, env: dict):
        self.dir = tmp / name
        self.dir.mkdir()
        self.topic = f"projects/{PROJECT}/topics/{name}-{backend}"
        self.subscription = f"projects/{PROJECT}/subscriptions/{name}-{backend}"
        create_topic(self.topic)
        create_subscription(self.topic, self.subscription)
        self.config = _config(backend, self.dir, request)
        args = store_args(self.config, self.dir)
        self.letters = self.dir / "dead_letters"
        self.job = StreamJob(self.subscription, args, self.letters, self.dir / "job.log", env)

    def start(self, records) -> tuple[FeatureStoreClient, Publisher]:
        """Start the job and, once it is up, the live stream."""
        self.job.start()
        client = _reader(self.config, self.job)
        publisher = Publisher(records, self.topic, RATE)
        publisher.start()
        return client, publisher


def _expected(records) -> tuple[dict, dict]:
    users, items = collections.Counter(), collections.Counter()
    for r in records:
        event = json.loads(r.data)
        users[event["user_id"]] += 1
        items[event["item_id"]] += 1
    return dict(users), dict(items)


def _finish(run: _Run, client, users: dict, items: dict) -> dict:
    wait_until_applied(run.job, client, users, items)
    run.job.stop()
    views = read_views(client, sorted(users), sorted(items))
    client.close()
    return views


@pytest.fixture(scope="module")
def stream():
    return live_stream(N_EVENTS, USERS, ITEMS, RATE)


@pytest.mark.parametrize("backend", ["sqlite", "redis", "bigtable"])
def test_a_job_killed_mid_stream_and_restarted_ends_as_an_uninterrupted_run(
    backend, stream, pubsub_emulator, tmp_path, request, monkeypatch
):
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator.address)
    env = {**os.environ, "PUBSUB_EMULATOR_HOST": pubsub_emulator.address}
    users, items = _expected(stream)

    whole = _Run("whole", backend, tmp_path, request, env)
    try:
        client, publisher = whole.start(stream)
        publisher.join()
        uninterrupted = _finish(whole, client, users, items)
    finally:
        whole.job.stop()

    killed = _Run("killed", backend, tmp_path, request, env)
    try:
        client, publisher = killed.start(stream)
        time.sleep(KILL_AFTER * N_EVENTS / RATE)
        killed.job.alive()
        killed.job.kill()
        before = counts(client.read(USER_REALTIME, sorted(users)), "user_event_count")
        killed.job.start()  # same subscription, same store
        publisher.join()
        restarted = _finish(killed, client, users, items)
    finally:
        killed.job.stop()

    assert publisher.stats.published == N_EVENTS and publisher.stats.failed == 0
    got_users = counts(restarted[USER_REALTIME], "user_event_count")
    got_items = counts(restarted[ITEM_REALTIME], "item_event_count")
    lost = sum(max(n - got_users[u], 0) for u, n in users.items())
    doubled = sum(max(got_users[u] - n, 0) for u, n in users.items())
    item_lost = sum(max(n - got_items[i], 0) for i, n in items.items())
    item_doubled = sum(max(got_items[i] - n, 0) for i, n in items.items())
    letters = collections.Counter(letter.reason for letter in _letters(killed.letters))
    print(
        f"{backend}: {N_EVENTS} events; stored before the restart {sum(before.values())}; "
        f"lost {lost}, counted twice {doubled} (items: {item_lost}, {item_doubled}); "
        f"dead letters after the restart {dict(letters)}"
    )
    assert (lost, doubled, item_lost, item_doubled) == (0, 0, 0, 0)
    assert 0 < sum(before.values()) < N_EVENTS  # the kill came mid-stream
    assert letters["duplicate"] > 0  # the restart replayed applied messages...
    assert set(letters) == {"duplicate"}  # ...and nothing else was dead-lettered

    for view, schema in ((USER_REALTIME, USER_FEATURES), (ITEM_REALTIME, ITEM_FEATURES)):
        assert_same_online(restarted[view], uninterrupted[view], schema)
    assert _windows(restarted) == _windows(uninterrupted)
    assert _neighbours(restarted) == _neighbours(uninterrupted)
    assert any(_neighbours(uninterrupted).values())


def _windows(views: dict) -> dict:
    rows = views[USER_COENGAGEMENT]
    return {u: sorted(row["user_interacted_items"]) if row else None for u, row in rows.items()}


def _neighbours(views: dict) -> dict:
    rows = views[ITEM_COENGAGEMENT]
    return {
        i: dict(zip(row["item_neighbors"], row["item_neighbor_pairs"], strict=True)) if row else {}
        for i, row in rows.items()
    }
