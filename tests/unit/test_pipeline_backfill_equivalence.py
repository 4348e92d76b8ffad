"""Streaming ≡ backfill: the same simulated events (with duplicates, late and
invalid lines, and some neighbours swapped) in the same arrival order give the
same final user and item state through the streaming graph (TestStream) and
through ``run_backfill`` on a JSONL file, and the same dead letters."""

from __future__ import annotations

import collections
import random

import apache_beam as beam
import pyarrow.parquet as pq
import pytest

from beam_pipelines import backfill
from beam_pipelines.rewards import SHORT_VIDEO
from beam_pipelines.transforms.coengagement import ITEM_PAIR_ROWS, USER_PAIR_ROWS
from beam_pipelines.transforms.dead_letters import DeadLetter
from beam_pipelines.transforms.graph import (
    DEAD_LETTERS,
    ITEM_ROWS,
    USER_ROWS,
    ComputeFeatures,
    FeatureSettings,
)
from feature_repo.features import (
    EVENT_TIMESTAMP,
    ITEM_COENGAGEMENT,
    ITEM_KEY,
    ITEM_REALTIME,
    USER_COENGAGEMENT,
    USER_KEY,
    USER_REALTIME,
)
from rtp.simulator.config import DirtyKind, SimulatorConfig
from rtp.simulator.simulation import simulate
from tests.helpers.compare import assert_same_entities, last_row_per_entity
from tests.helpers.pipelines import Collect, StreamBuilder, streaming_pipeline
from tests.helpers.sinks import RecordingSinkFactory

SIM = SimulatorConfig(
    n_events=120,
    n_users=6,
    n_items=25,
    seed=4,
    dirty_fraction=0.15,
    dirty_kinds=(
        DirtyKind.DUPLICATE,
        DirtyKind.LATE,
        DirtyKind.MALFORMED_JSON,
        DirtyKind.BAD_TIMESTAMP,
        DirtyKind.INVALID_UTF8,
    ),
)


def _arrivals() -> list[tuple[bytes, int]]:
    """(data, event_ts) in arrival order: the simulator's lines with a few
    neighbours swapped (out of order, within the lateness bound). Lines without a
    usable timestamp get their predecessor's, as a publish time would be."""
    records = list(simulate(SIM))
    kinds = collections.Counter(r.kind for r in records)
    assert kinds["duplicate"] >= 3 and kinds["late"] >= 3 and kinds["bad_timestamp"] >= 2
    rng = random.Random(0)
    for k in sorted(rng.sample(range(len(records) - 1), 15)):
        records[k], records[k + 1] = records[k + 1], records[k]
    out, last_ms = [], SIM.start_ms
    for record in records:
        last_ms = record.event_time_ms or last_ms
        out.append((record.data, last_ms))
    return out


def _letter_key(letter: DeadLetter):
    # Parse failures are identified by their bytes; duplicate and late ones by
    # event id and time (a late letter's payload carries the backfill's seq).
    payload = letter.payload if letter.event_id is None else None
    return letter.reason, letter.event_id, letter.event_time_ms, payload


def _streaming(arrivals):
    p = streaming_pipeline()
    stream = StreamBuilder(SIM.start_ms).deliver(arrivals)
    features = p | stream.build() | ComputeFeatures(FeatureSettings(rewards=SHORT_VIDEO))
    users, items, letters = Collect(), Collect(), Collect()
    user_pairs, item_pairs = Collect(), Collect()
    _ = features[USER_ROWS] | "Users" >> users
    _ = features[ITEM_ROWS] | "Items" >> items
    _ = features[USER_PAIR_ROWS] | "UserPairs" >> user_pairs
    _ = features[ITEM_PAIR_ROWS] | "ItemPairs" >> item_pairs
    _ = features[DEAD_LETTERS] | "Keys" >> beam.Map(_letter_key) | "Letters" >> letters
    p.run().wait_until_finish()
    _streaming.pairs = (user_pairs.collected(), item_pairs.collected())
    return users.collected(), items.collected(), letters.collected()


@pytest.fixture
def recording_online_store(tmp_path, monkeypatch):
    """The backfill's --online sink, swapped for one that records full-precision rows."""
    factory = RecordingSinkFactory(tmp_path / "online.jsonl")
    monkeypatch.setattr(backfill, "FeastSinkFactory", lambda config: factory)
    return factory


def test_streaming_and_backfill_agree_on_final_state_and_dead_letters(
    tmp_path, recording_online_store
):
    arrivals = _arrivals()
    users, items, letters = _streaming(arrivals)

    events = tmp_path / "events.jsonl"
    events.write_bytes(b"".join(data + b"\n" for data, _ in arrivals))
    out = tmp_path / "backfill"
    argv = ["--events", str(events), "--out", str(out), "--online", "--order", "arrival"]
    summary = backfill.run_backfill(argv)  # the stream's arrival order, its decisions

    user_final = recording_online_store.stored(USER_REALTIME, USER_KEY)
    item_final = recording_online_store.stored(ITEM_REALTIME, ITEM_KEY)
    assert_same_entities(last_row_per_entity(users, USER_KEY), user_final, rel=1e-9)
    assert_same_entities(last_row_per_entity(items, ITEM_KEY), item_final, rel=1e-9)
    # Co-engagement: the same pair windows and neighbour rows.
    user_pairs, item_pairs = _streaming.pairs
    assert last_row_per_entity(user_pairs, USER_KEY) == recording_online_store.stored(
        USER_COENGAGEMENT, USER_KEY
    )
    assert last_row_per_entity(item_pairs, ITEM_KEY) == recording_online_store.stored(
        ITEM_COENGAGEMENT, ITEM_KEY
    )
    assert item_pairs, "the simulated stream has co-engaged items"

    backfill_letters = [
        _letter_key(DeadLetter.from_json(line))
        for path in sorted((out / "dead_letters").glob("*.jsonl"))
        for line in path.read_bytes().splitlines()
    ]
    assert sorted(letters, key=repr) == sorted(backfill_letters, key=repr)
    reasons = collections.Counter(key[0] for key in letters)
    assert summary["dead_lettered_by_reason"] == dict(reasons)
    # Streaming emits a user's newest row per bundle, so at most one row per update.
    assert summary["applied"] == sum(r["user_event_count"] for r in user_final.values())
    assert len(user_final) <= len(users) <= summary["applied"]

    # The offline history ends on the same values (stored as float32).
    for view, key, final in (
        (USER_REALTIME, USER_KEY, user_final),
        (ITEM_REALTIME, ITEM_KEY, item_final),
    ):
        history = pq.read_table(out / "offline" / view).to_pylist()
        last = last_row_per_entity(history, key)
        for row in last.values():
            row[EVENT_TIMESTAMP] = int(row[EVENT_TIMESTAMP].timestamp() * 1000)
        assert_same_entities(last, final, rel=1e-6, abs_=1e-7)
