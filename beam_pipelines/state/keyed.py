"""Per-key state of the streaming job and its compact byte encoding.

A stateful DoFn reads and writes its key's state at every event, and runners
keep state encoded, so the encoding is on the hot path: it is ``marshal`` of
builtins (lists, floats, raw float64 bytes), several times faster than pickling
the objects. ``marshal`` format 4 is stable across the Python 3 versions the
project supports; the first field is a layout version so a later layout can
still read older state.

The same bytes are what the streaming job stores beside each feature row
(``features.KEYED_STATE``), so that a restarted job resumes every key's state,
with the ids of the events it applied (``SeenEvents``): a redelivery is then
recognised whichever run applied it first.
"""

from __future__ import annotations

import marshal
from typing import NamedTuple

import numpy as np

from beam_pipelines.experiments.aggregate import GroupSums
from beam_pipelines.experiments.attribution import Exposure, Outcome
from beam_pipelines.experiments.incremental import ExperimentDaySums, UserSums
from beam_pipelines.state.coengagement import ItemNeighbours, PairWindow
from beam_pipelines.state.decay import DecayedSums
from beam_pipelines.state.item_state import ItemState
from beam_pipelines.state.seen import SeenEvents
from beam_pipelines.state.user_state import UserState

_MARSHAL_VERSION = 4
_LAYOUT = 1
_LAYOUT_SEEN = 2  # with the applied ids (items, pair stages) or the restored ids (users)


def _remember(
    seen: SeenEvents, by_id: dict, event_id: str, timestamp_ms: int, value, horizon_ms: int
) -> None:
    """``event_id`` applied: into ``seen``, with ``value`` under its id in ``by_id``
    (what a restored duplicate sends again); values of the ids ``seen`` pruned go."""
    seen.add(event_id, timestamp_ms, horizon_ms)
    by_id[event_id] = value
    if len(by_id) > len(seen):  # the seen ids were pruned: follow them
        for forgotten in [i for i in by_id if i not in seen]:
            del by_id[forgotten]


class UserKeyState(NamedTuple):
    """What the user stage keeps per user: the features' state and the applied ids.

    ``restored``: the ids among ``seen`` that a previous run of the job applied
    (loaded from the store at the key's first event in this run). A redelivery of
    one of them is a duplicate for the user, but the other stages' state of that
    run may not have reached the store before it stopped: they get it again and
    decide by their own applied ids.
    """

    user: UserState
    seen: SeenEvents
    restored: frozenset = frozenset()


class ItemKeyState(NamedTuple):
    """What the item stage keeps per item: the features' state and the applied ids."""

    item: ItemState
    seen: SeenEvents


class PairWindowState(NamedTuple):
    """Per user: the co-engagement pair window, its newest event time (ms), applied
    ids, and for each of them the items its event paired with (``previous``; None
    for a repeat): the neighbour rows' updates, sent again for a restored duplicate
    (the neighbour rows may not have stored them before a restart)."""

    window: PairWindow
    newest_ms: int
    seen: SeenEvents
    paired: dict

    def remember(self, event_id: str, timestamp_ms: int, previous, horizon_ms: int) -> None:
        _remember(self.seen, self.paired, event_id, timestamp_ms, previous, horizon_ms)


class ExperimentUserState(NamedTuple):
    """Per user, the experiment branch's sums (``incremental.UserSums``), the events
    it applied (restoring: their ids within the lateness, and per id the changes it
    sent, ``(experiment, day) → changes``, sent again for a restored duplicate) and
    how many it applied."""

    sums: UserSums
    seen: SeenEvents
    sent: dict
    events: int

    def remember(self, event_id: str, timestamp_ms: int, sent, horizon_ms: int) -> None:
        _remember(self.seen, self.sent, event_id, timestamp_ms, sent, horizon_ms)


class NeighboursState(NamedTuple):
    """Per item: pair counts, newest event time (ms), ids of the events that added pairs."""

    row: ItemNeighbours
    newest_ms: int
    seen: SeenEvents


def _sums_fields(sums: DecayedSums) -> tuple:
    return tuple(sums.half_lives_s.tolist()), sums.t_ref_ms, sums.values.tobytes()


def _sums(half_lives: tuple, t_ref_ms: int | None, values: bytes) -> DecayedSums:
    sums = DecayedSums.__new__(DecayedSums)
    sums.__setstate__((half_lives, t_ref_ms, values))
    return sums


def _check_layout(what: str, fields: tuple, layouts: tuple[int, ...]) -> None:
    if fields[0] not in layouts:
        raise ValueError(f"unknown {what} state layout {fields[0]!r}")


def encode_user(state: UserKeyState) -> bytes:
    user, seen, restored = state
    columns = tuple(map(list, zip(*user.recent, strict=True))) if user.recent else ([],) * 4
    fields = (
        _LAYOUT_SEEN if restored else _LAYOUT,
        *_sums_fields(user.sums),
        user.count,
        user.embedding_version,
        *columns,
        seen.ids(),
    )
    if restored:
        fields += ([i for i in restored if i in seen],)  # pruned with ``seen``
    return marshal.dumps(fields, _MARSHAL_VERSION)


