"""The whole ComputeFeatures graph in streaming mode, driven by TestStream on the
BundleBasedDirectRunner: watermarks, redeliveries, out-of-order and late events,
duplicates, and an item-embedding version change in the middle of a stream.

Each ``deliver`` is one bundle; the runner applies a key's elements in bundle
order, so the order given is the processing order the stateful steps see.
"""

from __future__ import annotations

import random

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.util import assert_that, equal_to

from beam_pipelines.embedding_source import EmbeddingSource
from beam_pipelines.embeddings import TableEmbeddings
from beam_pipelines.events import parse_event
from beam_pipelines.rewards import SHORT_VIDEO
from beam_pipelines.state import StateConfig, UserState
from beam_pipelines.transforms.graph import (
    DEAD_LETTERS,
    ITEM_ROWS,
    USER_ROWS,
    ComputeFeatures,
    FeatureSettings,
)
from beam_pipelines.transforms.rewards import score_event
from feature_repo.features import EVENT_TIMESTAMP, ITEM_KEY, USER_KEY
from tests.helpers.compare import assert_same_entities, last_row_per_entity
from tests.helpers.embeddings import random_vectors, write_table
from tests.helpers.events import MINUTE_MS, SECOND_MS, T0_MS, event_json, scored
from tests.helpers.pipelines import Collect, StreamBuilder, streaming_pipeline
from tests.helpers.state import item_fold, user_fold


def _run(stream: StreamBuilder, settings: FeatureSettings, expected_letters=None):
    """Run the graph; assert the dead letters as (reason, event_id); return the rows.

    Counters are not checked here: in streaming mode the BundleBasedDirectRunner
    reports a step's counters from its first bundle only."""
    p = streaming_pipeline()
    features = p | stream.build() | ComputeFeatures(settings)
    if expected_letters is not None:
        letters = features[DEAD_LETTERS] | beam.Map(lambda d: (d.reason, d.event_id))
        assert_that(letters, equal_to(expected_letters), label="DeadLetters")
    users, items = Collect(), Collect()
    _ = features[USER_ROWS] | "Users" >> users
    _ = features[ITEM_ROWS] | "Items" >> items
    p.run().wait_until_finish()
    return users.collected(), items.collected()


def _counts(rows, key: str, entity: str) -> list[int]:
    count = "user_event_count" if key == USER_KEY else "item_event_count"
    return [r[count] for r in rows if r[key] == entity]


def test_redeliveries_are_duplicates_until_lateness_rejects_them_never_applied_twice():
    """Deduplication remembers a user's applied event ids as far back as the allowed
    lateness reaches: a redelivery within it is a ``duplicate``; once the user's
    newest event is more than the bound ahead, the redelivery is ``late``. Either
    way it is applied once, whatever the delay, and no watermark or timer is involved."""
    e1 = (event_json("e1", "u1", "i1", "like", T0_MS), T0_MS)
    later = T0_MS + 120 * SECOND_MS
    e2 = (event_json("e2", "u1", "i2", "like", later), later)
    settings = FeatureSettings(rewards=SHORT_VIDEO, allowed_lateness_s=60)
    stream = (
        StreamBuilder(T0_MS)
        .deliver([e1])
        .watermark(T0_MS + 30 * 86_400 * SECOND_MS)  # a month of watermark: nothing expires
        .deliver([e1])  # still remembered: duplicate
        .deliver([e2])  # u1's newest moves 120 s ahead, past the 60 s bound
        .deliver([e1])  # now late, and still not applied again
    )
    letters = [("duplicate", "e1"), ("late", "e1")]
    users, items = _run(stream, settings, expected_letters=letters)
    assert _counts(users, USER_KEY, "u1") == [1, 2]
    assert _counts(items, ITEM_KEY, "i1") == [1]


