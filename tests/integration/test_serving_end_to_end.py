"""The loop end to end on the embedded default, with the real training and export:

simulator events → backfill (``--online``) → SQLite online store; ``rtp train``'s
API on that history → export; the service answers for the simulated users through
the in-process models and through the TF Serving stand-in over gRPC with the same
ranking. Then each of a few users has a burst of engagement with the topic they see
least of; the bursts go through the pipeline again and the share of those topics in
the users' top-k rises (summed over the users: a tiny model trained for a minute does
not place every topic well).

Slow (a few minutes: two backfills and a training run), kept small.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from beam_pipelines.backfill import run_backfill
from beam_pipelines.events import parse_timestamp_ms
from beam_pipelines.jobs_common import store_config
from rtp.simulator import cli as simulate_cli
from rtp.tfserving_standin.launch import standin
from serving.app import create_app
from serving.config import ServingConfig

pytestmark = pytest.mark.timeout(2400)
K = 20
BURST_ITEMS = 12
SHIFTED_USERS = 4


def simulate(work: Path) -> tuple[Path, dict[str, str], dict[str, int]]:
    """(event log, topic of each item, duration of each item in ms)."""
    log = work / "events.jsonl"
    # 3000 events of 40 users span ~9 h: start 12 h ago so that all of it is past.
    start = dt.datetime.now(dt.UTC) - dt.timedelta(hours=12)
    simulate_cli.main(
        [
            "--events=3000",
            "--users=40",
            "--items=200",
            "--topics=6",
            "--seed=3",
            "--dirty-fraction=0",
            f"--start={start.strftime('%Y-%m-%dT%H:%M:%SZ')}",
            f"--out={log}",
        ]
    )
    items = [json.loads(line) for line in Path(f"{log}.items.jsonl").read_text().splitlines()]
    return (
        log,
        {i["item_id"]: i["topic"] for i in items},
        {i["item_id"]: int(i["duration_ms"]) for i in items},
    )


def train(work: Path, log: Path, history: Path) -> Path:
    """``rtp train`` through its API on the backfill's history; returns the model base."""
    from models.config import TrainConfig
    from models.train import export_trained, fit, parser

    base = work / "models"
    args = parser().parse_args(
        [
            "--events",
            str(log),
            "--items",
            f"{log}.items.jsonl",
            "--out",
            str(base),
            "--history",
            str(history),
            "--epochs",
            "3",
        ]
    )
    # Small batches and more epochs: a few hundred positives would otherwise make one
    # gradient step per epoch. Retrieval returns 60 of the 200 items.
    config = TrainConfig(seed=0, epochs=30, retrieval_batch=64, serving_k=60)
    export_trained(fit(args, config, time.perf_counter()), base, config)
    return base


def serving_config(base: Path, features: Path, **models: Any) -> ServingConfig:
    return ServingConfig(
        model_base=str(base),
        models=models or {"type": "inprocess"},
        store=store_config(None, str(features / "online.db")),
        ranking={"seed": 11},
    )


def recommend(client: TestClient, user_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/recommendations?user_id={user_id}&k={K}")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["fallback"] is None, body
    return body


def burst(log: Path, user_id: str, items: list[str], durations: dict[str, int]) -> list[str]:
    """Impression, a full watch and a like on each item, after the user's last event."""
    last = max(
        parse_timestamp_ms(e["timestamp"])
        for e in map(json.loads, log.read_text().splitlines())
        if e["user_id"] == user_id
    )
    t = max(last, int(time.time() * 1000) - 60_000) + 1000
    lines = []
    for n, item in enumerate(items):
        base = {"user_id": user_id, "item_id": item, "surface": "short_video_feed"}
        watched = {"watch_ms": durations[item], "item_duration_ms": durations[item]}
        for kind, extra in (("impression", {}), ("view", watched), ("like", {})):
            t += 1000
            event = {
                **base,
                "event_id": f"burst-{user_id}-{n}-{kind}",
                "event_type": kind,
                "timestamp": t,
                **extra,
            }
            lines.append(json.dumps(event))
    return lines


def test_loop_end_to_end(tmp_path: Path) -> None:
    log, topics, durations = simulate(tmp_path)
    features = tmp_path / "features"
    store = ["--store_path", str(features / "online.db")]
    run_backfill(["--events", str(log), "--out", str(features), "--online", *store])
    base = train(tmp_path, log, tmp_path / "features" / "offline")
    events_per_user = Counter(json.loads(line)["user_id"] for line in log.read_text().splitlines())
    users = [u for u, _ in events_per_user.most_common(5)]

    # In-process and TF Serving (gRPC stand-in): the same ranking, item for item.
    with TestClient(create_app(serving_config(base, tmp_path / "features"))) as client:
        inprocess = {u: recommend(client, u) for u in users}
    with (
        standin(base, rest=False) as (server, _),
        TestClient(
            create_app(
                serving_config(
                    base, tmp_path / "features", type="grpc", address=server.address, timeout_s=5.0
                )
            )
        ) as client,
    ):
        remote = {u: recommend(client, u) for u in users}
    for user in users:
        assert len(inprocess[user]["items"]) == K
        assert inprocess[user]["model_version"] == remote[user]["model_version"]
        assert [(i["item_id"], i["source"]) for i in remote[user]["items"]] == [
            (i["item_id"], i["source"]) for i in inprocess[user]["items"]
        ], user
        for ours, theirs in zip(inprocess[user]["items"], remote[user]["items"], strict=True):
            assert theirs["score"] == pytest.approx(ours["score"], abs=1e-5)

    # A burst of engagement, per user, with the topic the user sees least of.
    by_topic = Counter(topics.values())
    candidates = sorted(t for t in by_topic if by_topic[t] >= 2 * BURST_ITEMS)
    chosen: dict[str, str] = {}
    lines: list[str] = []
    for user in users[:SHIFTED_USERS]:
        shown = [i["item_id"] for i in inprocess[user]["items"]]
        shares = Counter(topics[i] for i in shown)
        chosen[user] = min(candidates, key=lambda t: shares[t])
        fresh = [i for i in sorted(topics) if topics[i] == chosen[user] and i not in shown]
        lines += burst(log, user, fresh[:BURST_ITEMS], durations)
    with_burst = tmp_path / "events_with_burst.jsonl"
    with_burst.write_text(log.read_text() + "\n".join(lines) + "\n")
    # The same pipeline as before the burst (hashed item vectors; the service re-pools
    # the last events in the model's space), so before and after differ by the burst only.
    after_dir = tmp_path / "features_after"
    store = ["--store_path", str(after_dir / "online.db")]
    run_backfill(["--events", str(with_burst), "--out", str(after_dir), "--online", *store])
    with TestClient(create_app(serving_config(base, tmp_path / "features_after"))) as client:
        after = {user: recommend(client, user) for user in chosen}

    def share(body: dict[str, Any], topic: str) -> float:
        return sum(topics[i["item_id"]] == topic for i in body["items"]) / K

    before_shares = [share(inprocess[u], t) for u, t in chosen.items()]
    after_shares = [share(after[u], t) for u, t in chosen.items()]
    for (user, topic), b, a in zip(chosen.items(), before_shares, after_shares, strict=True):
        print(f"{user}: share of {topic!r} in the top-{K} {b:.2f} → {a:.2f}")
    assert sum(after_shares) > sum(before_shares)
    for user in chosen:
        assert after[user]["feature_age_s"] < 600
        burst_items = {
            json.loads(line)["item_id"] for line in lines if json.loads(line)["user_id"] == user
        }
        # Items engaged with are not recommended again.
        assert not burst_items & {i["item_id"] for i in after[user]["items"]}
