"""StreamExperimentMetrics: the streaming form of ``ExperimentMetrics``, one pass.

Two thin stateful DoFns over the plain classes of ``beam_pipelines.experiments``:

- per user (``incremental.IncrementalAttribution`` on a ``UserSums``): each event
  is attributed with the batch rule and yields the user's changed rows as
  ``((experiment, variant, day), (old row, new row))``; a watermark timer at
  ``cleanup_ms`` commits what can no longer change and drops finished days;
- per ``(experiment, variant, day)`` (``aggregate.GroupSums``): applies the changes
  and, at most every ``emit_every_s`` seconds of processing time after a change
  (and once more when the input ends, for a bounded replay), emits the group's
  ``aggregate.metrics_record`` plus ``updates`` (changes applied: a later record
  of a group has more).

Global window; the input is ``EngagementEvent``s already deduplicated by event id
(the streaming job's accepted events). Events more than ``allowed_lateness_s``
behind their user's newest are counted (``experiment_late``) and not applied, as the
feature stages dead-letter them. ``ExperimentMetricRows`` turns records into rows of
the ``experiment_metrics`` feature view.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import apache_beam as beam
from apache_beam import typehints
from apache_beam.coders import BooleanCoder, PickleCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import Timestamp

from beam_pipelines.experiments.aggregate import GroupSums, metrics_record
from beam_pipelines.experiments.attribution import DEFAULT_WINDOW_MS, EXPOSURE_TYPE, split_events
from beam_pipelines.experiments.incremental import IncrementalAttribution, UserSums
from beam_pipelines.rewards import RewardConfig
from feature_repo.features import EVENT_TIMESTAMP, EXPERIMENT_GROUP_KEY, EXPERIMENT_UPDATES

_LATE = Metrics.counter("rtp_experiments", "experiment_late")
_SKIPPED = {
    name: Metrics.counter("rtp_experiments", name)
    for name in ("unlogged_exposures", "no_reward_rule")
}


class _UserSumsFn(beam.DoFn):
    STATE = ReadModifyWriteStateSpec("experiment_user_sums", PickleCoder())
    CLEANUP = TimerSpec("experiment_cleanup", TimeDomain.WATERMARK)

    def __init__(self, rewards: RewardConfig, stepper: IncrementalAttribution, exposure_type: str):
        self._rewards, self._stepper, self._exposure_type = rewards, stepper, exposure_type

    def process(
        self, element, state=beam.DoFn.StateParam(STATE), cleanup=beam.DoFn.TimerParam(CLEANUP)
    ):
        _, event = element
        exposures, outcomes, skipped = split_events([event], self._rewards, self._exposure_type)
        for name, n in skipped.items():
            _SKIPPED[name].inc(n)
        sums = state.read() or UserSums()
        changes = self._stepper.push(sums, event.timestamp_ms, exposures, outcomes)
        if changes is None:
            _LATE.inc()
            return
        state.write(sums)
        cleanup.set(Timestamp(micros=self._stepper.cleanup_ms(sums) * 1000))
        yield from changes

    @on_timer(CLEANUP)
    def on_cleanup(self, state=beam.DoFn.StateParam(STATE), fired=beam.DoFn.TimestampParam):
        sums = state.read()
        if sums is not None:
            self._stepper.expire(sums, fired.micros // 1000)
            state.write(sums)


class _GroupSumsFn(beam.DoFn):
    STATE = ReadModifyWriteStateSpec("experiment_group_sums", PickleCoder())
    PENDING = ReadModifyWriteStateSpec("experiment_emit_pending", BooleanCoder())
    EMIT = TimerSpec("experiment_emit", TimeDomain.REAL_TIME)
    FINAL = TimerSpec("experiment_final", TimeDomain.WATERMARK)

    def __init__(self, emit_every_s: float, clock: Callable[[], float]):
        self._emit_every_s, self._clock = emit_every_s, clock

    def process(
        self,
        element,
        state=beam.DoFn.StateParam(STATE),
        pending=beam.DoFn.StateParam(PENDING),
        emit=beam.DoFn.TimerParam(EMIT),
        final=beam.DoFn.TimerParam(FINAL),
    ):
        _, (old, new) = element
        sums = state.read() or GroupSums()
        sums.replace(old, new)
        state.write(sums)
        if not pending.read():
            # Set once per emission, not per change: under a steady flow of changes
            # a timer pushed back on every one would never fire.
            emit.set(Timestamp.of(self._clock() + self._emit_every_s))
            final.set(GlobalWindow().max_timestamp())
            pending.write(True)

    # Both timers emit the group's record: their parameters, declared once.
    _KEY, _SUMS, _PENDING = (
        beam.DoFn.KeyParam,
        beam.DoFn.StateParam(STATE),
        beam.DoFn.StateParam(PENDING),
    )

    @on_timer(EMIT)
    def on_emit(self, key=_KEY, state=_SUMS, pending=_PENDING):
        yield from _record(key, state, pending)

    @on_timer(FINAL)
    def on_final(self, key=_KEY, state=_SUMS, pending=_PENDING):
        yield from _record(key, state, pending)


def _record(key, state, pending):
    if not pending.read():
        return
    pending.clear()
    sums = state.read()
    yield {**metrics_record(key, sums.metrics()), EXPERIMENT_UPDATES: sums.updates}


class StreamExperimentMetrics(beam.PTransform):
    """``EngagementEvent``s → ``aggregate.metrics_record`` dicts (plus ``updates``)
    per ``(experiment, variant, day)``, re-emitted as they change.

    ``window_ms``: attribution window, milliseconds. ``allowed_lateness_s``: how far
    an event may lag its user's newest event, seconds (the streaming job's).
    ``emit_every_s``: longest a changed group waits for its record, seconds of
    processing time. ``clock``: processing time, seconds (as Beam's
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
    ):
        super().__init__()
        if emit_every_s <= 0:
            raise ValueError(f"emit_every_s must be > 0 seconds, got {emit_every_s}")
        stepper = IncrementalAttribution(window_ms, round(allowed_lateness_s * 1000))
        self._users = _UserSumsFn(rewards, stepper, exposure_type)
        self._groups = _GroupSumsFn(emit_every_s, clock)

    def expand(self, events):
        return (
            events
            | "KeyByUser"
            >> beam.Map(lambda e: (e.user_id, e)).with_output_types(
                typehints.KV[str, typehints.Any]
            )
            | "UserSums" >> beam.ParDo(self._users)
            | "AsGroupChange"
            >> beam.Map(lambda change: (change[0], change[1:])).with_output_types(
                typehints.KV[typehints.Tuple[str, str, str], typehints.Any]
            )
            | "GroupSums" >> beam.ParDo(self._groups)
        )


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
