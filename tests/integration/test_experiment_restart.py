"""Restart safety of the streamed experiment metrics end to end: the streaming job
with ``--experiment_metrics=true`` (a subprocess on the Pub/Sub emulator) is
killed with SIGKILL mid-stream and restarted on the same subscription and store;
its ``experiment_metrics`` rows must end equal to the batch metrics of the events
(which an uninterrupted run gives: ``tests/unit/test_transforms_experiment_stream.py``),
none lost and none counted twice.

The events are an experiment's logged exposures and outcomes
(``rtp.simulator.experiment_log``) re-timed to follow the publishing clock, so no
event is late under any delivery order.
"""

from __future__ import annotations

import dataclasses
import os
import time

import pytest

from tests.helpers.components import require_import

require_import("google.cloud.pubsub_v1", "pip install -e '.[test]'")

from beam_pipelines.transforms.experiment_stream import group_id  # noqa: E402
from feature_repo.features import EXPERIMENT_METRICS, EXPERIMENT_SRM_P_VALUE  # noqa: E402
from feature_repo.store import sqlite_settings  # noqa: E402
from rtp.simulator.experiment_log import experiment, synthetic_log  # noqa: E402
from rtp.simulator.records import SimRecord  # noqa: E402
from tests.helpers.stream_job import (  # noqa: E402
    PROJECT,
    Publisher,
    StreamJob,
    create_subscription,
    create_topic,
    store_args,
)
from tests.integration.test_streaming_restart import _reader  # noqa: E402
from tests.unit.test_experiments_incremental import batch_records  # noqa: E402

pytestmark = [pytest.mark.timeout(900)]
RATE = 40.0  # events/s
KILL_AFTER = 0.4
WINDOW_S = 3600.0
COLUMNS = ("users", "exposures", "engagements", "engagement_rate", "reward_per_exposure")


def _events():
    """The log's events in time order, re-timed at ``RATE`` from now."""
    log = sorted(synthetic_log(experiment("ab"), 60, seed=11, days=1), key=lambda e: e.timestamp_ms)
    start_ms = int(time.time() * 1000)
    return [
        dataclasses.replace(e, timestamp_ms=start_ms + int(k * 1000 / RATE))
        for k, e in enumerate(log)
    ]


def _stored(client, expected: dict) -> dict:
    ids = {
        group_id(dict(zip(("experiment", "variant", "day"), k, strict=True))): k for k in expected
    }
    rows = client.read(EXPERIMENT_METRICS, sorted(ids))
    return {ids[i]: row for i, row in rows.items()}


def _matches(stored: dict, expected: dict) -> bool:
    return all(
        stored[k] is not None and all(stored[k][c] == want[c] for c in COLUMNS[:3])
        for k, want in expected.items()
    )


def test_experiment_metrics_of_a_killed_and_restarted_job_equal_the_batch_ones(
    pubsub_emulator, tmp_path, monkeypatch
):
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator.address)
    env = {**os.environ, "PUBSUB_EMULATOR_HOST": pubsub_emulator.address}
    events = _events()
    expected = batch_records(events, int(WINDOW_S * 1000))
    topic = f"projects/{PROJECT}/topics/experiment-restart"
    subscription = f"projects/{PROJECT}/subscriptions/experiment-restart"
    create_topic(topic)
    create_subscription(topic, subscription)
    config = sqlite_settings(tmp_path / "online.db")
    flags = (
        "--experiment_metrics=true",
        f"--experiment_window_s={WINDOW_S}",
        "--experiment_emit_every_s=1",
    )
    job = StreamJob(
        subscription, store_args(config, tmp_path), tmp_path / "letters", tmp_path / "job.log", env
    )
    records = [
        SimRecord(k, e.to_json(), "clean", None, e.timestamp_ms) for k, e in enumerate(events)
    ]
    try:
        job.start(*flags)
        client = _reader(config, job)
        publisher = Publisher(records, topic, RATE)
        publisher.start()
        time.sleep(KILL_AFTER * len(records) / RATE)
        job.alive()
        job.kill()
        before = _stored(client, expected)
        job.start(*flags)  # same subscription, same store
        publisher.join()
        deadline = time.monotonic() + 240
        while not _matches(stored := _stored(client, expected), expected):
            job.alive()
            assert time.monotonic() < deadline, "the restarted job never caught up"
            time.sleep(2.0)
        time.sleep(8.0)  # anything still in flight would count twice
        stored = _stored(client, expected)
    finally:
        job.stop()

    assert any(row is not None for row in before.values())  # the kill came mid-stream
    print(
        f"{len(events)} events; rows stored before the kill "
        f"{sum(r is not None for r in before.values())} of {len(expected)}"
    )
    for key, want in expected.items():
        got = stored[key]
        for column in COLUMNS:
            assert got[column] == pytest.approx(want[column], rel=1e-5, nan_ok=True), (key, column)
        assert 0 <= got[EXPERIMENT_SRM_P_VALUE] <= 1
