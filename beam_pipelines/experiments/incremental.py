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

``ExperimentDaySums`` is the next step: the changed rows of one experiment and day
(all its variants together, so its records carry the SRM p-value and the lifts of
``report.compare``), applied once per event id across a restart (see its docstring).
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
from collections.abc import Container, Iterable
from typing import Any

from beam_pipelines.experiments.aggregate import (
    ALL_DAYS,
    METRICS,
    GroupKey,
    GroupSums,
    metrics_record,
    per_user_rows,
)
from beam_pipelines.experiments.attribution import DAY_MS, Attributed, Exposure, Outcome, attribute
from beam_pipelines.experiments.config import ExperimentsConfig
from beam_pipelines.experiments.report import compare
from feature_repo.features import (
    EXPERIMENT_ALL_VARIANTS,
    EXPERIMENT_LIFTS,
    EXPERIMENT_SRM_P_VALUE,
    EXPERIMENT_UPDATES,
)

Row = tuple[float, float, float]
Change = tuple[GroupKey, Row | None, Row | None]
VariantChange = tuple[str, Row | None, Row | None]
"""``(variant, old row, new row)`` of one user within one experiment and day."""
NEVER = -(2**63)
NAN = float("nan")


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


def by_experiment_day(changes: list[Change]) -> dict[tuple[str, str], tuple[VariantChange, ...]]:
    """``push``'s changes per ``(experiment, day)``: one message per key and event."""
    out: dict[tuple[str, str], list[VariantChange]] = collections.defaultdict(list)
    for (experiment, variant, day), old, new in changes:
        out[(experiment, day)].append((variant, old, new))
    return {key: tuple(rows) for key, rows in out.items()}


@dataclasses.dataclass
class ExperimentDaySums:
    """One experiment on one day (or the whole run): a ``GroupSums`` per variant.

    A user's changes are deltas (``GroupSums.replace``), so each must be applied
    exactly once, in any order. Across a restart the per-user stage sends again the
    changes of an event it had stored as applied (a *replay*), and applies afresh
    the events it had not. So when restoring, the caller remembers the ids of the
    events applied here (``recent_ids`` says which to keep) and ``apply`` looks an
    event up in them when it may have been applied before: a replay, or an event
    no newer than ``restored_ms``, the newest event time of the state a restart
    loaded (any event applied before the restart is that old). Other events, the
    steady state, need no look-up. A replay more than ``horizon_ms`` behind the
    newest is taken as applied (never counted twice).
    """

    variants: dict[str, GroupSums] = dataclasses.field(default_factory=dict)
    newest_ms: int = NEVER
    restored_ms: int = NEVER

    def may_be_applied(self, timestamp_ms: int, replay: bool) -> bool:
        """Whether an event's id must be looked up before its changes apply."""
        return replay or timestamp_ms <= self.restored_ms

    def apply(
        self,
        event_id: str,
        timestamp_ms: int,
        changes: tuple[VariantChange, ...],
        replay: bool,
        horizon_ms: int | None,
        applied: Container[str] = frozenset(),
    ) -> bool:
        """Apply one event's changes; False if they already were. ``horizon_ms``:
        how long (event time, ms) ids are remembered, None if none are (a job
        that restores nothing sees each event once); ``applied``: the remembered
        ids, read only if ``may_be_applied``."""
        if horizon_ms is not None:
            if replay and timestamp_ms < self.newest_ms - horizon_ms:
                return False
            if self.may_be_applied(timestamp_ms, replay) and event_id in applied:
                return False
        for variant, old, new in changes:
            self.variants.setdefault(variant, GroupSums()).replace(old, new)
        self.newest_ms = max(self.newest_ms, timestamp_ms)
        return True

    def records(
        self, experiment: str, day: str, experiments: ExperimentsConfig | None = None
    ) -> list[dict[str, Any]]:
        """A ``metrics_record`` per variant, then the experiment's (variant
        ``EXPERIMENT_ALL_VARIANTS``, all pooled), each with the day's SRM p-value,
        the lifts against the control and ``updates``."""
        metrics = {variant: sums.metrics() for variant, sums in self.variants.items()}
        comparison = compare(experiment, metrics, experiments)
        rows = []
        for variant, sums in sorted(self.variants.items()):
            row = metrics_record((experiment, variant, day), metrics[variant])
            for metric in METRICS:
                versus = comparison.lift(variant, metric)
                values = (
                    (NAN,) * 3 if versus is None else (versus.value, versus.ci_low, versus.ci_high)
                )
                row.update(zip(EXPERIMENT_LIFTS[metric], values, strict=True))
            rows.append(
                {
                    **row,
                    EXPERIMENT_SRM_P_VALUE: comparison.srm_p_value,
                    EXPERIMENT_UPDATES: sums.updates,
                }
            )
        pooled = GroupSums.pooled(self.variants.values())
        row = metrics_record((experiment, EXPERIMENT_ALL_VARIANTS, day), pooled.metrics())
        row.update({column: NAN for columns in EXPERIMENT_LIFTS.values() for column in columns})
        rows.append(
            {
                **row,
                EXPERIMENT_SRM_P_VALUE: comparison.srm_p_value,
                EXPERIMENT_UPDATES: pooled.updates,
            }
        )
        return rows


def recent_ids(ids: Iterable[tuple[str, int]], newest_ms: int, horizon_ms: int) -> dict[str, int]:
    """The ``(event id, event time ms)`` pairs no more than ``horizon_ms`` behind
    ``newest_ms``: the applied ids an ``ExperimentDaySums`` still needs."""
    return {event_id: t for event_id, t in ids if t >= newest_ms - horizon_ms}
