"""StreamExperimentMetrics: the streaming form of ``ExperimentMetrics``, one pass.

Two thin stateful DoFns over the plain classes of ``beam_pipelines.experiments``:

- per user (``incremental.IncrementalAttribution`` on a ``UserSums``): each event
  is attributed with the batch rule and yields the user's changed rows, one message
  per ``(experiment, day)``: ``(event id, event time, replay, changes)``; a
  watermark timer at ``cleanup_ms`` commits what can no longer change and drops
  finished days. Each updated user's row of ``user_experiments`` per bundle;
- per ``(experiment, day)`` (``incremental.ExperimentDaySums``, all variants
  together): applies the changes and, at most every ``emit_every_s`` seconds of
  processing time after a change (and once more when the input ends, for a bounded
  replay), emits its records: one per variant and the experiment's (variant ""),
  with the SRM p-value and the lifts of the batch report (``report.compare``).

Global window; the input is ``EngagementEvent``s already deduplicated by event id
(the streaming job's accepted events). Events more than ``allowed_lateness_s``
behind their user's newest are counted (``experiment_late``) and not applied, as the
feature stages dead-letter them. ``ExperimentMetricRows`` turns records into rows of
the ``experiment_metrics`` feature view.

Restoring (``transforms.restore``, a ``StateRestore``): both stages start a key
from the store's state at its first event in the job; the user stage's state rides
on its ``user_experiments`` rows, the experiment-day stage's on the experiment's
record. The user stage remembers the ids it applied (within the lateness) and the
changes each sent: a restored duplicate (an event the user feature stage passes
again after a restart) sends them again, marked as a replay, and the
experiment-day stage applies each event's changes once (``ExperimentDaySums``).
Exact when the user stage's stored state is not behind the experiment-day stage's
(its rows are written per bundle, the records at most every ``emit_every_s``), or
the replay comes in the original order.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import apache_beam as beam
from apache_beam import typehints
from apache_beam.coders import BooleanCoder, PickleCoder, StrUtf8Coder, TupleCoder, VarIntCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import (
    BagStateSpec,
    ReadModifyWriteStateSpec,
    TimerSpec,
    on_timer,
)
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import Timestamp

from beam_pipelines.experiments.aggregate import ALL_DAYS
from beam_pipelines.experiments.attribution import DEFAULT_WINDOW_MS, EXPOSURE_TYPE, split_events
from beam_pipelines.experiments.config import ExperimentsConfig
from beam_pipelines.experiments.incremental import (
    ExperimentDaySums,
    IncrementalAttribution,
    UserSums,
    by_experiment_day,
    recent_ids,
)
from beam_pipelines.rewards import RewardConfig
from beam_pipelines.state.keyed import (
    ExperimentUserState,
    decode_experiment_day,
    decode_experiment_user,
    encode_experiment_day,
    encode_experiment_user,
)
from beam_pipelines.state.seen import SeenEvents
from beam_pipelines.transforms.restore import STATE_COLUMN, RestoringDoFn, StateRestore
from beam_pipelines.transforms.state import STR_KEYED, NewestRows
from feature_repo.features import (
    EVENT_TIMESTAMP,
    EXPERIMENT_ALL_VARIANTS,
    EXPERIMENT_GROUP_KEY,
    EXPERIMENT_METRICS,
    USER_EXPERIMENT_EVENTS,
    USER_EXPERIMENT_VARIANTS,
    USER_EXPERIMENTS,
    USER_KEY,
)

RECORDS = "records"
USER_EXPERIMENT_ROWS = "user_experiment_rows"

_LATE = Metrics.counter("rtp_experiments", "experiment_late")
_REPLAYED = Metrics.counter("rtp_experiments", "experiment_replays_sent")
_APPLIED_BEFORE = Metrics.counter("rtp_experiments", "experiment_changes_applied_before")
_SKIPPED = {
    name: Metrics.counter("rtp_experiments", name)
    for name in ("unlogged_exposures", "no_reward_rule")
}


def user_experiments_row(user_id: str, state: ExperimentUserState) -> dict:
    pairs = {f"{e}/{v}" for e, v, day in state.sums.rows if day == ALL_DAYS}
    return {
        USER_KEY: user_id,
        EVENT_TIMESTAMP: state.sums.newest_ms,
        USER_EXPERIMENT_VARIANTS: sorted(pairs),
        USER_EXPERIMENT_EVENTS: state.events,
    }


class _UserSumsFn(RestoringDoFn):
    STATE = ReadModifyWriteStateSpec("experiment_user_sums", PickleCoder())
    CLEANUP = TimerSpec("experiment_cleanup", TimeDomain.WATERMARK)

    def __init__(
        self,
        rewards: RewardConfig,
        stepper: IncrementalAttribution,
        exposure_type: str,
        restore: StateRestore | None,
    ):
        super().__init__(restore, USER_EXPERIMENTS, decode_experiment_user)
        self._rewards, self._stepper, self._exposure_type = rewards, stepper, exposure_type

    def start_bundle(self):
        self._rows = NewestRows(self.row_builder(user_experiments_row, encode_experiment_user))

    def process(
        self,
        element,
        state=beam.DoFn.StateParam(STATE),
        cleanup=beam.DoFn.TimerParam(CLEANUP),
        timestamp=beam.DoFn.TimestampParam,
        window=beam.DoFn.WindowParam,
    ):
        user_id, event = element
        stored = self.read_state(user_id, state)
        if stored is None:
            stored = ExperimentUserState(UserSums(), SeenEvents(), {}, 0)
        if event.event_id in stored.seen:  # a restored duplicate: what it changed, again
            for key, changes in stored.sent.get(event.event_id, ()):
                _REPLAYED.inc()
                yield key, (event.event_id, event.timestamp_ms, True, changes)
            return
        exposures, outcomes, skipped = split_events([event], self._rewards, self._exposure_type)
        for name, n in skipped.items():
            _SKIPPED[name].inc(n)
        changes = self._stepper.push(stored.sums, event.timestamp_ms, exposures, outcomes)
        if changes is None:
            _LATE.inc()
            return
        messages = tuple(by_experiment_day(changes).items())
        stored = stored._replace(events=stored.events + 1)
        if self.restoring:
            stored.remember(event.event_id, event.timestamp_ms, messages, self._stepper.lateness_ms)
        state.write(stored)
        cleanup.set(Timestamp(micros=self._stepper.cleanup_ms(stored.sums) * 1000))
        self._rows.update(user_id, stored, timestamp, window)
        for key, group_changes in messages:
            yield key, (event.event_id, event.timestamp_ms, False, group_changes)

    def finish_bundle(self):
        for row in self._rows.flush():
            yield beam.pvalue.TaggedOutput(USER_EXPERIMENT_ROWS, row)

    @on_timer(CLEANUP)
    def on_cleanup(self, state=beam.DoFn.StateParam(STATE), fired=beam.DoFn.TimestampParam):
        stored = state.read()
        if stored is not None:
            self._stepper.expire(stored.sums, fired.micros // 1000)
            state.write(stored)


def day_entity(experiment: str, day: str) -> str:
    """The ``experiment_metrics`` entity of an experiment's row, which carries the
    experiment-day stage's state."""
    return group_id({"experiment": experiment, "variant": EXPERIMENT_ALL_VARIANTS, "day": day})


