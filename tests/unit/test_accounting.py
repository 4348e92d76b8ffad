"""The accounting invariant: every published message applied once or dead-lettered
once, whichever a delivery order decides; both or neither is caught."""

from __future__ import annotations

import json

from beam_pipelines.accounting import account
from beam_pipelines.transforms.dead_letters import DeadLetter

T0 = 1_767_225_600_000


def event(event_id: str, user_id: str, ts: int) -> bytes:
    obj = {"event_id": event_id, "user_id": user_id, "item_id": "i1", "event_type": "like"}
    return json.dumps({**obj, "timestamp": ts}).encode()


E1 = event("e1", "u1", T0 + 7_200_000)
E2_LATE = event("e2", "u1", T0)  # two hours behind e1: late if it comes after e1
BAD = b"{not json"
MESSAGES = [E1, E1, E2_LATE, BAD]  # e1 redelivered once by the producer


def letter(reason: str, data: bytes, event_id: str | None = None) -> DeadLetter:
    return DeadLetter(reason, "", data, event_id=event_id)


DUP = letter("duplicate", E1, "e1")
PARSE = letter("malformed_json", BAD)


def test_late_event_dead_lettered_holds():
    result = account(MESSAGES, [DUP, letter("late", E2_LATE, "e2"), PARSE], {"u1": 1})
    assert result.holds, result
    assert (result.published, result.applied, result.dead_lettered) == (4, 1, 3)
    assert result.dead_lettered_by_reason == {"duplicate": 1, "late": 1, "malformed_json": 1}


def test_late_event_delivered_first_and_applied_holds_too():
    result = account(MESSAGES, [DUP, PARSE], {"u1": 2})
    assert result.holds, result
    assert (result.published, result.applied, result.dead_lettered) == (4, 2, 2)
    assert "published 4 = applied 2 + dead-lettered 2" in result.line()


def test_applied_and_dead_lettered_is_counted_twice():
    result = account(MESSAGES, [DUP, letter("late", E2_LATE, "e2"), PARSE], {"u1": 2})
    assert not result.holds and result.counted_twice == 1 and result.unaccounted == 0


def test_neither_applied_nor_dead_lettered_is_unaccounted():
    assert account(MESSAGES, [DUP, PARSE], {"u1": 1}).unaccounted == 1
    assert account(MESSAGES, [DUP], {"u1": 2}).unaccounted == 1  # the bad line's letter
    assert account(MESSAGES, [PARSE], {"u1": 2}).unaccounted == 1  # e1's second copy


def test_a_duplicate_letter_of_an_event_never_applied_is_caught():
    result = account([E2_LATE], [letter("duplicate", E2_LATE, "e2")], {})
    assert not result.holds and result.unaccounted == 1


def test_redelivery_by_the_bus_is_reported_not_an_error():
    result = account(MESSAGES, [DUP, DUP, PARSE, PARSE], {"u1": 2})
    assert result.holds and result.redelivered == 2
    assert "2 bus redeliveries" in result.line()
