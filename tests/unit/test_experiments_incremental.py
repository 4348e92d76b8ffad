"""The streaming form of the experiment sums (``experiments.incremental``) gives the
batch numbers on the same events, whatever their order within the lateness."""

from __future__ import annotations

import collections
import math

import pytest

from beam_pipelines.experiments.aggregate import (
    ALL_DAYS,
    GroupSums,
    metrics_record,
    per_user_rows,
    variant_metrics,
)
from beam_pipelines.experiments.attribution import attribute, split_events
from beam_pipelines.experiments.incremental import (
    ExperimentDaySums,
    IncrementalAttribution,
    UserSums,
    recent_ids,
)
from beam_pipelines.experiments.report import build_report
from beam_pipelines.rewards import SHORT_VIDEO
from beam_pipelines.state.keyed import (
    ExperimentUserState,
    decode_experiment_day,
    decode_experiment_user,
    encode_experiment_day,
    encode_experiment_user,
)
from beam_pipelines.state.seen import SeenEvents
from feature_repo.features import (
    EXPERIMENT_ALL_VARIANTS,
    EXPERIMENT_LIFTS,
    EXPERIMENT_SRM_P_VALUE,
    EXPERIMENT_UPDATES,
)
from rtp.simulator.experiment_log import (
    MINUTE_MS,
    arrival_order,
    experiment,
    synthetic_log,
    with_duplicates,
)

WINDOW_MS = 10 * MINUTE_MS  # shorter than some outcomes' delay: some are late
LATENESS_MS = 20 * MINUTE_MS


def batch_records(events, window_ms: int = WINDOW_MS) -> dict:
    exposures, outcomes, _ = split_events(events, SHORT_VIDEO)
    attributed, _ = attribute(exposures, outcomes, window_ms)
    return {
        key: metrics_record(key, variant_metrics(rows))
        for key, rows in per_user_rows(attributed).items()
    }


def streamed(events, stepper: IncrementalAttribution):
    """Per-user states and per-group sums after pushing ``events`` in this order."""
    users: dict[str, UserSums] = collections.defaultdict(UserSums)
    groups: dict = collections.defaultdict(GroupSums)
    late = 0
    for event in events:
        exposures, outcomes, _ = split_events([event], SHORT_VIDEO)
        changes = stepper.push(users[event.user_id], event.timestamp_ms, exposures, outcomes)
        late += changes is None
        for key, old, new in changes or ():
            groups[key].replace(old, new)
    return users, groups, late


def assert_same_records(got: dict, expected: dict) -> None:
    assert got.keys() == expected.keys()
    for key, record in got.items():
        for name, value in record.items():
            want = expected[key][name]
            assert value == (want if isinstance(want, str) else pytest.approx(want, nan_ok=True)), (
                key,
                name,
            )


@pytest.mark.parametrize("seed", [1, 2])
def test_out_of_order_stream_with_duplicate_exposures_gives_the_batch_metrics(seed: int) -> None:
    events = with_duplicates(synthetic_log(experiment("ab"), 40, seed=seed), every=7)
    stepper = IncrementalAttribution(WINDOW_MS, LATENESS_MS)

    users, groups, late = streamed(arrival_order(events, LATENESS_MS, seed), stepper)

    expected = batch_records(events)
    assert_same_records({k: metrics_record(k, g.metrics()) for k, g in groups.items()}, expected)
    assert late == 0
    assert len(expected) > 6  # several days per variant
    # Attribution's state is bounded: only the last window and lateness stay live.
    for state in users.values():
        assert all(e.timestamp_ms + WINDOW_MS >= state.horizon_ms for e in state.exposures)


def test_an_event_behind_the_lateness_is_not_applied() -> None:
    events = synthetic_log(experiment("ab"), 1, seed=5)
    stepper = IncrementalAttribution(WINDOW_MS, LATENESS_MS)
    state = UserSums()
    newest = max(events, key=lambda e: e.timestamp_ms)
    exposures, outcomes, _ = split_events([newest], SHORT_VIDEO)
    stepper.push(state, newest.timestamp_ms, exposures, outcomes)

    assert stepper.push(state, newest.timestamp_ms - LATENESS_MS - 1, [], []) is None
    assert stepper.push(state, newest.timestamp_ms - LATENESS_MS, [], []) == []


