"""Engagement logs: engaged events are the interactions, repeats are not scored,
bad lines are counted; time to adapt on a hand-made interest shift."""

from __future__ import annotations

import json

import numpy as np

from beam_pipelines.rewards import SHORT_VIDEO
from models.evaluation.adapt import AdaptTracker
from models.evaluation.data import build_log, read_jsonl
from models.evaluation.protocol import apply_training, replay
from models.evaluation.variants import Popularity, RollingPopularity
from models.evaluation.world import World

T0 = 1_767_225_600_000


def _event(n, user, item, event_type, t_s, **extra):
    return {
        "event_id": f"e{n}",
        "user_id": user,
        "item_id": item,
        "event_type": event_type,
        "timestamp": T0 + 1000 * t_s,
        **extra,
    }


EVENTS = [
    _event(1, "u1", "i1", "impression", 1),
    _event(2, "u1", "i1", "like", 2),
    _event(3, "u2", "i1", "like", 3),
    _event(4, "u2", "i2", "share", 4),
    _event(5, "u3", "i2", "like", 5),
    _event(6, "u3", "i3", "impression", 6),
    _event(7, "u3", "i3", "skip", 7),
    _event(8, "u2", "i3", "view", 8, watch_ms=100, item_duration_ms=1000),  # not engaged
    _event(9, "u1", "i1", "share", 9),  # a repeat: not a target, still counted after
    _event(10, "u4", "i3", "like", 10),  # cold user
]


def _write(tmp_path, events, extra_lines=()):
    path = tmp_path / "events.jsonl"
    lines = [json.dumps(e) for e in events] + list(extra_lines)
    path.write_text("\n".join(lines) + "\n")
    return path


def test_engaged_events_are_interactions_and_repeats_are_not_scored(tmp_path):
    path = _write(tmp_path, EVENTS, ["{not json", json.dumps(EVENTS[0])])
    raw = read_jsonl(path, SHORT_VIDEO)
    assert dict(raw.skipped) == {"malformed_json": 1, "duplicate": 1}
    log = build_log(raw, SHORT_VIDEO, "engaged")
    assert log.n_train == 8
    assert log.interaction.tolist() == [
        False,
        True,
        True,
        True,
        True,
        False,
        False,
        False,
        True,
        True,
    ]
    world = World(log)
    apply_training(world, show_progress=False)
    assert world.train_counts.tolist() == [2.0, 2.0, 0.0]
    result = replay(world, [Popularity(), RollingPopularity()], show_progress=False)
    assert result.repeats_skipped == 1
    assert result.positions.tolist() == [9]
    # i3 scores 0 against i1 (2, or 3 after the repeat) and i2 (2): rank 2 for both.
    assert result.ranks["popularity"].tolist() == [2]
    assert result.ranks["popularity_rolling"].tolist() == [2]
    assert world.counts.tolist() == [3.0, 2.0, 1.0]
    assert result.warm.tolist() == [False]


def test_time_to_adapt_counts_the_users_events_since_the_shift(tmp_path):
    train = [_event(n, "u0", f"i{n % 4}", "like", n) for n in range(8)]
    test = [_event(10 + n, "u1", "i0", "impression", 20 + n) for n in range(2)]
    log = build_log(read_jsonl(_write(tmp_path, train + test), SHORT_VIDEO), SHORT_VIDEO, "engaged")
    assert log.n_train == 8
    topics = {"i0": "a", "i1": "a", "i2": "b", "i3": "b"}
    shifts = [
        {"user_id": "u1", "time_ms": T0 + 20_000, "kind": "shift", "new_topic": "b"},
        {"user_id": "u0", "time_ms": T0 + 1_000, "kind": "shift", "new_topic": "b"},  # in training
    ]
    tracker = AdaptTracker(log, shifts, topics, ["slow", "fast"], k=2)
    assert len(tracker.shifts) == 1
    world = World(log)
    a_items, b_items, mixed = np.array([0, 1]), np.array([2, 3]), np.array([0, 2])
    assert tracker.wants(8, world)
    tracker.record(8, "fast", b_items)  # adapted before the first event: 0
    tracker.record(8, "slow", a_items)
    assert tracker.wants(9, world)
    tracker.record(9, "slow", mixed)  # "any" now; a tie is no plurality
    summary = tracker.summary()
    assert summary["fast"]["plurality"] == {
        "adapted": 1,
        "median_events": 0.0,
        "mean_events_adapted": 0.0,
    }
    assert summary["slow"]["any"]["median_events"] == 1.0
    assert summary["slow"]["plurality"] == {
        "adapted": 0,
        "median_events": None,
        "mean_events_adapted": None,
    }