def decode_user(data: bytes) -> UserKeyState:
    fields = marshal.loads(data)
    _check_layout("user", fields, (_LAYOUT, _LAYOUT_SEEN))
    _, half_lives, t_ref_ms, values, count, version, ts, ids, items, rewards, seen_ids = fields[:11]
    user = UserState.__new__(UserState)
    user.sums = _sums(half_lives, t_ref_ms, values)
    user.count = count
    user.embedding_version = version
    user.recent = list(zip(ts, ids, items, rewards, strict=True))
    restored = frozenset(fields[11]) if fields[0] == _LAYOUT_SEEN else frozenset()
    return UserKeyState(user, SeenEvents.from_ids(seen_ids), restored)


def restore_user(data: bytes) -> UserKeyState:
    """A user's state as a previous run stored it: every applied id is ``restored``."""
    user, seen, _ = decode_user(data)
    return UserKeyState(user, seen, frozenset(seen.ids()))


def encode_item(state: ItemState) -> bytes:
    return marshal.dumps((_LAYOUT, *_sums_fields(state.sums), state.count), _MARSHAL_VERSION)


def decode_item(data: bytes) -> ItemState:
    fields = marshal.loads(data)
    _check_layout("item", fields, (_LAYOUT,))
    return _item(fields[1:])


def _item(fields: tuple) -> ItemState:
    half_lives, t_ref_ms, values, count = fields
    item = ItemState.__new__(ItemState)
    item.sums = _sums(half_lives, t_ref_ms, values)
    item.count = count
    return item


def encode_item_key(state: ItemKeyState) -> bytes:
    item, seen = state
    fields = (_LAYOUT_SEEN, *_sums_fields(item.sums), item.count, seen.ids())
    return marshal.dumps(fields, _MARSHAL_VERSION)


def decode_item_key(data: bytes) -> ItemKeyState:
    fields = marshal.loads(data)
    _check_layout("item", fields, (_LAYOUT_SEEN,))
    return ItemKeyState(_item(fields[1:5]), SeenEvents.from_ids(fields[5]))


def encode_pair_window(state: PairWindowState) -> bytes:
    window, newest_ms, seen, paired = state
    fields = (_LAYOUT_SEEN, window.items, newest_ms, seen.ids(), paired)
    return marshal.dumps(fields, _MARSHAL_VERSION)


def decode_pair_window(data: bytes) -> PairWindowState:
    fields = marshal.loads(data)
    _check_layout("pair window", fields, (_LAYOUT_SEEN,))
    _, items, newest_ms, seen_ids, paired = fields
    return PairWindowState(PairWindow(items), newest_ms, SeenEvents.from_ids(seen_ids), paired)


def encode_neighbours(state: NeighboursState) -> bytes:
    row, newest_ms, seen = state
    return marshal.dumps((_LAYOUT_SEEN, row.pairs, newest_ms, seen.ids()), _MARSHAL_VERSION)


def decode_neighbours(data: bytes) -> NeighboursState:
    fields = marshal.loads(data)
    _check_layout("neighbours", fields, (_LAYOUT_SEEN,))
    _, pairs, newest_ms, seen_ids = fields
    return NeighboursState(ItemNeighbours(pairs), newest_ms, SeenEvents.from_ids(seen_ids))


def encode_experiment_user(state: ExperimentUserState) -> bytes:
    sums, seen, sent, events = state
    exposures = [
        (e.request_id, e.user_id, e.item_id, e.timestamp_ms, e.position, e.pairs)
        for e in sums.exposures
    ]
    outcomes = [(o.user_id, o.item_id, o.timestamp_ms, o.reward, o.engaged) for o in sums.outcomes]
    fields = (
        _LAYOUT_SEEN,
        exposures,
        outcomes,
        sums.committed,
        sums.rows,
        sums.newest_ms,
        sums.horizon_ms,
        seen.ids(),
        sent,
        events,
    )
    return marshal.dumps(fields, _MARSHAL_VERSION)


def decode_experiment_user(data: bytes) -> ExperimentUserState:
    fields = marshal.loads(data)
    _check_layout("experiment user", fields, (_LAYOUT_SEEN,))
    _, exposures, outcomes, committed, rows, newest_ms, horizon_ms, seen_ids, sent, events = fields
    sums = UserSums(
        [Exposure(*e) for e in exposures],
        [Outcome(*o) for o in outcomes],
        committed,
        rows,
        newest_ms,
        horizon_ms,
    )
    return ExperimentUserState(sums, SeenEvents.from_ids(seen_ids), sent, events)


def encode_experiment_day(state: ExperimentDaySums, applied: dict[str, int]) -> bytes:
    """An experiment-day's sums and the ids of the events applied to them
    (``incremental.recent_ids``)."""
    variants = {
        name: (g.users, g.sums.tolist(), g.products.ravel().tolist(), g.updates)
        for name, g in state.variants.items()
    }
    fields = (_LAYOUT_SEEN, variants, state.newest_ms, applied)
    return marshal.dumps(fields, _MARSHAL_VERSION)


def decode_experiment_day(data: bytes) -> tuple[ExperimentDaySums, dict[str, int]]:
    """The sums as restored (``restored_ms``: their newest event time) and the ids."""
    fields = marshal.loads(data)
    _check_layout("experiment day", fields, (_LAYOUT_SEEN,))
    _, variants, newest_ms, applied = fields
    groups = {
        name: GroupSums(users, np.asarray(sums), np.asarray(products).reshape(3, 3), updates)
        for name, (users, sums, products, updates) in variants.items()
    }
    return ExperimentDaySums(groups, newest_ms, restored_ms=newest_ms), applied
