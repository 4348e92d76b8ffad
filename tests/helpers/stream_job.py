"""The streaming job as a subprocess on the Pub/Sub emulator, and a live stream
to publish to it: what the restart and store-outage tests drive."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

from feature_repo.features import (
    ITEM_COENGAGEMENT,
    ITEM_REALTIME,
    USER_COENGAGEMENT,
    USER_REALTIME,
)
from rtp.simulator import publish
from rtp.simulator.records import SimRecord
from tests.helpers.events import event_json

PROJECT = "test-project"
ROOT = Path(__file__).parents[2]
TYPES = ("like", "impression", "share", "skip", "like", "impression", "hide")


def live_stream(
    n: int, users: int, items: int, rate: float, quiet_from: int | None = None, quiet: int = 0
) -> list[SimRecord]:
    """``n`` clean events whose event times follow the publishing clock at ``rate``
    events/s from now: no event is late under any delivery order the emulator makes.
    Each user meets fewer than 50 distinct items, so its pair window never evicts and
    the co-engagement rows do not depend on delivery order either. From event
    ``quiet_from`` on, the first ``quiet`` users and items have no more events."""
    start_ms = int(time.time() * 1000)
    records = []
    for k in range(n):
        t_ms = start_ms + int(k * 1000 / rate)
        user, item = k % users, (k * 7919) % items
        if quiet_from is not None and k >= quiet_from:
            user = quiet + k % (users - quiet)
            item = quiet + (k * 7919) % (items - quiet)
        data = event_json(f"r{k}", f"u{user}", f"i{item}", TYPES[k % len(TYPES)], t_ms)
        records.append(SimRecord(k, data, "clean", None, t_ms))
    return records


def create_topic(topic: str) -> None:
    from google.cloud import pubsub_v1

    publisher = pubsub_v1.PublisherClient()
    publisher.create_topic(name=topic)
    publisher.stop()


def create_subscription(topic: str, subscription: str) -> None:
    """A subscription retaining acknowledged messages (a restart seeks back)."""
    from google.cloud import pubsub_v1

    subscriber = pubsub_v1.SubscriberClient()
    subscriber.create_subscription(
        request={
            "name": subscription,
            "topic": topic,
            "ack_deadline_seconds": 60,
            "retain_acked_messages": True,
        }
    )
    subscriber.close()


class Publisher(threading.Thread):
    """Publishes records at ``rate`` in the background."""

    def __init__(self, records: list[SimRecord], topic: str, rate: float):
        super().__init__(daemon=True)
        self._records, self._topic, self._rate = records, topic, rate
        self.stats = None

    def run(self) -> None:
        self.stats = publish.publish_records(self._records, self._topic, rate=self._rate)


def store_args(config: dict, directory: Path) -> list[str]:
    """The job's store arguments for a store config (written to a YAML file)."""
    if config["type"] == "sqlite":
        return [f"--store_path={config['path']}"]
    path = directory / "store.yaml"
    path.write_text(yaml.safe_dump(config))
    return [f"--store_config={path}"]


class StreamJob:
    """``python -m beam_pipelines.streaming`` in its own process group."""

    def __init__(self, subscription: str, store: list[str], letters: Path, log: Path, env: dict):
        self.args = [
            sys.executable,
            "-m",
            "beam_pipelines.streaming",
            f"--input_subscription={subscription}",
            f"--dead_letter_dir={letters}",
            "--allowed_lateness_s=600",
            *store,
        ]
        self.log, self.env = log, env
        self.process: subprocess.Popen | None = None

    def start(self, *extra: str) -> StreamJob:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [*self.args, *extra],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
                cwd=ROOT,
            )
        return self

    def alive(self) -> None:
        code = self.process.poll()
        tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-40:])
        assert code is None, f"streaming job exited {code}:\n{tail}"

    def kill(self) -> None:
        """SIGKILL: no bundle finishes, no buffer is flushed."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGINT)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.kill()


VIEW_IDS = {
    USER_REALTIME: "users",
    ITEM_REALTIME: "items",
    USER_COENGAGEMENT: "users",
    ITEM_COENGAGEMENT: "items",
}


def read_views(client, users: list[str], items: list[str]) -> dict[str, dict]:
    ids = {"users": users, "items": items}
    return {view: client.read(view, ids[kind]) for view, kind in VIEW_IDS.items()}


def counts(rows: dict, column: str) -> dict[str, int]:
    return {key: row[column] if row else 0 for key, row in rows.items()}


def wait_until_applied(job: StreamJob, client, expected_users: dict, expected_items: dict):
    """Poll until the store counts every expected event (or more), then a little
    longer for anything still in flight; the job must stay alive meanwhile."""
    while True:
        job.alive()
        users = counts(client.read(USER_REALTIME, list(expected_users)), "user_event_count")
        items = counts(client.read(ITEM_REALTIME, list(expected_items)), "item_event_count")
        if all(users[u] >= n for u, n in expected_users.items()) and all(
            items[i] >= n for i, n in expected_items.items()
        ):
            time.sleep(5.0)
            return
        time.sleep(2.0)
