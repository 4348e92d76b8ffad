"""A user's experiment sums kept as the user's events arrive: the streaming form of
``attribution.attribute`` and ``aggregate.per_user_rows``, with their rules (no
second attribution rule here).

The state holds the user's *live* exposures and outcomes (those whose attribution
can still change) and the *committed* sums of exposures whose attribution is final.
On each event the live part is attributed again with ``attribute`` and summed with
``per_user_rows``; the user's row per ``(experiment, variant, day)`` is committed +
live, and every row that changed is returned as ``(key, old, new)`` (None: the user
was, or is no longer, in that group), which ``aggregate.GroupSums.replace`` applies.

Time is the user's own clock, as the streaming job's lateness rule: with ``newest``
the user's newest event time, an event older than ``horizon = newest − lateness``
is late (ignored here; the feature stages dead-letter it first). An exposure with
``t + window < horizon`` can gain no outcome (any later outcome is late or outside
its window), so it is committed; an outcome with ``t + window < horizon`` can only
belong to a committed exposure, so it is dropped; a day's rows with
``day end + window < horizon`` can no longer change, so they leave the state (the
whole run's rows, day ``ALL_DAYS``, stay). Given every event at most ``lateness``
behind its user's newest, the sums equal the batch ones exactly. Times are epoch
milliseconds.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from beam_pipelines.experiments.aggregate import ALL_DAYS, GroupKey, per_user_rows
from beam_pipelines.experiments.attribution import DAY_MS, Attributed, Exposure, Outcome, attribute

Row = tuple[float, float, float]
Change = tuple[GroupKey, Row | None, Row | None]
NEVER = -(2**63)


@dataclasses.dataclass
class UserSums:
    """One user's state (see the module docstring)."""

    exposures: list[Exposure] = dataclasses.field(default_factory=list)
    outcomes: list[Outcome] = dataclasses.field(default_factory=list)
    committed: dict[GroupKey, Row] = dataclasses.field(default_factory=dict)
    rows: dict[GroupKey, Row] = dataclasses.field(default_factory=dict)
    newest_ms: int = NEVER
    horizon_ms: int = NEVER


class IncrementalAttribution:
    """Steps a ``UserSums``: ``window_ms`` is the attribution window, ``lateness_ms``
    how far an event may lag the user's newest event (the streaming job's
    ``allowed_lateness_s``)."""

    def __init__(self, window_ms: int, lateness_ms: int):
        if window_ms < 0 or lateness_ms < 0:
            raise ValueError(
                f"window_ms and lateness_ms must be >= 0, got {window_ms}, {lateness_ms}"
            )
        self.window_ms, self.lateness_ms = window_ms, lateness_ms

    def push(
        self, state: UserSums, timestamp_ms: int, exposures: list[Exposure], outcomes: list[Outcome]
    ) -> list[Change] | None:
        """Apply one event (its exposures and outcomes, ``attribution.split_events``);
        the rows it changed, or None if it is late (nothing applied)."""
        if timestamp_ms < state.horizon_ms:
            return None
        state.exposures.extend(exposures)
        state.outcomes.extend(outcomes)
        state.newest_ms = max(state.newest_ms, timestamp_ms)
        attributed, _ = attribute(state.exposures, state.outcomes, self.window_ms)
        rows = dict(state.committed)
        for key, live in per_user_rows(attributed).items():
            rows[key] = _add(rows.get(key), tuple(live[0].tolist()))
        changes = [
            (key, state.rows.get(key), rows.get(key))
            for key in sorted(rows.keys() | state.rows.keys())
            if state.rows.get(key) != rows.get(key)
        ]
        state.rows = rows
        self._expire(state, attributed, state.newest_ms - self.lateness_ms)
        return changes

    def cleanup_ms(self, state: UserSums) -> int:
        """When every row but the whole run's is final if no event comes: the end of
        the newest event's day plus the window and the lateness (a timer's time)."""
        day_end = state.newest_ms - state.newest_ms % DAY_MS + DAY_MS
        return day_end + self.window_ms + self.lateness_ms + 1

    def expire(self, state: UserSums, now_ms: int) -> None:
        """The user's clock has reached ``now_ms`` (a timer): commit and drop what
        can no longer change; later events older than ``now_ms − lateness`` are late."""
        attributed, _ = attribute(state.exposures, state.outcomes, self.window_ms)
        self._expire(state, attributed, now_ms - self.lateness_ms)

    def _expire(self, state: UserSums, attributed: list[Attributed], horizon_ms: int) -> None:
        if horizon_ms <= state.horizon_ms:
            return
        state.horizon_ms = horizon_ms
        window = self.window_ms
        done = [a for a in attributed if a.exposure.timestamp_ms + window < horizon_ms]
        for key, rows in per_user_rows(done).items():
            state.committed[key] = _add(state.committed.get(key), tuple(rows[0].tolist()))
        done_ids = {(a.exposure.request_id, a.exposure.item_id) for a in done}
        state.exposures = [e for e in state.exposures if (e.request_id, e.item_id) not in done_ids]
        state.outcomes = [o for o in state.outcomes if o.timestamp_ms + window >= horizon_ms]
        for key in list(state.rows):
            if key[2] != ALL_DAYS and _day_end_ms(key[2]) + window < horizon_ms:
                del state.rows[key]
                state.committed.pop(key, None)


def _add(a: Row | None, b: Row) -> Row:
    return b if a is None else (a[0] + b[0], a[1] + b[1], a[2] + b[2])


def _day_end_ms(day: str) -> int:
    start = dt.datetime.combine(dt.date.fromisoformat(day), dt.time(), dt.UTC)
    return int(start.timestamp() * 1000) + DAY_MS
