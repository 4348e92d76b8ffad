"""The streaming item job (``beam_pipelines.item_job``) as a subprocess on a topic of
the real Pub/Sub emulator, and the waits the tests around it share."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from feast.errors import FeatureViewNotFoundException

from beam_pipelines.jobs_common import store_config
from feature_repo.features import ITEM_CONTENT
from rtp.local_servers import Server, stop_process_group
from tests.helpers.components import require_import

PROJECT = "test-project"


def reader_config(store_path: Path) -> dict[str, Any]:
    """The job's SQLite store, opened without applying the definitions (the job has)."""
    return {**store_config(None, str(store_path)), "apply_on_open": False}


def reader(store_path: Path):
    from feature_repo.store import FeatureStoreClient

    return FeatureStoreClient(reader_config(store_path))


def tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def wait_for_row(job, log: Path, db: Path, item_id: str, timeout_s: float) -> dict:
    """Poll the store until ``item_id`` has an ``item_content`` row."""
    deadline = time.monotonic() + timeout_s
    client = None
    try:
        while time.monotonic() < deadline:
            assert job.poll() is None, f"item job exited {job.returncode}:\n{tail(log)}"
            if client is None and (db.parent / "registry.db").exists():
                try:
                    client = reader(db).open()
                except Exception:  # the job is still applying the definitions
                    client = None
            if client is not None:
                try:
                    row = client.read(ITEM_CONTENT, [item_id])[item_id]
                except FeatureViewNotFoundException:
                    # opened between the registry's creation and the job's apply of
                    # the views: its cached registry lacks them, open again
                    client.close()
                    client, row = None, None
                if row is not None:
                    return row
            time.sleep(0.2)
    finally:
        if client is not None:
            client.close()
    raise AssertionError(f"no item_content row for {item_id} in {timeout_s} s:\n{tail(log)}")


def publish(item_job: argparse.Namespace, record: dict | bytes) -> None:
    """Publish one item record (JSON of a dict, or raw bytes) to the job's topic."""
    data = record if isinstance(record, bytes) else json.dumps(record).encode()
    item_job.publisher.publish(item_job.topic, data).result(timeout=30)


@contextlib.contextmanager
def running_item_job(emulator: Server, tmp_path: Path) -> Iterator[argparse.Namespace]:
    """The streaming item job on a fresh topic and subscription of ``emulator`` (the
    emulator lives for the session: names are unique per call): ``job`` (the
    process), ``publisher``, ``topic``, ``out`` (item table under ``out/items``),
    ``db`` (its SQLite store) and ``log``."""
    pubsub_v1 = require_import(
        "google.cloud.pubsub_v1", "pip install -e '.[test]' (google-cloud-pubsub is a dependency)"
    )
    env = {**os.environ, "PUBSUB_EMULATOR_HOST": emulator.address}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PUBSUB_EMULATOR_HOST", emulator.address)
        publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
        name = f"item-uploads-{uuid.uuid4().hex[:8]}"
        topic = f"projects/{PROJECT}/topics/{name}"
        subscription = f"projects/{PROJECT}/subscriptions/{name}-job"
        publisher.create_topic(name=topic)
        subscriber.create_subscription(name=subscription, topic=topic, ack_deadline_seconds=60)
        subscriber.close()
        out, db, log = tmp_path / "out", tmp_path / "store" / "online.db", tmp_path / "job.log"
        args = [
            sys.executable,
            "-m",
            "beam_pipelines.item_job",
            f"--input_subscription={subscription}",
            f"--out={out}",
            f"--store_path={db}",
        ]
        with log.open("wb") as handle:
            job = subprocess.Popen(
                args,
                stdout=handle,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                cwd=Path(__file__).parents[2],
            )
        try:
            yield argparse.Namespace(
                job=job, publisher=publisher, topic=topic, out=out, db=db, log=log
            )
        finally:
            stop_process_group(job)
            publisher.stop()
