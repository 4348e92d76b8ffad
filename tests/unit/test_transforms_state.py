"""UpdateUserState and UpdateItemState: the Beam wrappers apply the pure state code
per key in processing order and dead-letter events more than the allowed lateness
behind the user's newest one. (The backfill's replay orders: test_state_batch_fold.)

Expectations come from folding the same events with the pure updaters; a few
values are checked by hand. Independent branches share a pipeline to keep the
suite fast.
"""

from __future__ import annotations

import apache_beam as beam
import pytest

from beam_pipelines.embedding_source import EmbeddingSource
from beam_pipelines.state import StateConfig
from beam_pipelines.transforms.dead_letters import DEAD_LETTER
from beam_pipelines.transforms.state import ACCEPTED, ROWS, UpdateItemState, UpdateUserState
from feature_repo.features import EVENT_TIMESTAMP, ITEM_KEY, USER_KEY
from tests.helpers.events import MINUTE_MS, SECOND_MS, T0_MS, scored
from tests.helpers.pipelines import assert_outputs, state_pipeline
from tests.helpers.state import item_fold, user_fold

CONFIG = StateConfig()
LATENESS_S = 600.0
HOUR_S = 3600.0


def _user_fold(events):
    return user_fold(events, CONFIG, int(LATENESS_S * 1000))


def _item_fold(events):
    return item_fold(events, CONFIG)


def _per_entity(rows, key) -> dict[str, list[dict]]:
    out = {}
    for row in rows:
        out.setdefault(row[key], []).append(row)
    return out


def _late_letter(letter):
    assert "behind the user's newest" in letter.detail
    return letter.reason, letter.event_id, letter.event_time_ms


# u1: b is newest at +60 s; c (30 s behind) applies; d (601 s behind) is late.
USER_STREAM = [
    scored("a", "u1", "i1", "like", T0_MS),
    scored("b", "u1", "i2", "view", T0_MS + MINUTE_MS, watch_ms=5000, item_duration_ms=10_000),
    scored("f", "u2", "i1", "impression", T0_MS + 5 * SECOND_MS),
    scored("c", "u1", "i3", "skip", T0_MS + 30 * SECOND_MS),
    scored("d", "u1", "i4", "like", T0_MS + MINUTE_MS - 601 * SECOND_MS),
    scored("e", "u1", "i1", "share", T0_MS + 2 * MINUTE_MS),
]

# i1: an impression, then one short half-life (1 h) later an engaged view (the
# short-video conversion, watch ratio 0.6) and a like (engaged, not a conversion).
LATER_MS = T0_MS + int(HOUR_S * 1000)
ITEM_EVENTS = [
    scored("a", "u1", "i1", "impression", T0_MS),
    scored("b", "u2", "i2", "impression", T0_MS),
    scored("c", "u1", "i1", "view", LATER_MS, watch_ms=6000, item_duration_ms=10_000),
    scored("d", "u2", "i1", "like", LATER_MS),
]


def test_streaming_user_and_item_state():
    rows, accepted, late = _user_fold(USER_STREAM)
    assert late == ["d"] and [r["user_event_count"] for r in rows] == [1, 2, 1, 3, 4]
    # Stamped with the user's newest event time, not the applied event's own time.
    assert [r[EVENT_TIMESTAMP] - T0_MS for r in rows if r[USER_KEY] == "u1"] == [
        0,
        MINUTE_MS,
        MINUTE_MS,
        2 * MINUTE_MS,
    ]
    assert rows[-1]["user_recent_items"] == ["i1", "i2", "i3", "i1"]  # newest first

    p = state_pipeline()
    users = (
        p
        | "UserEvents" >> beam.Create(USER_STREAM)
        | "Users" >> UpdateUserState(CONFIG, EmbeddingSource(), LATENESS_S)
    )
    letters = users[DEAD_LETTER] | beam.Map(_late_letter)
    items = p | "ItemEvents" >> beam.Create(ITEM_EVENTS) | "Items" >> UpdateItemState(CONFIG)
    # One bundle: each key's newest row, emitted when the bundle ends.
    assert_outputs(
        {
            "user_rows": (users[ROWS], _newest(rows, USER_KEY)),
            "accepted": (users[ACCEPTED], accepted),
            "late": (letters, [("late", "d", T0_MS + MINUTE_MS - 601 * SECOND_MS)]),
            "item_rows": (items, _newest(_item_fold(ITEM_EVENTS), ITEM_KEY)),
        }
    )
    p.run().wait_until_finish()


def _newest(rows, key) -> list[dict]:
    return [entity_rows[-1] for entity_rows in _per_entity(rows, key).values()]


def test_item_state_values_by_hand():
    final = _item_fold(ITEM_EVENTS)[-1]
    long_h = CONFIG.item_long_half_life_s
    assert final["item_event_count"] == 3
    assert final["item_impressions_short"] == pytest.approx(0.5)
    assert final["item_impressions_long"] == pytest.approx(2 ** (-HOUR_S / long_h))
    assert final["item_engagements_short"] == final["item_engagements_long"] == 2.0
    assert final["item_reward_sum_short"] == pytest.approx(1.6)
    # Beta(1 + conversions, 1 + max(exposures - conversions, 0)), long half-life:
    # the conversion (weight 1) outweighs the decayed impression (0.996).
    assert final["item_beta_alpha"] == 2.0 and final["item_beta_beta"] == 1.0
    prior = 1 / long_h
    assert final["item_trending"] == pytest.approx((2 / HOUR_S + prior) / (2 / long_h + prior))
    assert final["item_last_event_ms"] == final[EVENT_TIMESTAMP] == LATER_MS


# Arrival order x, y, z: y is 1000 s behind x (late); z is 500 s behind (applied).
def test_negative_lateness_is_rejected():
    with pytest.raises(ValueError, match="allowed_lateness_s"):
        UpdateUserState(CONFIG, EmbeddingSource(), allowed_lateness_s=-1)


def test_late_and_duplicate_letters_carry_the_event_as_it_came():
    """Replayable dead letters: the payload is the contract JSON of the parsed event."""
    from beam_pipelines.events import parse_event
    from beam_pipelines.rewards import SHORT_VIDEO
    from beam_pipelines.transforms.rewards import score_event
    from beam_pipelines.transforms.state import _UserStepper
    from tests.helpers.events import event_json

    stepper = _UserStepper(CONFIG, int(LATENESS_S * 1000), EmbeddingSource())
    raw = {
        "new": event_json("new", "u1", "i1", "like", T0_MS + 3600 * SECOND_MS),
        "old": event_json("old", "u1", "i2", "view", T0_MS, watch_ms=900, item_duration_ms=1000),
    }
    events = {k: score_event(parse_event(v), SHORT_VIDEO) for k, v in raw.items()}
    state, _ = stepper.step(None, events["new"])
    _, late = stepper.step(state, events["old"])
    _, duplicate = stepper.step(state, events["new"])
    assert (late.reason, duplicate.reason) == ("late", "duplicate")
    assert parse_event(late.payload) == parse_event(raw["old"])
    assert parse_event(duplicate.payload) == parse_event(raw["new"])