# Two users, three items, eight events within 140 s of each other.
IN_ORDER = [
    (
        event_json(f"e{k}", f"u{k % 2}", f"i{k % 3}", kind, T0_MS + 20 * k * SECOND_MS, **extra),
        T0_MS + 20 * k * SECOND_MS,
    )
    for k, (kind, extra) in enumerate(
        [
            ("impression", {}),
            ("like", {}),
            ("view", {"watch_ms": 4000, "item_duration_ms": 5000}),
            ("skip", {}),
            ("share", {}),
            ("impression", {}),
            ("hide", {}),
            ("follow", {}),
        ]
    )
]


def test_out_of_order_within_the_lateness_bound_gives_the_in_order_state():
    shuffled = IN_ORDER[:]
    random.Random(4).shuffle(shuffled)
    assert shuffled != IN_ORDER
    settings = FeatureSettings(rewards=SHORT_VIDEO)  # 600 s lateness > the 140 s spread
    # One message per bundle, so there is a row per update to look at.
    stream = StreamBuilder(T0_MS)
    for message in shuffled:
        stream.deliver([message])
    users, items = _run(stream, settings, expected_letters=[])

    # The same events applied in event-time order by the pure state code.
    in_order = [score_event(parse_event(data), SHORT_VIDEO) for data, _ in IN_ORDER]
    want_users, _, late = user_fold(in_order, settings.state, lateness_ms=600_000)
    want_items = item_fold(in_order, settings.state)
    assert late == []
    got_users = last_row_per_entity(users, USER_KEY)
    assert_same_entities(got_users, last_row_per_entity(want_users, USER_KEY), rel=1e-9)
    assert_same_entities(
        last_row_per_entity(items, ITEM_KEY), last_row_per_entity(want_items, ITEM_KEY), rel=1e-9
    )
    assert got_users["u0"]["user_event_count"] == 4
    # Applied out of order indeed: some update did not advance its user's newest time.
    stamps = [(r[USER_KEY], r[EVENT_TIMESTAMP]) for r in users]
    assert any(stamps[k] in stamps[:k] for k in range(len(stamps)))


def test_events_past_the_lateness_bound_are_dead_lettered_and_not_applied():
    newest = T0_MS + 1000 * SECOND_MS
    stream = (
        StreamBuilder(T0_MS)
        .deliver(
            [
                (event_json("e1", "u1", "i1", "like", newest), newest),
                (event_json("e2", "u1", "i-late", "like", T0_MS), T0_MS),  # 1000 s behind
                (event_json("e3", "u1", "i1", "share", newest - 500 * SECOND_MS), newest),  # 500 s
                (event_json("e4", "u1", "i1", "like", newest - 601 * SECOND_MS), newest),  # 601 s
            ]
        )
        .watermark(newest + 3600 * SECOND_MS)
        # Lateness is per user, not by the watermark: u2's first event applies.
        .deliver([(event_json("e5", "u2", "i2", "like", T0_MS), T0_MS)])
    )
    settings = FeatureSettings(rewards=SHORT_VIDEO, allowed_lateness_s=600)
    users, items = _run(stream, settings, expected_letters=[("late", "e2"), ("late", "e4")])
    # A key's newest row per bundle.
    assert _counts(users, USER_KEY, "u1") == [2]
    final = last_row_per_entity(users, USER_KEY)
    assert final["u1"]["user_recent_items"] == ["i1", "i1"]
    assert final["u1"]["user_last_event_ms"] == newest
    assert _counts(users, USER_KEY, "u2") == [1]
    assert _counts(items, ITEM_KEY, "i1") == [2]
    assert _counts(items, ITEM_KEY, "i-late") == []


def test_duplicates_are_dead_lettered_and_the_event_counted_once():
    e1 = (event_json("e1", "u1", "i1", "like", T0_MS), T0_MS)
    e2 = (event_json("e2", "u1", "i2", "like", T0_MS + SECOND_MS), T0_MS + SECOND_MS)
    # A redelivery re-encoded by a client (RFC 3339 time) is the same event_id.
    e1_rfc = (event_json("e1", "u1", "i1", "like", "2026-01-01T00:00:00Z"), T0_MS)
    stream = (
        StreamBuilder(T0_MS).deliver([e1, e1, e2]).watermark(T0_MS + MINUTE_MS).deliver([e1_rfc])
    )
    expected = [("duplicate", "e1")] * 2
    users, items = _run(stream, FeatureSettings(rewards=SHORT_VIDEO), expected_letters=expected)
    # The first bundle's newest row; the second bundle applies nothing.
    assert _counts(users, USER_KEY, "u1") == [2]
    assert _counts(items, ITEM_KEY, "i1") == [1] and _counts(items, ITEM_KEY, "i2") == [1]


