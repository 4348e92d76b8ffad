"""CachingStateCoder: bytes it just wrote read back as the same object, once."""

from __future__ import annotations

import pickle

import pytest

from beam_pipelines.state import StateConfig
from beam_pipelines.state.keyed import ItemKeyState, decode_item_key, encode_item_key
from beam_pipelines.state.seen import SeenEvents
from beam_pipelines.state.updaters import update_item
from beam_pipelines.transforms.state_coders import CachingStateCoder, item_state_coder
from tests.helpers.events import T0_MS, scored


def _item(n: int):
    state = None
    for k in range(n):
        state = update_item(state, scored(f"e{k}", "u1", "i1", "like", T0_MS + k), StateConfig())
    return ItemKeyState(state, SeenEvents.from_ids({"e0": T0_MS}))


def test_reading_back_what_was_just_written_skips_decoding_once():
    coder = CachingStateCoder(encode_item_key, decode_item_key)
    state = _item(3)
    data = coder.encode(state)
    assert coder.decode(data) is state  # from the cache
    again = coder.decode(data)  # handed out once: now decoded
    assert again is not state
    assert again.item.features(StateConfig()) == state.item.features(StateConfig())
    assert "e0" in again.seen


def test_the_cache_is_bounded_and_not_pickled():
    coder = CachingStateCoder(repr, eval, cache_size=2)
    for k in range(5):
        coder.encode(k)
    assert len(coder._cache) == 2
    clone = pickle.loads(pickle.dumps(coder))
    assert clone == coder and hash(clone) == hash(coder)
    assert clone._cache == {}
    assert clone.decode(coder.encode(7)) == 7
    with pytest.raises(ValueError, match="cache_size"):
        CachingStateCoder(repr, eval, cache_size=-1)


def test_the_state_dofns_coders_hand_out_fresh_objects():
    # Two keys whose states encode alike must never share one object (see the module).
    coder = item_state_coder()
    state = _item(3)
    data = coder.encode(state)
    assert coder.decode(data) is not state
