"""ComputeRewards: each event becomes a ScoredEvent with the short-video reward,
engagement flag and exposure flag worked out by hand."""

from __future__ import annotations

import apache_beam as beam

from beam_pipelines.rewards import SHORT_VIDEO
from beam_pipelines.state.records import ScoredEvent
from beam_pipelines.transforms.rewards import ComputeRewards
from tests.helpers.events import T0_MS, event
from tests.helpers.pipelines import assert_outputs, batch_pipeline

EVENTS = [
    event("e1", "u1", "i1", "impression", T0_MS),
    event("e2", "u1", "i1", "view", T0_MS + 1, watch_ms=3000, item_duration_ms=10_000),
    event("e3", "u1", "i2", "view", T0_MS + 2, watch_ms=25_000, item_duration_ms=10_000),
    event("e4", "u2", "i2", "view", T0_MS + 3),  # no watch time: the rule's "missing"
    event("e5", "u2", "i3", "like", T0_MS + 4),
    event("e6", "u2", "i3", "share", T0_MS + 5),
    event("e7", "u2", "i4", "skip", T0_MS + 6),
    event("e8", "u2", "i4", "hide", T0_MS + 7),
    event("e9", "u3", "i5", "follow", T0_MS + 8),
]
# (reward, engaged, exposure, conversion): watch ratio clipped to [0, 1.5], engaged
# from 0.5; only impressions are exposures and only engaged views conversions in
# the short-video preset.
BY_HAND = {
    "e1": (0.0, False, True, False),
    "e2": (0.3, False, False, False),
    "e3": (1.5, True, False, True),
    "e4": (0.0, False, False, False),
    "e5": (1.0, True, False, False),
    "e6": (2.0, True, False, False),
    "e7": (-0.5, False, False, False),
    "e8": (-2.0, False, False, False),
    "e9": (2.0, True, False, False),
}


def _expected() -> list[ScoredEvent]:
    expected = []
    for e in EVENTS:
        reward, engaged, exposure, conversion = BY_HAND[e.event_id]
        expected.append(
            ScoredEvent(
                e.event_id,
                e.user_id,
                e.item_id,
                e.event_type,
                e.timestamp_ms,
                reward,
                engaged,
                exposure,
                conversion=conversion,
                source=e,  # late and duplicate letters carry the event as it came
            )
        )
    return expected


def test_rewards_streaming():
    p = batch_pipeline()
    streamed = p | "Events" >> beam.Create(EVENTS) | "Score" >> ComputeRewards(SHORT_VIDEO)
    assert_outputs({"streaming": (streamed, _expected())})
    p.run().wait_until_finish()
