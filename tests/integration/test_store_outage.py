"""A Redis outage mid-stream: the server is stopped (by pid) for at least 30 s and
started again on the same port with its data (append-only file), while the
streaming job (a subprocess on the Pub/Sub emulator) keeps receiving events.

Two jobs read the same live stream through their own subscriptions, beside a
baseline job on SQLite that sees no outage:

- ``retrying`` (default retry budget, 120 s): every failed write and state read
  is retried with back-off until Redis is back; nothing is dead-lettered and the
  store ends equal to the baseline's, 0 lost.
- ``lettering`` (a 3 s budget, no state restore, so no state read makes a stage
  wait for the store as the retrying job's stages do): the writes of the outage
  give up and become dead letters ``store_write_failed``; a key with no newer row
  after the outage keeps a stale row until ``rtp replay-dead-letters`` writes its
  letter, after which the store equals the baseline's too, and a second replay
  writes nothing.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.helpers.components import require_binary, require_import

require_import("google.cloud.pubsub_v1", "pip install -e '.[test]'")
REDIS = require_binary("redis-server", "apt-get install redis-server")

from feature_repo.features import (  # noqa: E402
    ITEM_FEATURES,
    ITEM_REALTIME,
    USER_FEATURES,
    USER_REALTIME,
)
from feature_repo.store import FeatureStoreClient, sqlite_settings  # noqa: E402
from rtp.local_servers import HOST, free_port, start_server, stop_server  # noqa: E402
from tests.helpers.compare import assert_same_online  # noqa: E402
from tests.helpers.stream_job import (  # noqa: E402
    PROJECT,
    ROOT,
    Publisher,
    StreamJob,
    counts,
    create_subscription,
    create_topic,
    live_stream,
    store_args,
    wait_until_applied,
)

pytestmark = pytest.mark.timeout(1500)
N_EVENTS, USERS, ITEMS = 1200, 60, 150
RATE = 20.0  # a 60 s stream
OUTAGE_AT_S, OUTAGE_S = 15.0, 32.0
TOPIC = f"projects/{PROJECT}/topics/outage-events"


class _Redis:
    """A redis-server keeping its data in ``directory`` (append-only file), so a
    stop and a start on the same port bring the same data back."""

    def __init__(self, directory: Path):
        directory.mkdir()
        self.port = free_port()
        self.args = [REDIS, "--port", str(self.port), "--bind", HOST, "--dir", str(directory)]
        self.args += ["--appendonly", "yes", "--appendfsync", "always", "--save", ""]
        self.server = None

    def start(self) -> None:
        self.server = start_server(self.args, self.port)

    def stop(self) -> None:
        if self.server is not None:
            stop_server(self.server)  # SIGTERM to its pid: the append-only file is complete
            self.server = None

    @contextlib.contextmanager
    def running(self):
        self.start()
        try:
            yield self
        finally:
            self.stop()


def _job(name: str, config: dict, tmp: Path, env: dict, *extra: str):
    directory = tmp / name
    directory.mkdir()
    subscription = f"projects/{PROJECT}/subscriptions/outage-{name}"
    create_subscription(TOPIC, subscription)
    letters = directory / "dead_letters"
    job = StreamJob(subscription, store_args(config, directory), letters, directory / "log", env)
    return job.start(*extra), letters, directory


def _redis_config(redis: _Redis, tmp: Path, name: str) -> dict:
    return {
        "type": "redis",
        "connection_string": f"{HOST}:{redis.port}",
        "feast_project": f"outage{uuid.uuid4().hex[:8]}",
        "registry_path": str(tmp / f"{name}-registry.db"),
        "offline_dir": str(tmp / f"{name}-offline"),
    }


def _client(config: dict) -> FeatureStoreClient:
    while True:
        try:
            return FeatureStoreClient({**config, "apply_on_open": False}).open()
        except Exception:  # the job has not applied the definitions yet
            time.sleep(1.0)


def _wait_until_quiet(job, client, letters: Path, users) -> None:
    """Until the job's stored counts and dead letters stop changing (some of its
    rows are only in dead letters, so its counts may never reach the stream's)."""
    last, quiet = None, 0
    while quiet < 4:
        job.alive()
        time.sleep(3.0)
        stored = counts(client.read(USER_REALTIME, sorted(users)), "user_event_count")
        now = (sum(stored.values()), sum(_reasons(letters).values()))
        quiet = quiet + 1 if now == last else 0
        last = now


def _reasons(directory: Path) -> collections.Counter:
    from beam_pipelines.replay_dead_letters import read_letters

    return collections.Counter(x.reason for x in read_letters(directory))


def _views(config: dict, users: list[str], items: list[str]) -> dict:
    with FeatureStoreClient({**config, "apply_on_open": False}) as client:
        return {
            USER_REALTIME: client.read(USER_REALTIME, users),
            ITEM_REALTIME: client.read(ITEM_REALTIME, items),
        }


