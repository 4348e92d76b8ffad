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
from beam_pipelines.state.records import ScoredEvent
from beam_pipelines.transforms.state import STR_KEYED, NewestRows, replay_key
from feature_repo.features import EVENT_TIMESTAMP, ITEM_KEY, USER_KEY

USER_PAIR_ROWS = "user_pair_rows"
ITEM_PAIR_ROWS = "item_pair_rows"
_PAIRS = Metrics.counter("rtp", "coengagement_pairs")


def user_pair_row(user_id: str, window: PairWindow, at_ms: int) -> dict:
    return {
        USER_KEY: user_id,
        EVENT_TIMESTAMP: at_ms,
        "user_interacted_items": list(reversed(window.items)),
    }


def item_pair_row(item_id: str, row: ItemNeighbours, at_ms: int) -> dict:
    keys, counts = row.top(MAX_NEIGHBOURS)
    return {
        ITEM_KEY: item_id,
        EVENT_TIMESTAMP: at_ms,
        "item_neighbors": keys,
        "item_neighbor_pairs": counts,
    }


def _step(window: PairWindow | None, event: ScoredEvent):
    """The window after ``event`` and the neighbour-row updates it causes."""
    window = window or PairWindow()
    previous = window.push(event.item_id)
    updates = pair_updates(event.item_id, previous) if previous is not None else []
    _PAIRS.inc(len(updates))
    return window, updates


class _WindowFn(beam.DoFn):
    STATE = ReadModifyWriteStateSpec("pair_window", PickleCoder())

    def start_bundle(self):
        self._rows = NewestRows(lambda user_id, state: user_pair_row(user_id, *state))

    def process(
        self,
        element,
        state=beam.DoFn.StateParam(STATE),
        timestamp=beam.DoFn.TimestampParam,
        window=beam.DoFn.WindowParam,
    ):
        user_id, event = element
        stored, newest_ms = state.read() or (None, 0)
        pair_window, updates = _step(stored, event)
        newest_ms = max(newest_ms, event.timestamp_ms)
        state.write((pair_window, newest_ms))
        self._rows.update(user_id, (pair_window, newest_ms), timestamp, window)
        for key, neighbours in updates:
            yield key, (neighbours, event.timestamp_ms)

    def finish_bundle(self):
        for row in self._rows.flush():
            yield beam.pvalue.TaggedOutput(USER_PAIR_ROWS, row)


class _NeighboursFn(beam.DoFn):
    STATE = ReadModifyWriteStateSpec("neighbours", PickleCoder())

    def start_bundle(self):
        self._rows = NewestRows(lambda item_id, state: item_pair_row(item_id, *state))

    def process(
        self,
        element,
        state=beam.DoFn.StateParam(STATE),
        timestamp=beam.DoFn.TimestampParam,
        window=beam.DoFn.WindowParam,
    ):
        item_id, (neighbours, at_ms) = element
        row, newest_ms = state.read() or (ItemNeighbours(), 0)
        row.add(neighbours)
        newest_ms = max(newest_ms, at_ms)
        state.write((row, newest_ms))
        self._rows.update(item_id, (row, newest_ms), timestamp, window)

    def finish_bundle(self):
        yield from self._rows.flush()


def _fold_user(kv, order: str):
    """One user's events in replay order → its final row (tagged) and pair updates."""
    user_id, events = kv
    window, newest_ms = None, 0
    for event in sorted(events, key=replay_key(order)):
        window, updates = _step(window, event)
        newest_ms = max(newest_ms, event.timestamp_ms)
        for key, neighbours in updates:
            yield key, (neighbours, event.timestamp_ms)
    if window is not None:
        yield beam.pvalue.TaggedOutput(USER_PAIR_ROWS, user_pair_row(user_id, window, newest_ms))


def _merge_item(kv):
    item_id, updates = kv
    row, newest_ms = ItemNeighbours(), 0
    for neighbours, at_ms in updates:
        row.add(neighbours)
        newest_ms = max(newest_ms, at_ms)
    yield item_pair_row(item_id, row, newest_ms)


class UpdateCoEngagement(beam.PTransform):
    """Accepted ScoredEvents → ``{user_pair_rows, item_pair_rows}`` (feature rows of
    ``user_coengagement`` and ``item_coengagement``)."""

    def __init__(self, rewards: RewardConfig, replay_order: str | None = None):
        super().__init__()
        self._rewards = rewards
        self._order = replay_order

    def expand(self, events):
        rewards = self._rewards
        keyed = (
            events
            | "Interactions"
            >> beam.Filter(lambda e: rewards.is_interaction(e.event_type, e.engaged))
            | "KeyByUser" >> beam.Map(lambda e: (e.user_id, e)).with_output_types(STR_KEYED)
        )
        if self._order:
            users = (
                keyed
                | "GroupByUser" >> beam.GroupByKey()
                | "FoldWindows"
                >> beam.FlatMap(_fold_user, self._order).with_outputs(USER_PAIR_ROWS, main="pairs")
            )
            items = (
                users.pairs
                | "KeyByItem" >> beam.Map(lambda kv: kv).with_output_types(STR_KEYED)
                | "GroupByItem" >> beam.GroupByKey()
                | "MergeNeighbours" >> beam.FlatMap(_merge_item)
            )
        else:
            users = keyed | "PairWindows" >> beam.ParDo(_WindowFn()).with_outputs(
                USER_PAIR_ROWS, main="pairs"
            )
            items = (
                users.pairs
                | "KeyByItem" >> beam.Map(lambda kv: kv).with_output_types(STR_KEYED)
                | "Neighbours" >> beam.ParDo(_NeighboursFn())
            )
        return {USER_PAIR_ROWS: users[USER_PAIR_ROWS], ITEM_PAIR_ROWS: items}
