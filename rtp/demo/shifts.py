"""Where ``rtp demo`` splits the simulated stream, and whose recommendations it shows.

The simulator's ground truth lists every change of a user's top interest. A user
qualifies for the before/after when, at or after the split, its only change is an
abrupt shift; it has history before the split (so "before" is personal, not the
trending fallback); and it engages with the new topic after the shift (without an
engagement there is nothing for any system to notice). The split is the latest
candidate share of the stream that leaves enough such users in the second part:
as much as possible to train on, and a short second part to stream.
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
from collections.abc import Mapping, Sequence

from beam_pipelines.events import parse_event
from beam_pipelines.rewards import RewardConfig
from rtp.simulator.records import InterestShift, SimRecord

# Candidate shares of the clean events in part 1, latest first.
SPLIT_SHARES = (0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.5)
MIN_HISTORY = 20  # clean events before the split
MIN_ENGAGEMENTS = 5  # engaged events on new-topic items after the shift


@dataclasses.dataclass(frozen=True)
class ShiftedUser:
    """A user whose top interest shifts in part 2 (times in epoch ms)."""

    user_id: str
    old_topic: str
    new_topic: str
    shift_ms: int
    events_before_split: int
    new_topic_engagements: int  # engaged events on new-topic items after the shift


@dataclasses.dataclass(frozen=True)
class Split:
    """Part 1 is ``records[:line]``, part 2 ``records[line:]`` (output lines, dirty
    ones included, in publishing order)."""

    line: int
    clean_events: int  # clean events in part 1
    time_ms: int  # event time of part 2's first clean event
    users: list[ShiftedUser]


@dataclasses.dataclass(frozen=True)
class _Clean:
    line: int
    user_id: str
    topic: str
    engaged: bool


def _clean_events(
    records: Sequence[SimRecord], item_topics: Mapping[str, str], reward: RewardConfig
) -> list[_Clean]:
    out = []
    for record in records:
        if record.is_clean:
            event = parse_event(record.data)
            _, engaged = reward.reward(event)
            out.append(_Clean(record.line, event.user_id, item_topics[event.item_id], engaged))
    return out


def qualified(
    split: int,
    events: Sequence[_Clean],
    changes: Mapping[str, list[InterestShift]],
    min_history: int = MIN_HISTORY,
    min_engagements: int = MIN_ENGAGEMENTS,
) -> list[ShiftedUser]:
    """Users qualifying when part 1 is the first ``split`` clean events, most
    new-topic engagements first."""
    positions: dict[str, list[int]] = collections.defaultdict(list)
    for n, event in enumerate(events):
        positions[event.user_id].append(n)
    users = []
    for user_id, user_changes in changes.items():
        later = [c for c in user_changes if c.event_index >= split]
        if len(later) != 1 or later[0].kind != "shift":
            continue
        shift, mine = later[0], positions[user_id]
        history = bisect.bisect_left(mine, split)
        engaged = sum(
            1
            for n in mine[bisect.bisect_left(mine, shift.event_index) :]
            if events[n].engaged and events[n].topic == shift.new_topic
        )
        if history >= min_history and engaged >= min_engagements:
            users.append(
                ShiftedUser(
                    user_id, shift.old_topic, shift.new_topic, shift.time_ms, history, engaged
                )
            )
    return sorted(users, key=lambda u: (-u.new_topic_engagements, u.user_id))


def choose_split(
    records: Sequence[SimRecord],
    shifts: Sequence[InterestShift],
    item_topics: Mapping[str, str],
    reward: RewardConfig,
    n_users: int = 3,
    shares: Sequence[float] = SPLIT_SHARES,
    min_history: int = MIN_HISTORY,
    min_engagements: int = MIN_ENGAGEMENTS,
) -> Split:
    """The latest candidate split with ``n_users`` qualifying users, else the one with
    the most (the latest on ties); ``users`` has at most ``n_users`` (maybe none)."""
    events = _clean_events(records, item_topics, reward)
    if not events:
        raise ValueError("the simulated stream has no clean events")
    changes: dict[str, list[InterestShift]] = collections.defaultdict(list)
    for change in shifts:
        changes[change.user_id].append(change)
    best: tuple[int, list[ShiftedUser]] | None = None
    for share in shares:
        split = min(max(int(len(events) * share), 1), len(events) - 1)
        users = qualified(split, events, changes, min_history, min_engagements)
        if best is None or len(users) > len(best[1]):
            best = (split, users)
        if len(users) >= n_users:
            break
    assert best is not None
    split, users = best
    first = events[split]
    return Split(first.line, split, _event_time_ms(records[first.line]), users[:n_users])


def _event_time_ms(record: SimRecord) -> int:
    assert record.event_time_ms is not None  # a clean record always has one
    return record.event_time_ms


def topic_share(item_ids: Sequence[str], item_topics: Mapping[str, str], topic: str) -> float:
    """Share of ``item_ids`` whose topic is ``topic`` (0 for an empty list)."""
    if not item_ids:
        return 0.0
    return sum(item_topics.get(i) == topic for i in item_ids) / len(item_ids)
