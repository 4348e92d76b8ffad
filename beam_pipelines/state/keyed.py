"""Per-key state of the streaming job and its compact byte encoding.

A stateful DoFn reads and writes its key's state at every event, and runners
keep state encoded, so the encoding is on the hot path: it is ``marshal`` of
builtins (lists, floats, raw float64 bytes), several times faster than pickling
the objects. ``marshal`` format 4 is stable across the Python 3 versions the
project supports; the first field is a layout version so a later layout can
still read older state.
"""

from __future__ import annotations

import marshal
from typing import NamedTuple

from beam_pipelines.state.decay import DecayedSums
from beam_pipelines.state.item_state import ItemState
from beam_pipelines.state.seen import SeenEvents
from beam_pipelines.state.user_state import UserState

_MARSHAL_VERSION = 4
_LAYOUT = 1


class UserKeyState(NamedTuple):
    """What the user stage keeps per user: the features' state and the applied ids."""

    user: UserState
    seen: SeenEvents


def _sums_fields(sums: DecayedSums) -> tuple:
    return tuple(sums.half_lives_s.tolist()), sums.t_ref_ms, sums.values.tobytes()


def _sums(half_lives: tuple, t_ref_ms: int | None, values: bytes) -> DecayedSums:
    sums = DecayedSums.__new__(DecayedSums)
    sums.__setstate__((half_lives, t_ref_ms, values))
    return sums


def encode_user(state: UserKeyState) -> bytes:
    user, seen = state
    columns = tuple(map(list, zip(*user.recent, strict=True))) if user.recent else ([],) * 4
    fields = (
        _LAYOUT,
        *_sums_fields(user.sums),
        user.count,
        user.embedding_version,
        *columns,
        seen.ids(),
    )
    return marshal.dumps(fields, _MARSHAL_VERSION)


def decode_user(data: bytes) -> UserKeyState:
    fields = marshal.loads(data)
    if fields[0] != _LAYOUT:
        raise ValueError(f"unknown user state layout {fields[0]!r}")
    _, half_lives, t_ref_ms, values, count, version, ts, ids, items, rewards, seen_ids = fields
    user = UserState.__new__(UserState)
    user.sums = _sums(half_lives, t_ref_ms, values)
    user.count = count
    user.embedding_version = version
    user.recent = list(zip(ts, ids, items, rewards, strict=True))
    return UserKeyState(user, SeenEvents.from_ids(seen_ids))


def encode_item(state: ItemState) -> bytes:
    return marshal.dumps((_LAYOUT, *_sums_fields(state.sums), state.count), _MARSHAL_VERSION)


def decode_item(data: bytes) -> ItemState:
    fields = marshal.loads(data)
    if fields[0] != _LAYOUT:
        raise ValueError(f"unknown item state layout {fields[0]!r}")
    _, half_lives, t_ref_ms, values, count = fields
    item = ItemState.__new__(ItemState)
    item.sums = _sums(half_lives, t_ref_ms, values)
    item.count = count
    return item