class _AppliedIds:
    """A key's applied event ids for ``ExperimentDaySums.apply``: its bag of
    ``(id, event time)`` is read at the first look-up only (after a restart), and
    the set kept for the rest of the bundle (``cache``)."""

    def __init__(self, bag, cache: dict, key):
        self._bag, self._cache, self._key = bag, cache, key

    def __contains__(self, event_id: str) -> bool:
        ids = self._cache.get(self._key)
        if ids is None:
            ids = self._cache[self._key] = {i for i, _ in self._bag.read()}
        return event_id in ids

    def add(self, event_id: str, timestamp_ms: int) -> None:
        self._bag.add((event_id, timestamp_ms))
        if self._key in self._cache:
            self._cache[self._key].add(event_id)


class _ExperimentDayFn(RestoringDoFn):
    STATE = ReadModifyWriteStateSpec("experiment_group_sums", PickleCoder())
    # Restoring only: one cheap append per change; read after a restart and per emission.
    APPLIED = BagStateSpec("experiment_applied_ids", TupleCoder((StrUtf8Coder(), VarIntCoder())))
    PENDING = ReadModifyWriteStateSpec("experiment_emit_pending", BooleanCoder())
    EMIT = TimerSpec("experiment_emit", TimeDomain.REAL_TIME)
    FINAL = TimerSpec("experiment_final", TimeDomain.WATERMARK)

    def __init__(
        self,
        emit_every_s: float,
        clock: Callable[[], float],
        lateness_ms: int,
        experiments: ExperimentsConfig | None,
        restore: StateRestore | None,
    ):
        super().__init__(restore, EXPERIMENT_METRICS, decode_experiment_day)
        self._emit_every_s, self._clock = emit_every_s, clock
        self._lateness_ms, self._experiments = lateness_ms, experiments

    def start_bundle(self):
        self._ids_cache: dict = {}

    def process(
        self,
        element,
        state=beam.DoFn.StateParam(STATE),
        applied=beam.DoFn.StateParam(APPLIED),
        pending=beam.DoFn.StateParam(PENDING),
        emit=beam.DoFn.TimerParam(EMIT),
        final=beam.DoFn.TimerParam(FINAL),
    ):
        key, (event_id, at_ms, replay, changes) = element
        sums = state.read()
        if sums is None:  # the key's first event in this job: the store's state, if any
            sums, ids = self.load_stored(day_entity(*key)) or (ExperimentDaySums(), {})
            for item in ids.items():
                applied.add(item)
        horizon_ms = self._lateness_ms if self.restoring else None
        known = _AppliedIds(applied, self._ids_cache, key)
        if not sums.apply(event_id, at_ms, changes, replay, horizon_ms, known):
            _APPLIED_BEFORE.inc()
            return
        state.write(sums)
        if self.restoring:
            known.add(event_id, at_ms)
        if not pending.read():
            # Set once per emission, not per change: under a steady flow of changes
            # a timer pushed back on every one would never fire.
            emit.set(Timestamp.of(self._clock() + self._emit_every_s))
            final.set(GlobalWindow().max_timestamp())
            pending.write(True)

    # Both timers emit the key's records: their parameters, declared once.
    _KEY, _SUMS, _APPLIED, _PENDING = (
        beam.DoFn.KeyParam,
        beam.DoFn.StateParam(STATE),
        beam.DoFn.StateParam(APPLIED),
        beam.DoFn.StateParam(PENDING),
    )

    @on_timer(EMIT)
    def on_emit(self, key=_KEY, state=_SUMS, applied=_APPLIED, pending=_PENDING):
        yield from self._records(key, state, applied, pending)

    @on_timer(FINAL)
    def on_final(self, key=_KEY, state=_SUMS, applied=_APPLIED, pending=_PENDING):
        yield from self._records(key, state, applied, pending)

    def _records(self, key, state, applied, pending):
        if not pending.read():
            return
        pending.clear()
        sums = state.read()
        records = sums.records(*key, self._experiments)
        if self.restoring:  # the experiment's record, last, carries the state
            records[-1][STATE_COLUMN] = encode_experiment_day(sums, self._prune(sums, applied))
        yield from records

    def _prune(self, sums: ExperimentDaySums, applied) -> dict[str, int]:
        """The applied ids still needed (the bag keeps only them, rewritten when
        some can go: once per emission at most)."""
        found = list(applied.read())
        ids = recent_ids(found, sums.newest_ms, self._lateness_ms)
        if len(ids) < len(found):
            applied.clear()
            for item in ids.items():
                applied.add(item)
        return ids


