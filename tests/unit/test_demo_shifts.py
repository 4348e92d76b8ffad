"""``rtp demo``'s choice of split and users, on a hand-made stream with its ground truth."""

import json

from beam_pipelines.events import Reason
from beam_pipelines.rewards import load_reward_config
from rtp.demo.shifts import choose_split, topic_share
from rtp.simulator.records import InterestShift, SimRecord

REWARD = load_reward_config("short_video")
T0 = 1_767_225_600_000
TOPICS = {**{f"a{i}": "alpha" for i in range(20)}, **{f"b{i}": "beta" for i in range(20)}}
N = 200


def stream() -> tuple[list[SimRecord], list[InterestShift]]:
    """200 clean events one second apart, a dirty line after the fifth.

    u1: 30 events early, shifts alpha → beta at event 140 and likes 6 beta items:
        qualifies for any split at or before 140.
    u2: the same history, shifts at 150 but only sees beta items (no engagement).
    u3: shifts at 160 and likes beta items, but has only 5 events before.
    u4: 30 events early, shifts at 170 and likes beta items, then drifts at 190.
    """
    events = [("u9", "a0", "impression")] * N  # filler
    plan = {
        **{n: ("u1", f"a{n % 20}", "like") for n in range(0, 30)},
        **{n: ("u2", f"a{n % 20}", "like") for n in range(30, 60)},
        **{n: ("u3", "a1", "like") for n in range(60, 65)},
        **{n: ("u4", f"a{n % 20}", "like") for n in range(65, 95)},
        140: ("u1", "b0", "impression"),
        **{n: ("u1", f"b{n - 140}", "like") for n in range(141, 147)},
        **{n: ("u2", f"b{n - 150}", "impression") for n in range(150, 157)},
        **{n: ("u3", f"b{n - 160}", "like") for n in range(160, 167)},
        **{n: ("u4", f"b{n - 170}", "like") for n in range(170, 177)},
    }
    for n, event in plan.items():
        events[n] = event
    records, line = [], 0
    for n, (user, item, kind) in enumerate(events):
        obj = {"event_id": f"e{n}", "user_id": user, "item_id": item, "event_type": kind}
        records.append(
            SimRecord(
                line,
                json.dumps({**obj, "timestamp": T0 + n * 1000}).encode(),
                "clean",
                None,
                T0 + n * 1000,
            )
        )
        line += 1
        if n == 4:
            records.append(
                SimRecord(line, b"{not json", "malformed_json", Reason.MALFORMED_JSON, None)
            )
            line += 1

    def change(user, n, kind, old, new):
        return InterestShift(user, T0 + n * 1000, n, n + (n > 4), kind, old, new)

    shifts = [
        change("u1", 140, "shift", "alpha", "beta"),
        change("u2", 150, "shift", "alpha", "beta"),
        change("u3", 160, "shift", "alpha", "beta"),
        change("u4", 170, "shift", "alpha", "beta"),
        change("u4", 190, "drift", "beta", "alpha"),
    ]
    return records, shifts


def test_the_latest_split_with_enough_users_and_only_qualifying_users() -> None:
    records, shifts = stream()
    split = choose_split(records, shifts, TOPICS, REWARD, n_users=1, shares=(0.8, 0.7, 0.6))
    # 0.8 (event 160) leaves no qualifying user; 0.7 (event 140) leaves u1.
    assert split.clean_events == 140
    assert split.line == 141  # the dirty line is in part 1
    assert split.time_ms == T0 + 140 * 1000
    assert [u.user_id for u in split.users] == ["u1"]
    u1 = split.users[0]
    assert (u1.old_topic, u1.new_topic, u1.shift_ms) == ("alpha", "beta", T0 + 140_000)
    assert (u1.events_before_split, u1.new_topic_engagements) == (30, 6)


def test_the_split_with_most_users_when_none_has_enough() -> None:
    records, shifts = stream()
    split = choose_split(records, shifts, TOPICS, REWARD, n_users=3, shares=(0.8, 0.7, 0.6))
    # u2 never engages with beta, u3 has too little history, u4 drifts again later.
    assert split.clean_events == 140
    assert [u.user_id for u in split.users] == ["u1"]


def test_no_user_qualifies() -> None:
    records, shifts = stream()
    split = choose_split(records, shifts, TOPICS, REWARD, shares=(0.9, 0.8))
    assert split.users == [] and split.clean_events == 180  # the latest of the ties


def test_topic_share() -> None:
    assert topic_share(["a0", "b1", "b2", "x"], TOPICS, "beta") == 0.5
    assert topic_share([], TOPICS, "beta") == 0.0


def test_a_user_whose_shift_is_its_last_change_qualifies() -> None:
    records, shifts = stream()
    no_drift = [s for s in shifts if s.kind == "shift"]
    split = choose_split(records, no_drift, TOPICS, REWARD, n_users=2, shares=(0.8, 0.7))
    assert [u.user_id for u in split.users] == ["u4", "u1"]  # most new-topic engagements first
