"""UpdateCoEngagement: accepted events → user pair windows and item neighbour rows.

A thin Beam shell over ``beam_pipelines.state.coengagement`` (the pure math):

    accepted events ─ interactions only (RewardConfig.is_interaction)
      ─ key by user ─ PairWindow.push ─▶ user_coengagement rows
                                      └▶ pair_updates (item, neighbours)
      ─ key by item ─ ItemNeighbours.add ─▶ item_coengagement rows (top neighbours)

Streaming (``replay_order`` None): stateful DoFns per key, each key's newest row
once per bundle. Bounded logs (``"arrival"``/``"time"``): each user's events are
folded in that order and each item's pair updates merged (counts add up, so their
order does not matter); one final row per entity. The input is already
deduplicated by UpdateUserState, so a redelivered event never pairs twice.

Restoring (``transforms.restore``): windows and neighbour rows start from the
store's state at a key's first event in the job, and each remembers the ids of
the events it applied (within the allowed lateness of its newest), so an event
the user stage passes again after a restart (a restored duplicate) pairs once.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.coders import PickleCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec

from beam_pipelines.rewards import RewardConfig
from beam_pipelines.state.coengagement import (
    MAX_NEIGHBOURS,
    ItemNeighbours,
    PairWindow,
    pair_updates,
)
from beam_pipelines.state.keyed import (
    NeighboursState,
    PairWindowState,
    decode_neighbours,
    decode_pair_window,
    encode_neighbours,
    encode_pair_window,
)
from beam_pipelines.state.records import ScoredEvent
from beam_pipelines.state.seen import SeenEvents
from beam_pipelines.transforms.restore import RestoringDoFn, StateRestore
from beam_pipelines.transforms.state import STR_KEYED, NewestRows, replay_key
from beam_pipelines.transforms.tagged import TaggedParDo
from feature_repo.features import (
    EVENT_TIMESTAMP,
    ITEM_COENGAGEMENT,
    ITEM_KEY,
    ITEM_NEIGHBOR_PAIRS,
    ITEM_NEIGHBORS,
    USER_COENGAGEMENT,
    USER_INTERACTED_ITEMS,
    USER_KEY,
)

USER_PAIR_ROWS = "user_pair_rows"
ITEM_PAIR_ROWS = "item_pair_rows"
_PAIRS = Metrics.counter("rtp", "coengagement_pairs")


def user_pair_row(user_id: str, window: PairWindow, at_ms: int) -> dict:
    return {
        USER_KEY: user_id,
        EVENT_TIMESTAMP: at_ms,
        USER_INTERACTED_ITEMS: list(reversed(window.items)),
    }


def item_pair_row(item_id: str, row: ItemNeighbours, at_ms: int) -> dict:
    keys, counts = row.top(MAX_NEIGHBOURS)
    return {
        ITEM_KEY: item_id,
        EVENT_TIMESTAMP: at_ms,
        ITEM_NEIGHBORS: keys,
        ITEM_NEIGHBOR_PAIRS: counts,
    }


def _step(window: PairWindow | None, event: ScoredEvent):
    """The window after ``event``, the items it paired with (None: a repeat) and the
    neighbour-row updates that causes."""
    window = window or PairWindow()
    previous = window.push(event.item_id)
    updates = _updates(event.item_id, previous)
    _PAIRS.inc(len(updates))
    return window, previous, updates


def _updates(item_id: str, previous: list | None) -> list:
    return pair_updates(item_id, previous) if previous is not None else []


class _WindowFn(RestoringDoFn):
    STATE = ReadModifyWriteStateSpec("pair_window", PickleCoder())

    def __init__(self, lateness_ms: int, restore: StateRestore | None):
        super().__init__(restore, USER_COENGAGEMENT, decode_pair_window)
        self._lateness_ms = lateness_ms

    def start_bundle(self):
        to_row = lambda user_id, s: user_pair_row(user_id, s.window, s.newest_ms)  # noqa: E731
        self._rows = NewestRows(self.row_builder(to_row, encode_pair_window))

    def process(
        self,
        element,
        state=beam.DoFn.StateParam(STATE),
        timestamp=beam.DoFn.TimestampParam,
        window=beam.DoFn.WindowParam,
    ):
        user_id, event = element
        stored = self.read_state(user_id, state)
        if stored is None:
            stored = PairWindowState(PairWindow(), 0, SeenEvents(), {})
        if event.event_id in stored.seen:
            # A restored duplicate (the user stage passes no other): its pairs again,
            # which the neighbour rows count once.
            updates = _updates(event.item_id, stored.paired.get(event.event_id))
        else:
            pair_window, previous, updates = _step(stored.window, event)
            newest_ms = max(stored.newest_ms, event.timestamp_ms)
            stored = PairWindowState(pair_window, newest_ms, stored.seen, stored.paired)
            if self.restoring:
                stored.remember(event.event_id, event.timestamp_ms, previous, self._lateness_ms)
            state.write(stored)
            self._rows.update(user_id, stored, timestamp, window)
        for key, neighbours in updates:
            yield key, (neighbours, event.timestamp_ms, event.event_id)

    def finish_bundle(self):
        for row in self._rows.flush():
            yield beam.pvalue.TaggedOutput(USER_PAIR_ROWS, row)


class _NeighboursFn(RestoringDoFn):
    STATE = ReadModifyWriteStateSpec("neighbours", PickleCoder())

    def __init__(self, lateness_ms: int, restore: StateRestore | None):
        super().__init__(restore, ITEM_COENGAGEMENT, decode_neighbours)
        self._lateness_ms = lateness_ms

    def start_bundle(self):
        to_row = lambda item_id, s: item_pair_row(item_id, s.row, s.newest_ms)  # noqa: E731
        self._rows = NewestRows(self.row_builder(to_row, encode_neighbours))

    def process(
        self,
        element,
        state=beam.DoFn.StateParam(STATE),
        timestamp=beam.DoFn.TimestampParam,
        window=beam.DoFn.WindowParam,
    ):
        item_id, (neighbours, at_ms, event_id) = element
        row, newest_ms, seen = self.read_state(item_id, state) or (
            ItemNeighbours(),
            0,
            SeenEvents(),
        )
        if event_id in seen:  # pairs of an event this row had stored before a restart
            return
        row.add(neighbours)
        if self.restoring:
            seen.add(event_id, at_ms, self._lateness_ms)
        new_state = NeighboursState(row, max(newest_ms, at_ms), seen)
        state.write(new_state)
        self._rows.update(item_id, new_state, timestamp, window)

    def finish_bundle(self):
        yield from self._rows.flush()


def _fold_user(kv, order: str):
    """One user's events in replay order → its final row (tagged) and pair updates."""
    user_id, events = kv
    window, newest_ms = None, 0
    for event in sorted(events, key=replay_key(order)):
        window, _, updates = _step(window, event)
        newest_ms = max(newest_ms, event.timestamp_ms)
        for key, neighbours in updates:
            yield key, (neighbours, event.timestamp_ms)
    if window is not None:
        yield beam.pvalue.TaggedOutput(USER_PAIR_ROWS, user_pair_row(user_id, window, newest_ms))


