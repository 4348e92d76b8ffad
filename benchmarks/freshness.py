"""Freshness: publish to the real Pub/Sub emulator → value readable in the online store.

    python -m benchmarks.freshness [--rate 200] [--seconds 30] [--probe-every 20]

Starts the emulator and the streaming job (DirectRunner, SQLite store) as
subprocesses, publishes simulated-looking events at ``--rate`` events/s, and
every ``--probe-every``-th event goes to a fresh probe user; a poller reads the
probe users from the store every 10 ms and records publish → visible. The
reference, in the same run, is the emulator hop alone: publish → a plain
streaming-pull subscriber receives it.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from benchmarks.common import emit, log

PROJECT = "rtp-bench"  # Beam checks GCP project names: 6-30 characters


def _event(index: int, user: str, now_ms: int) -> bytes:
    return json.dumps(
        {
            "event_id": f"f-{index}",
            "user_id": user,
            "item_id": f"i{index % 500}",
            "event_type": "like",
            "timestamp": now_ms,
        }
    ).encode()


def _percentiles(values: list[float]) -> dict:
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {"p50_ms": round(statistics.median(ordered) * 1000, 1), "p99_ms": round(p99 * 1000, 1)}


def emulator_hop(publisher, subscriber, topic: str, rate: float, seconds: float) -> list[float]:
    """Publish → received by a plain subscriber (the floor under any pipeline)."""
    sub = subscriber.subscription_path(PROJECT, "hop")
    subscriber.create_subscription(name=sub, topic=topic)
    sent, latencies = {}, []

    def on_message(message):
        latencies.append(time.monotonic() - sent[message.attributes["i"]])
        message.ack()

    future = subscriber.subscribe(sub, on_message)
    time.sleep(1.0)
    for i in range(int(rate * seconds)):
        sent[str(i)] = time.monotonic()
        publisher.publish(topic, b"x", i=str(i))
        time.sleep(1.0 / rate)
    time.sleep(2.0)
    future.cancel()
    return latencies


def _poll(store, pending: dict[str, float], seen: dict[str, float], stop: threading.Event):
    from feature_repo.features import USER_REALTIME

    while not stop.is_set():
        users = list(pending)
        if users:
            for user, row in store.read(USER_REALTIME, users).items():
                if row is not None and user not in seen:
                    seen[user] = time.monotonic() - pending.pop(user)
        time.sleep(0.01)


def pipeline_freshness(publisher, topic, sub, store, rate, seconds, probe_every) -> list[float]:
    pending: dict[str, float] = {}
    seen: dict[str, float] = {}
    stop = threading.Event()
    poller = threading.Thread(target=_poll, args=(store, pending, seen, stop), daemon=True)
    poller.start()
    for i in range(int(rate * seconds)):
        now_ms = int(time.time() * 1000)
        probe = i % probe_every == 0
        user = f"probe-{i}" if probe else f"u{i % 1000}"
        publisher.publish(topic, _event(i, user, now_ms), event_ts=str(now_ms))
        if probe:
            pending[user] = time.monotonic()
        time.sleep(1.0 / rate)
    deadline = time.monotonic() + 30
    while pending and time.monotonic() < deadline:
        time.sleep(0.1)
    stop.set()
    poller.join()
    if pending:
        log(f"{len(pending)} probes never became visible within 30 s")
    return list(seen.values())


def _start_job(sub: str, out: pathlib.Path, job_args: list[str]) -> subprocess.Popen:
    argv = [sys.executable, "-m", "beam_pipelines.streaming", f"--input_subscription={sub}"]
    argv += job_args
    argv += [f"--dead_letter_dir={out / 'dl'}", f"--store_path={out / 'online.db'}"]
    log_file = open(out / "job.log", "wb")  # noqa: SIM115 - the child owns it
    return subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)


def _wait_ready(publisher, topic, store, job, timeout_s: float = 180) -> None:
    from feature_repo.features import USER_REALTIME

    now_ms = int(time.time() * 1000)
    publisher.publish(topic, _event(-1, "warmup", now_ms), event_ts=str(now_ms)).result()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and job.poll() is None:
        try:
            if store.read(USER_REALTIME, ["warmup"])["warmup"] is not None:
                return
        except Exception:  # tables appear with the job's first write
            pass
        time.sleep(0.2)
    raise RuntimeError("streaming job exited or did not start in time")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=float, default=200.0)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--probe-every", type=int, default=20)
    p.add_argument(
        "--job-arg",
        action="append",
        default=[],
        help="Extra streaming-job flag, e.g. --job-arg=--write_max_buffering_s=0 (repeatable).",
    )
    args = p.parse_args()

    from google.cloud import pubsub_v1

    from beam_pipelines.jobs_common import store_config
    from feature_repo.store import FeatureStoreClient
    from rtp.local_servers import pubsub_emulator, stop_process_group

    with tempfile.TemporaryDirectory() as tmp, pubsub_emulator(PROJECT) as emulator:
        out = pathlib.Path(tmp)
        os.environ["PUBSUB_EMULATOR_HOST"] = emulator.address
        publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
        topic = publisher.topic_path(PROJECT, "events")
        publisher.create_topic(name=topic)
        hop = emulator_hop(publisher, subscriber, topic, args.rate, min(args.seconds, 10))
        sub = subscriber.subscription_path(PROJECT, "features")
        subscriber.create_subscription(name=sub, topic=topic)
        job = _start_job(sub, out, args.job_arg)
        try:
            with FeatureStoreClient(store_config(None, str(out / "online.db"))) as store:
                try:
                    _wait_ready(publisher, topic, store, job)
                except RuntimeError:
                    log((out / "job.log").read_text(errors="replace")[-3000:])
                    raise
                fresh = pipeline_freshness(
                    publisher, topic, sub, store, args.rate, args.seconds, args.probe_every
                )
        finally:
            stop_process_group(job)
    emit("emulator_hop", rate=args.rate, samples=len(hop), **_percentiles(hop))
    emit(
        "freshness_publish_to_store",
        rate=args.rate,
        job_args=args.job_arg,
        samples=len(fresh),
        **_percentiles(fresh),
        ratio_p50_to_hop=round(statistics.median(fresh) / statistics.median(hop), 2),
    )


if __name__ == "__main__":
    main()
