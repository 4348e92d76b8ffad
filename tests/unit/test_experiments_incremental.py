"""The streaming form of the experiment sums (``experiments.incremental``) gives the
batch numbers on the same events, whatever their order within the lateness."""

from __future__ import annotations

import collections

import pytest

from beam_pipelines.experiments.aggregate import (
    ALL_DAYS,
    GroupSums,
    metrics_record,
    per_user_rows,
    variant_metrics,
)
from beam_pipelines.experiments.attribution import attribute, split_events
from beam_pipelines.experiments.incremental import IncrementalAttribution, UserSums
from beam_pipelines.rewards import SHORT_VIDEO
from tests.helpers.experiment_log import (
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