SWITCH_MS = T0_MS + 10 * MINUTE_MS
RECENT_N = 3


@pytest.fixture
def model_base(tmp_path):
    """Table 1 (width 4, active from the start) and table 2 (width 6, active from
    SWITCH_MS in event time, without item i5)."""
    items = [f"i{k}" for k in range(6)]
    write_table(tmp_path, 1, random_vectors(items, 4, seed=1))
    write_table(tmp_path, 2, random_vectors(items[:5], 6, seed=2), active_from_ms=SWITCH_MS)
    return tmp_path


def test_embedding_version_switch_rebuilds_from_the_last_n_events(model_base):
    before = [
        scored("p0", "u1", "i0", "like", T0_MS),
        scored("p1", "u1", "i1", "share", T0_MS + MINUTE_MS),
        scored("p2", "u1", "i5", "like", T0_MS + 2 * MINUTE_MS),
        scored("p3", "u1", "i2", "skip", T0_MS + 3 * MINUTE_MS),
        scored("p4", "u1", "i3", "like", T0_MS + 4 * MINUTE_MS),
    ]
    after = [
        scored("q0", "u1", "i4", "like", SWITCH_MS + MINUTE_MS),
        scored("q1", "u1", "i0", "share", SWITCH_MS + 2 * MINUTE_MS),
    ]
    other = scored("o0", "u2", "i1", "like", T0_MS + 5 * MINUTE_MS)  # stays on table 1
    messages = [
        (event_json(e.event_id, e.user_id, e.item_id, e.event_type, e.timestamp_ms), e.timestamp_ms)
        for e in [*before, other, *after]
    ]
    config = StateConfig(recent_events=RECENT_N)
    settings = FeatureSettings(
        rewards=SHORT_VIDEO, state=config, embeddings=EmbeddingSource(str(model_base))
    )
    stream = StreamBuilder(T0_MS)
    for message in messages:  # one per bundle: a row per update
        stream.deliver([message])
    users, _ = _run(stream, settings, expected_letters=[])

    u1 = [r for r in users if r[USER_KEY] == "u1"]
    assert [r["user_embedding_version"] for r in u1] == ["1"] * 5 + ["2"] * 2
    assert [len(r["user_emb_short"]) for r in u1] == [4] * 5 + [6] * 2
    assert [r["user_embedding_version"] for r in users if r[USER_KEY] == "u2"] == ["1"]

    # Expectation: pool under table 2 only the last N events remembered at the
    # switch (p2..p4; i5 is not in table 2) plus the events after it.
    table2 = TableEmbeddings.from_parquet(model_base / "item_embeddings/2/item_embeddings.parquet")
    for k, row in enumerate(u1[5:]):
        rebuilt = UserState(config, table2.dim, "2")
        for e in [*before[-RECENT_N:], *after[: k + 1]]:
            rebuilt.push(e, table2.get(e.item_id), RECENT_N)
        want = rebuilt.features()
        for name in ("user_emb_short", "user_emb_long"):
            np.testing.assert_allclose(row[name], want[name], rtol=1e-6, atol=1e-7)
    # Counts and rates keep the whole history across the switch.
    everything = UserState(config, table2.dim, "2")
    for e in [*before, *after]:
        everything.push(e, None, RECENT_N)
    full = everything.features()
    assert u1[-1]["user_event_count"] == 7
    for name in (
        "user_events_short",
        "user_events_long",
        "user_reward_rate_long",
        "user_engagement_rate_short",
    ):
        assert u1[-1][name] == pytest.approx(full[name], rel=1e-12)
    assert u1[-1]["user_recent_items"] == ["i0", "i4", "i3"]
