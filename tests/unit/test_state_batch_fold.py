"""The NumPy replays (decay.decayed_scan, state.user_fold, state.item_fold, history_tables)
against the one-by-one fold they replace: the same decisions, rows and final state."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beam_pipelines.embeddings import HashedEmbeddings
from beam_pipelines.history import arrow_schema
from beam_pipelines.history_tables import item_finals, item_table, user_finals, user_table
from beam_pipelines.state import StateConfig
from beam_pipelines.state.columns import ScoredColumns
from beam_pipelines.state.decay import decayed_scan
from beam_pipelines.state.item_fold import fold_items
from beam_pipelines.state.records import ScoredEvent
from beam_pipelines.state.updaters import update_item
from beam_pipelines.state.user_fold import fold_users
from beam_pipelines.transforms.state import _UserStepper, item_row, replay_key, user_row
from feature_repo.features import ITEM_KEY, ITEM_REALTIME, USER_KEY, USER_REALTIME
from tests.helpers.compare import row_differences
from tests.helpers.decay_oracle import OneByOne

PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
HOUR_MS, DAY_MS = 3_600_000, 86_400_000
T0 = 1_767_225_600_000


class Versions:
    """An EmbeddingSource stand-in: table k (hashed, its own width) from ``starts[k]`` on."""

    def __init__(self, starts: list[int], dims: list[int]):
        self.starts = starts
        self.tables = [HashedEmbeddings(d, salt=f"v{k}") for k, d in enumerate(dims)]

    def current(self, event_time_ms=None):
        k = sum(1 for s in self.starts if event_time_ms is None or s <= event_time_ms)
        return self.tables[max(k - 1, 0)]


@st.composite
def logs(draw, max_size=60):
    """Events of a few users and items in arrival order, with redeliveries (same id,
    maybe another time), late events, equal times and long gaps."""
    spread = draw(st.sampled_from([1_000, 60_000, HOUR_MS, DAY_MS, 90 * DAY_MS]))
    events = []
    for seq in range(draw(st.integers(1, max_size))):
        if events and draw(st.integers(0, 5)) == 0:
            prior = draw(st.sampled_from(events))
            t = prior.timestamp_ms + draw(st.sampled_from([0, 0, 1, -HOUR_MS, 2 * HOUR_MS]))
            events.append(prior._replace(seq=seq, timestamp_ms=max(t, 0)))
            continue
        t = T0 + draw(st.integers(0, spread)) + draw(st.sampled_from([0, 0, 1_100 * HOUR_MS]))
        engaged = draw(st.booleans())
        events.append(
            ScoredEvent(
                f"e{seq}",
                draw(st.sampled_from(["u1", "u2", "u3"])),
                draw(st.sampled_from([f"i{k}" for k in range(6)])),
                "view",
                t,
                draw(st.sampled_from([0.0, 1.0, -0.5, 2.0]) | st.floats(-2, 2)),
                engaged,
                draw(st.booleans()),
                seq,
                engaged and draw(st.booleans()),
            )
        )
    return events


configs = st.builds(
    StateConfig,
    user_short_half_life_s=st.sampled_from([60.0, 3600.0]),
    item_short_half_life_s=st.sampled_from([60.0, 3600.0]),
    recent_events=st.integers(1, 6),
)
sources = st.builds(
    Versions,
    st.lists(st.integers(T0, T0 + 2 * DAY_MS), min_size=1, max_size=3).map(sorted),
    st.lists(st.sampled_from([2, 3]), min_size=3, max_size=3),
)


def _reference(events, config, lateness_ms, source, order):
    """(user rows, accepted, letters, item rows) of the one-by-one fold per entity."""
    stepper = _UserStepper(config, lateness_ms, source)
    user_rows, accepted, letters = [], [], []
    for user in sorted({e.user_id for e in events}):
        state = None
        for e in sorted((e for e in events if e.user_id == user), key=replay_key(order)):
            state, letter = stepper.step(state, e)
            if letter is not None:
                letters.append((letter.reason, e.seq))
                continue
            user_rows.append(user_row(user, state.user))
            accepted.append(e)
    item_rows = []
    for item in sorted({e.item_id for e in accepted}):
        state = None
        for e in sorted((e for e in accepted if e.item_id == item), key=replay_key(order)):
            state = update_item(state, e, config)
            item_rows.append(item_row(item, state, config))
    return user_rows, accepted, letters, item_rows


def _as_stored(rows, view):
    return pa.Table.from_pylist(rows, arrow_schema(view)).to_pylist()


def _assert_rows(got, want, rel, abs_=1e-12):
    """Same rows per entity in the same order (entities may come in any order)."""
    key = USER_KEY if USER_KEY in want[0] else ITEM_KEY
    got, want = sorted(got, key=lambda r: r[key]), sorted(want, key=lambda r: r[key])
    assert len(got) == len(want)
    problems = [
        (k, d)
        for k, (g, w) in enumerate(zip(got, want, strict=True))
        if (d := row_differences(g, w, rel, abs_))
    ]
    assert not problems, problems[:3]


@PROPERTY
@given(
    logs(), configs, sources, st.sampled_from(["arrival", "time"]), st.sampled_from([0, 600_000])
)
def test_user_and_item_replays_match_the_one_by_one_fold(events, config, source, order, lateness):
    want_users, want_accepted, want_letters, want_items = _reference(
        events, config, lateness, source, order
    )
    columns = ScoredColumns.from_events(events)
    history, letters = fold_users(columns, config, lateness, source, order)
    assert sorted((r, columns.seq[i]) for r, i, _ in letters) == sorted(want_letters)
    accepted = columns.take(history.applied.tolist())
    assert sorted(accepted.seq) == sorted(e.seq for e in want_accepted)

    _assert_rows(user_finals(history), _last(want_users, USER_KEY), rel=1e-9)
    stored = user_table(history)
    assert stored.schema == arrow_schema(USER_REALTIME)
    _assert_rows(stored.to_pylist(), _as_stored(want_users, USER_REALTIME), rel=1e-6, abs_=1e-7)

    items = fold_items(accepted, config, order)
    _assert_rows(item_finals(items, config), _last(want_items, ITEM_KEY), rel=1e-9)
    stored = item_table(items, config)
    _assert_rows(stored.to_pylist(), _as_stored(want_items, ITEM_REALTIME), rel=1e-6, abs_=1e-7)


def _last(rows, key):
    last = {}
    for row in rows:
        last[row[key]] = row
    return list(last.values())


@PROPERTY
@given(
    st.lists(st.integers(0, 2_000 * HOUR_MS), min_size=1, max_size=40),
    st.sampled_from([60.0, 3600.0]),
    st.booleans(),
)
def test_prefix_sums_match_pushing_one_by_one(offsets, half_life_s, with_carry):
    rng = np.random.default_rng(len(offsets))
    t = np.array(offsets, dtype=np.int64) + T0
    x = rng.normal(size=(len(t), 3))
    sums = OneByOne((half_life_s, 30 * 86400.0), 3)
    carry = carry_t = None
    if with_carry:
        sums.push(T0 - HOUR_MS, np.ones(3))
        carry, carry_t = sums.values[None].copy(), [sums.t_ref_ms]
    got, newest = decayed_scan(t, x, sums.half_lives_s, None, carry, carry_t)
    for k in range(len(t)):
        sums.push(int(t[k]), x[k])
        assert newest[k] == sums.t_ref_ms
        np.testing.assert_allclose(got[k], sums.values, rtol=1e-9, atol=1e-300)


def test_an_empty_batch_gives_empty_tables():
    config = StateConfig()
    history, letters = fold_users(ScoredColumns.empty(), config, 0, Versions([T0], [2]), "arrival")
    assert letters == [] and user_table(history).num_rows == 0
    assert item_table(fold_items(ScoredColumns.empty(), config, "time"), config).num_rows == 0


@pytest.mark.parametrize("order", ["arrival", "time"])
def test_version_change_rebuilds_from_the_last_n(order):
    config = StateConfig(recent_events=2)
    source = Versions([T0, T0 + HOUR_MS], [2, 3])
    events = [
        ScoredEvent(f"e{k}", "u1", f"i{k}", "like", T0 + k * 20 * 60_000, 1.0, True, True, k)
        for k in range(6)
    ]
    want_users, *_ = _reference(events, config, 600_000, source, order)
    history, _ = fold_users(ScoredColumns.from_events(events), config, 600_000, source, order)
    got = user_table(history).to_pylist()
    assert [len(r["user_emb_short"]) for r in got] == [2, 2, 2, 3, 3, 3]
    _assert_rows(got, _as_stored(want_users, USER_REALTIME), rel=1e-6, abs_=1e-7)


@PROPERTY
@given(
    st.lists(
        st.lists(st.integers(0, 2_000 * HOUR_MS), min_size=1, max_size=12), min_size=1, max_size=5
    ),
    st.sampled_from([60.0, 3600.0]),
    st.booleans(),
)
def test_segmented_prefix_sums_match_pushing_each_run(runs, half_life_s, with_carry):
    t = np.array([T0 + o for run in runs for o in run], dtype=np.int64)
    starts = np.cumsum([0, *map(len, runs)])[:-1]
    x = np.random.default_rng(len(t)).normal(size=(len(t), 2))
    half_lives = np.array([half_life_s, 86400.0])
    oracles = [OneByOne(half_lives, 2) for _ in runs]
    carry = carry_t = None
    if with_carry:  # each run starts from its own stored sums
        for k, sums in enumerate(oracles):
            sums.push(T0 - k * HOUR_MS, np.full(2, k + 1.0))
        carry = np.stack([sums.values.copy() for sums in oracles])
        carry_t = [sums.t_ref_ms for sums in oracles]
    got, newest = decayed_scan(t, x, half_lives, starts, carry, carry_t)
    for start, run, sums in zip(starts, runs, oracles, strict=True):
        for k in range(start, start + len(run)):
            sums.push(int(t[k]), x[k])
            assert newest[k] == sums.t_ref_ms
            np.testing.assert_allclose(got[k], sums.values, rtol=1e-9, atol=1e-300)