def test_cleanup_keeps_only_the_whole_run_and_a_returning_user_still_adds_up() -> None:
    events = synthetic_log(experiment("ab"), 1, seed=8, days=2)
    stepper = IncrementalAttribution(WINDOW_MS, LATENESS_MS)
    first, second = events[: len(events) // 2], events[len(events) // 2 :]
    users, groups, _ = streamed(sorted(first, key=lambda e: e.timestamp_ms), stepper)
    (state,) = users.values()

    stepper.expire(state, stepper.cleanup_ms(state))

    assert (state.exposures, state.outcomes) == ([], [])
    assert {key[2] for key in state.rows} == {ALL_DAYS}
    horizon = state.horizon_ms
    returned = [
        e for e in sorted(second, key=lambda e: e.timestamp_ms) if e.timestamp_ms >= horizon
    ]
    assert returned  # the user comes back after the clean-up
    for event in returned:
        exposures, outcomes, _ = split_events([event], SHORT_VIDEO)
        for key, old, new in stepper.push(state, event.timestamp_ms, exposures, outcomes):
            groups[key].replace(old, new)
    kept = first + returned  # an event behind the cleaned-up clock is late, in a stream too
    whole_run = {k: v for k, v in batch_records(kept).items() if k[2] == ALL_DAYS}
    got = {k: metrics_record(k, g.metrics()) for k, g in groups.items() if k[2] == ALL_DAYS}
    assert_same_records(got, whole_run)


def _day_sums(groups: dict, experiment_name: str, day: str) -> ExperimentDaySums:
    sums = ExperimentDaySums()
    for (e, variant, d), group in groups.items():
        if (e, d) == (experiment_name, day):
            sums.variants[variant] = group
    return sums


def test_the_day_records_carry_the_reports_srm_and_lifts() -> None:
    events = synthetic_log(experiment("ab"), 60, seed=3, lifts={"treatment": 0.5})
    _, groups, _ = streamed(sorted(events, key=lambda e: e.timestamp_ms), stepper())

    rows = {r["variant"]: r for r in _day_sums(groups, "ab", ALL_DAYS).records("ab", ALL_DAYS)}

    report = build_report(events, SHORT_VIDEO, window_ms=WINDOW_MS)["experiments"]["ab"]
    assert set(rows) == {"control", "treatment", EXPERIMENT_ALL_VARIANTS}
    for row in rows.values():
        assert row[EXPERIMENT_SRM_P_VALUE] == pytest.approx(report["srm_p_value"])
    for metric in ("engagement_rate", "reward_per_exposure"):
        want = report["variants"]["treatment"][metric]["lift"]
        got = [rows["treatment"][c] for c in EXPERIMENT_LIFTS[metric]]
        assert got == pytest.approx([want["value"], want["ci_low"], want["ci_high"]])
        assert all(
            math.isnan(rows[v][c]) for v in ("control", "") for c in EXPERIMENT_LIFTS[metric]
        )
    pooled = rows[EXPERIMENT_ALL_VARIANTS]
    assert pooled["users"] == rows["control"]["users"] + rows["treatment"]["users"]
    assert pooled[EXPERIMENT_UPDATES] == rows["control"]["updates"] + rows["treatment"]["updates"]


def test_an_events_changes_apply_once_when_ids_are_remembered() -> None:
    change = (("control", None, (2.0, 1.0, 1.0)),)
    sums, applied = ExperimentDaySums(restored_ms=1_000), {"e1"}  # e1 applied before a restart

    assert not sums.apply("e1", 1_000, change, replay=True, horizon_ms=500, applied=applied)
    assert not sums.apply("e1", 1_000, change, False, 500, applied)  # re-derived, as old
    assert sums.apply("e2", 900, change, False, 500, applied)  # as old, not applied
    assert sums.apply("e3", 2_000, (("control", (2.0, 1.0, 1.0), (3.0, 1.0, 0.5)),), False, 500)
    # A replay further behind than the ids are kept is taken as applied.
    assert not sums.apply("e0", 1_400, change, replay=True, horizon_ms=500, applied=applied)
    assert sums.variants["control"].users == 1
    assert sums.variants["control"].sums.tolist() == [3.0, 1.0, 0.5]
    assert recent_ids([("e1", 1_000), ("e3", 2_000), ("e4", 1_500)], 2_000, 500) == {
        "e3": 2_000,
        "e4": 1_500,
    }


class _Counting(set):
    def __contains__(self, item) -> bool:
        self.lookups = getattr(self, "lookups", 0) + 1
        return super().__contains__(item)


def test_only_an_event_that_may_have_been_applied_is_looked_up() -> None:
    sums, applied = ExperimentDaySums(restored_ms=1_000), _Counting({"e1"})
    change = (("control", None, (1.0, 0.0, 0.0)),)
    assert sums.apply("e5", 1_001, change, False, 500, applied)  # newer than the restored state
    assert not hasattr(applied, "lookups")
    assert sums.apply("e6", 1_001, change, True, 500, applied)  # a replay is always looked up
    assert applied.lookups == 1
    # Without remembering (no restore) each call applies.
    plain = ExperimentDaySums()
    assert plain.apply("e1", 1_000, change, False, None) and plain.apply(
        "e1", 1_000, change, True, None
    )
    assert plain.variants["control"].users == 2


def test_the_stored_states_read_back_and_carry_on_alike() -> None:
    events = sorted(synthetic_log(experiment("ab"), 3, seed=9), key=lambda e: e.timestamp_ms)
    half = len(events) // 2
    users, groups, _ = streamed(events[:half], stepper())
    for user_id, sums in users.items():
        seen = SeenEvents.from_ids({"x": 1})
        state = ExperimentUserState(
            sums, seen, {"x": ((("ab", ""), (("control", None, (1.0, 0.0, 0.0)),)),)}, 4
        )
        back = decode_experiment_user(encode_experiment_user(state))
        assert (back.sums, back.seen.ids(), back.sent, back.events) == (
            sums,
            {"x": 1},
            state.sent,
            4,
        )
        for event in (e for e in events[half:] if e.user_id == user_id):
            exposures, outcomes, _ = split_events([event], SHORT_VIDEO)
            original = stepper().push(sums, event.timestamp_ms, exposures, outcomes)
            assert stepper().push(back.sums, event.timestamp_ms, exposures, outcomes) == original
    day = _day_sums(groups, "ab", ALL_DAYS)
    day.apply("y", 5, (), False, 10)
    back, ids = decode_experiment_day(encode_experiment_day(day, {"y": 5}))
    by_variant = lambda sums: {r["variant"]: r for r in sums.records("ab", ALL_DAYS)}  # noqa: E731
    assert_same_records(by_variant(back), by_variant(day))
    assert (ids, back.newest_ms, back.restored_ms) == ({"y": 5}, day.newest_ms, day.newest_ms)


def stepper() -> IncrementalAttribution:
    return IncrementalAttribution(WINDOW_MS, LATENESS_MS)