class StreamExperimentMetrics(beam.PTransform):
    """``EngagementEvent``s → ``{records, user_experiment_rows}``: ``records`` are
    ``ExperimentDaySums.records`` dicts (per variant and per experiment, per day
    and for the whole run), re-emitted as they change; ``user_experiment_rows`` each updated
    user's ``user_experiments`` row per bundle.

    ``window_ms``: attribution window, milliseconds. ``allowed_lateness_s``: how far
    an event may lag its user's newest event, seconds (the streaming job's).
    ``emit_every_s``: longest a changed group waits for its record, seconds of
    processing time. ``experiments``: the configured shares and control of the SRM
    p-value and the lifts (None: equal shares, control ``control``). ``restore``:
    as ``UpdateUserState``'s. ``clock``: processing time, seconds (as Beam's
    ``GroupIntoBatches``, tests give the TestStream's, which starts at 0).
    """

    def __init__(
        self,
        rewards: RewardConfig,
        window_ms: int = DEFAULT_WINDOW_MS,
        allowed_lateness_s: float = 600.0,
        emit_every_s: float = 10.0,
        exposure_type: str = EXPOSURE_TYPE,
        clock: Callable[[], float] = time.time,
        experiments: ExperimentsConfig | None = None,
        restore: StateRestore | None = None,
    ):
        super().__init__()
        if emit_every_s <= 0:
            raise ValueError(f"emit_every_s must be > 0 seconds, got {emit_every_s}")
        lateness_ms = round(allowed_lateness_s * 1000)
        stepper = IncrementalAttribution(window_ms, lateness_ms)
        self._users = _UserSumsFn(rewards, stepper, exposure_type, restore)
        self._days = _ExperimentDayFn(emit_every_s, clock, lateness_ms, experiments, restore)

    def expand(self, events):
        sums = beam.ParDo(self._users).with_outputs(USER_EXPERIMENT_ROWS, main="changes")
        users = (
            events
            | "KeyByUser" >> beam.Map(lambda e: (e.user_id, e)).with_output_types(STR_KEYED)
            | "UserSums" >> sums
        )
        records = (
            users.changes
            | "AsDayChange"
            >> beam.Map(lambda change: change).with_output_types(
                typehints.KV[typehints.Tuple[str, str], typehints.Any]
            )
            | "GroupSums" >> beam.ParDo(self._days)
        )
        return {RECORDS: records, USER_EXPERIMENT_ROWS: users[USER_EXPERIMENT_ROWS]}


def group_id(record: dict) -> str:
    """The ``experiment_metrics`` entity of a record: ``experiment/variant/day``
    (day empty for the whole run)."""
    return f"{record['experiment']}/{record['variant']}/{record['day']}"


class ExperimentMetricRows(beam.PTransform):
    """Records → rows of the ``experiment_metrics`` view, stamped with the wall time
    (epoch ms) they were made: the dashboard's "as of"."""

    def expand(self, records):
        return records | "ToRow" >> beam.Map(
            lambda r: {
                EXPERIMENT_GROUP_KEY: group_id(r),
                EVENT_TIMESTAMP: int(time.time() * 1000),
                **r,
            }
        )