class _FoldUserFn(beam.DoFn):
    """``_fold_user`` as a DoFn (for ``TaggedParDo``)."""

    def __init__(self, order: str):
        self._order = order

    def process(self, kv):
        yield from _fold_user(kv, self._order)


def _merge_item(kv):
    item_id, updates = kv
    row, newest_ms = ItemNeighbours(), 0
    for neighbours, at_ms in updates:
        row.add(neighbours)
        newest_ms = max(newest_ms, at_ms)
    yield item_pair_row(item_id, row, newest_ms)


class UpdateCoEngagement(beam.PTransform):
    """Accepted ScoredEvents → ``{user_pair_rows, item_pair_rows}`` (feature rows of
    ``user_coengagement`` and ``item_coengagement``). ``restore`` and
    ``allowed_lateness_s``: as UpdateItemState."""

    def __init__(
        self,
        rewards: RewardConfig,
        replay_order: str | None = None,
        restore: StateRestore | None = None,
        allowed_lateness_s: float = 600.0,
    ):
        super().__init__()
        self._rewards = rewards
        self._order = replay_order
        self._restore = restore
        self._lateness_ms = int(allowed_lateness_s * 1000)

    def expand(self, events):
        rewards = self._rewards
        keyed = (
            events
            | "Interactions"
            >> beam.Filter(lambda e: rewards.is_interaction(e.event_type, e.engaged))
            | "KeyByUser" >> beam.Map(lambda e: (e.user_id, e)).with_output_types(STR_KEYED)
        )
        if self._order:
            # TaggedParDo: the DaskRunner would hand both outputs to each consumer.
            users = (
                keyed
                | "GroupByUser" >> beam.GroupByKey()
                | "FoldWindows"
                >> TaggedParDo(_FoldUserFn(self._order), USER_PAIR_ROWS, main="pairs")
            )
            items = (
                users["pairs"]
                | "KeyByItem" >> beam.Map(lambda kv: kv).with_output_types(STR_KEYED)
                | "GroupByItem" >> beam.GroupByKey()
                | "MergeNeighbours" >> beam.FlatMap(_merge_item)
            )
        else:
            windows = _WindowFn(self._lateness_ms, self._restore)
            users = keyed | "PairWindows" >> beam.ParDo(windows).with_outputs(
                USER_PAIR_ROWS, main="pairs"
            )
            items = (
                users.pairs
                | "KeyByItem" >> beam.Map(lambda kv: kv).with_output_types(STR_KEYED)
                | "Neighbours" >> beam.ParDo(_NeighboursFn(self._lateness_ms, self._restore))
            )
        return {USER_PAIR_ROWS: users[USER_PAIR_ROWS], ITEM_PAIR_ROWS: items}
