"""UpdateCoEngagement: streaming (stateful DoFns) and bounded (folds) write the same rows,
and the rows match the pure state classes on the same events."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.testing.util import assert_that, equal_to

from beam_pipelines.rewards import SHORT_VIDEO
from beam_pipelines.state.coengagement import ItemNeighbours, PairWindow, pair_updates
from beam_pipelines.transforms.coengagement import (
    ITEM_PAIR_ROWS,
    USER_PAIR_ROWS,
    UpdateCoEngagement,
)
from tests.helpers.events import MINUTE_MS, T0_MS, scored
from tests.helpers.pipelines import batch_pipeline, state_pipeline

# u1: likes a, b, then skips c (not an interaction), likes a again; u2: likes b, c.
EVENTS = [
    scored("e1", "u1", "a", "like", T0_MS, seq=1),
    scored("e2", "u1", "b", "like", T0_MS + MINUTE_MS, seq=2),
    scored("e3", "u1", "c", "skip", T0_MS + 2 * MINUTE_MS, seq=3),
    scored("e4", "u1", "a", "like", T0_MS + 3 * MINUTE_MS, seq=4),
    scored("e5", "u2", "b", "like", T0_MS + MINUTE_MS, seq=5),
    scored("e6", "u2", "c", "like", T0_MS + 4 * MINUTE_MS, seq=6),
]


def _expected():
    windows: dict[str, PairWindow] = {}
    rows: dict[str, ItemNeighbours] = {}
    newest: dict[str, int] = {}
    for e in EVENTS:
        if not SHORT_VIDEO.is_interaction(e.event_type, e.engaged):
            continue
        previous = windows.setdefault(e.user_id, PairWindow()).push(e.item_id)
        for key, neighbours in pair_updates(e.item_id, previous or []):
            rows.setdefault(key, ItemNeighbours()).add(neighbours)
            newest[key] = max(newest.get(key, 0), e.timestamp_ms)
    users = {u: list(reversed(w.items)) for u, w in windows.items()}
    items = {k: (r.top()[0], r.top()[1], newest[k]) for k, r in rows.items()}
    return users, items


def test_pure_expectation_by_hand() -> None:
    users, items = _expected()
    assert users == {"u1": ["a", "b"], "u2": ["c", "b"]}
    assert items["b"][:2] == (["a", "c"], [1.0, 1.0])
    assert items["c"][:2] == (["b"], [1.0])


def _run(pipeline, order):
    users_expected, items_expected = _expected()
    with pipeline as p:
        out = p | beam.Create(EVENTS) | UpdateCoEngagement(SHORT_VIDEO, order)
        users = out[USER_PAIR_ROWS] | "U" >> beam.Map(
            lambda r: (r["user_id"], r["user_interacted_items"])
        )
        items = out[ITEM_PAIR_ROWS] | "I" >> beam.Map(
            lambda r: (r["item_id"], (r["item_neighbors"], r["item_neighbor_pairs"],
                                      r["event_timestamp"]))
        )  # fmt: skip
        assert_that(users, equal_to(sorted(users_expected.items())), label="users")
        assert_that(items, equal_to(sorted(items_expected.items())), label="items")


def test_bounded_fold_in_time_order() -> None:
    _run(batch_pipeline(), "time")


def test_streaming_stateful_dofns() -> None:
    # One bundle on the local runner: each key's newest row once, the same final rows.
    _run(state_pipeline(), None)