def _replay(letters: Path, directory: Path) -> dict:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "rtp",
            "replay-dead-letters",
            str(letters),
            f"--store_config={directory / 'store.yaml'}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return json.loads(out.stdout)


def test_a_redis_outage_of_30_s_loses_nothing(pubsub_emulator, tmp_path, monkeypatch):
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator.address)
    env = {**os.environ, "PUBSUB_EMULATOR_HOST": pubsub_emulator.address}
    # Ten users and items go quiet 8 s into the outage: their last rows are written
    # during it, so the lettering job keeps them only in dead letters.
    quiet_from = int((OUTAGE_AT_S + 8) * RATE)
    records = live_stream(N_EVENTS, USERS, ITEMS, RATE, quiet_from=quiet_from, quiet=10)
    users = collections.Counter(json.loads(r.data)["user_id"] for r in records)
    items = collections.Counter(json.loads(r.data)["item_id"] for r in records)
    create_topic(TOPIC)
    redis_a, redis_b = _Redis(tmp_path / "redis-a"), _Redis(tmp_path / "redis-b")
    with redis_a.running(), redis_b.running():
        _run(records, users, items, redis_a, redis_b, tmp_path, env)


def _run(records, users, items, redis_a, redis_b, tmp_path, env) -> None:
    configs = {
        "baseline": sqlite_settings(tmp_path / "baseline-store" / "online.db"),
        "retrying": _redis_config(redis_a, tmp_path, "retrying"),
        "lettering": _redis_config(redis_b, tmp_path, "lettering"),
    }
    jobs, clients = {}, {}
    try:
        jobs["baseline"] = _job("baseline", configs["baseline"], tmp_path, env)
        jobs["retrying"] = _job("retrying", configs["retrying"], tmp_path, env)
        jobs["lettering"] = _job(
            "lettering",
            configs["lettering"],
            tmp_path,
            env,
            "--write_retry_budget_s=3",
            "--restore_state=false",  # no state reads to wait on: its writes give up
        )
        clients = {name: _client(config) for name, config in configs.items()}
        publisher = Publisher(records, TOPIC, RATE)
        publisher.start()
        time.sleep(OUTAGE_AT_S)
        stopped = time.monotonic()
        redis_a.stop()
        redis_b.stop()
        time.sleep(OUTAGE_S)
        redis_a.start()
        redis_b.start()
        outage_s = time.monotonic() - stopped
        publisher.join()
        for name in ("baseline", "retrying"):
            wait_until_applied(jobs[name][0], clients[name], dict(users), dict(items))
        _wait_until_quiet(jobs["lettering"][0], clients["lettering"], jobs["lettering"][1], users)
    finally:
        for job, _, _ in jobs.values():
            job.stop()
        for client in clients.values():
            client.close()
    assert publisher.stats.published == N_EVENTS and outage_s >= 30.0
    ids = sorted(users), sorted(items)
    baseline = _views(configs["baseline"], *ids)
    assert counts(baseline[USER_REALTIME], "user_event_count") == dict(users)

    retrying = _views(configs["retrying"], *ids)
    lost = sum(n - counts(retrying[USER_REALTIME], "user_event_count")[u] for u, n in users.items())
    retrying_letters = _reasons(jobs["retrying"][1])
    print(f"outage {outage_s:.1f} s; retrying job: lost {lost}, letters {dict(retrying_letters)}")
    assert retrying_letters == {}
    _assert_same(retrying, baseline)

    letters = _reasons(jobs["lettering"][1])
    # The quiet keys' last rows fall in the outage when the job keeps pace with the
    # stream; a job lagging by more than 8 s (a loaded machine) writes them after it,
    # and then every letter is superseded by a newer stored row: nothing is stale.
    stale = not _same(_views(configs["lettering"], *ids), baseline)
    first = _replay(jobs["lettering"][1], jobs["lettering"][2])
    second = _replay(jobs["lettering"][1], jobs["lettering"][2])
    print(f"lettering job: letters {dict(letters)}; stale rows before replay: {stale}")
    print(f"replay {first['written']}; replayed again: {second['written']}")
    assert letters["store_write_failed"] > 0 and set(letters) == {"store_write_failed"}
    if stale:  # the replay is what brings the store level with the baseline
        assert sum(first["written"].values()) > 0
    assert sum(second["written"].values()) == 0
    _assert_same(_views(configs["lettering"], *ids), baseline)


def _same(got: dict, want: dict) -> bool:
    try:
        _assert_same(got, want)
    except AssertionError:
        return False
    return True


def _assert_same(got: dict, want: dict) -> None:
    for view, schema in ((USER_REALTIME, USER_FEATURES), (ITEM_REALTIME, ITEM_FEATURES)):
        assert_same_online(got[view], want[view], schema)
