"""SeenEvents: a user's applied event ids, kept as far back as lateness lets them return."""

from __future__ import annotations

import pickle

from hypothesis import given, settings
from hypothesis import strategies as st

from beam_pipelines.state.seen import SeenEvents

MINUTE = 60_000


def test_remembers_ids_within_the_horizon_of_the_newest():
    seen = SeenEvents()
    seen.add("a", 0, horizon_ms=10 * MINUTE)
    seen.add("b", 10 * MINUTE, horizon_ms=10 * MINUTE)  # "a" is exactly at the bound
    assert "a" in seen and "b" in seen
    seen.add("c", 30 * MINUTE, horizon_ms=10 * MINUTE)  # 30 min ahead: "a" and "b" go
    assert "a" not in seen and "b" not in seen and "c" in seen
    assert len(seen) == 1


def test_an_older_event_does_not_move_the_horizon():
    seen = SeenEvents()
    seen.add("new", 100 * MINUTE, horizon_ms=10 * MINUTE)
    seen.add("old", 95 * MINUTE, horizon_ms=10 * MINUTE)
    assert "new" in seen and "old" in seen


def test_pickles_with_its_bounds():
    seen = SeenEvents()
    for k in range(5):
        seen.add(f"e{k}", k * MINUTE, horizon_ms=10 * MINUTE)
    copy = pickle.loads(pickle.dumps(seen))
    assert all(f"e{k}" in copy for k in range(5))
    copy.add("later", 40 * MINUTE, horizon_ms=10 * MINUTE)
    assert len(copy) == 1
    assert len(pickle.loads(pickle.dumps(SeenEvents()))) == 0


@settings(max_examples=200, deadline=None)
@given(
    deliveries=st.lists(
        st.tuples(st.integers(0, 15), st.integers(0, 40 * MINUTE)), min_size=1, max_size=80
    ),
    horizon=st.sampled_from([0, MINUTE, 5 * MINUTE, 20 * MINUTE]),
)
def test_with_the_lateness_rule_no_event_is_ever_applied_twice(deliveries, horizon):
    """Deliveries of ids 0..15 (an id keeps its event time, as a redelivery does):
    the user stage's rule (late first, then seen) never applies an id twice, and
    applies every id whose first on-time delivery is not a duplicate."""
    times = {}
    seen, newest, applied = SeenEvents(), None, []
    for event_id, t in deliveries:
        t = times.setdefault(event_id, t)
        if newest is not None and newest - t > horizon:
            continue  # late
        if str(event_id) in seen:
            continue  # duplicate
        applied.append(event_id)
        newest = t if newest is None else max(newest, t)
        seen.add(str(event_id), t, horizon)
    assert len(applied) == len(set(applied))
