"""The byte encoding of per-key state: a round trip changes nothing the features see."""

from __future__ import annotations

import marshal

import pytest

from beam_pipelines.embedding_source import EmbeddingSource
from beam_pipelines.events import parse_event
from beam_pipelines.rewards import SHORT_VIDEO
from beam_pipelines.state import StateConfig
from beam_pipelines.state.keyed import decode_item, decode_user, encode_item, encode_user
from beam_pipelines.state.updaters import update_item
from beam_pipelines.transforms.rewards import score_event
from beam_pipelines.transforms.state import _UserStepper
from tests.helpers.events import SECOND_MS, T0_MS, event_json

CONFIG = StateConfig()


def _events(n: int):
    kinds = ("like", "impression", "share", "skip")
    return [
        score_event(
            parse_event(
                event_json(f"e{k}", "u1", f"i{k % 7}", kinds[k % 4], T0_MS + k * SECOND_MS)
            ),
            SHORT_VIDEO,
        )
        for k in range(n)
    ]


@pytest.mark.parametrize("n", [1, 3, 80])
def test_user_state_round_trip_keeps_features_and_seen_ids(n):
    stepper = _UserStepper(CONFIG, 600_000, EmbeddingSource())
    state = None
    for e in _events(n):
        state, letter = stepper.step(state, e)
        assert letter is None
    back = decode_user(encode_user(state))
    assert back.user.features() == state.user.features()
    assert back.user.recent == state.user.recent
    assert all(f"e{k}" in back.seen for k in range(n))
    # The decoded state keeps working: the next event applies the same way to both.
    nxt = _events(n + 1)[-1]
    a, _ = stepper.step(state, nxt)
    b, _ = stepper.step(back, nxt)
    assert a.user.features() == b.user.features()
    # And a redelivery is still a duplicate after the round trip.
    assert stepper.step(back, nxt)[1].reason == "duplicate"


def test_item_state_round_trip_keeps_features():
    state = None
    for e in _events(20):
        state = update_item(state, e, CONFIG)
    back = decode_item(encode_item(state))
    assert back.features(CONFIG) == state.features(CONFIG)
    assert back.sums.values.flags.writeable


def test_an_unknown_layout_is_an_error():
    with pytest.raises(ValueError, match="layout"):
        decode_user(marshal.dumps((99,), 4))
    with pytest.raises(ValueError, match="layout"):
        decode_item(marshal.dumps((99,), 4))
