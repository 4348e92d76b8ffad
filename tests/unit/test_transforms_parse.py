"""ParseEvents: valid events pass, every parser reason becomes a dead letter that
keeps the raw payload bytes (streaming input and sequenced bounded-log input)."""

from __future__ import annotations

import json

import apache_beam as beam
import pytest

from beam_pipelines.events import DEFAULT_VALIDATION, Reason
from beam_pipelines.transforms.dead_letters import DEAD_LETTER, DeadLetter
from beam_pipelines.transforms.parse import EVENTS, ParseEvents
from tests.helpers.events import T0_MS, event, event_json
from tests.helpers.pipelines import assert_outputs, batch_pipeline, counters


def _obj(**changes) -> bytes:
    record = json.loads(event_json("bad", "u1", "i1", "view", T0_MS))
    record.update(changes)
    return json.dumps({k: v for k, v in record.items() if v is not None}).encode()


# One payload per reason the parser can give; the bytes must survive as they are.
INVALID: dict[Reason, bytes] = {
    Reason.OVERSIZE: _obj(context={"blob": "x" * (DEFAULT_VALIDATION.max_message_bytes + 1)}),
    Reason.NOT_UTF8: b'{"event_id":"\xff\xfe"}',
    Reason.MALFORMED_JSON: b'{"event_id": "e1", "user_id"',
    Reason.NOT_OBJECT: b'[{"event_id": "e1"}]',
    Reason.MISSING_FIELD: _obj(user_id=None),
    Reason.EMPTY_FIELD: _obj(item_id=""),
    Reason.FIELD_TOO_LONG: _obj(user_id="u" * 129),
    Reason.CONTROL_CHARACTERS: _obj(user_id="u\x07ser"),
    Reason.BAD_TYPE: _obj(item_id=42),
    Reason.UNKNOWN_FIELD: _obj(price=3),
    Reason.UNKNOWN_EVENT_TYPE: _obj(event_type="purchase"),
    Reason.BAD_TIMESTAMP: _obj(timestamp="yesterday"),
    Reason.TIMESTAMP_OUT_OF_RANGE: _obj(timestamp=631_152_000_000),  # 1990
    Reason.NEGATIVE_WATCH_MS: _obj(watch_ms=-5, item_duration_ms=10_000),
    Reason.WATCH_EXCEEDS_DURATION: _obj(watch_ms=200_000, item_duration_ms=10_000),
    Reason.BAD_CONTEXT: _obj(context={"nested": {"a": 1}}),
}
PIPELINE_REASONS = {Reason.DUPLICATE, Reason.LATE}
VALID = [
    event_json("e1", "u1", "i1", "like", T0_MS),
    event_json("e2", "u2", "i2", "view", T0_MS + 1, watch_ms=3000, item_duration_ms=6000),
]


def test_every_parser_reason_has_a_payload_here():
    assert set(INVALID) == set(Reason) - PIPELINE_REASONS


def _letter_key(letter: DeadLetter):
    assert isinstance(letter.payload, bytes) and letter.failed_at_ms > 0 and letter.detail
    return letter.reason, letter.payload, letter.event_id, letter.event_time_ms


def test_valid_events_pass_and_every_invalid_one_is_a_dead_letter_with_its_bytes():
    messages = [*VALID, *INVALID.values()]
    expected_letters = [(r.value, data, None, None) for r, data in INVALID.items()]
    expected_events = [
        event("e1", "u1", "i1", "like", T0_MS),
        event("e2", "u2", "i2", "view", T0_MS + 1, watch_ms=3000, item_duration_ms=6000),
    ]

    p = batch_pipeline()
    raw = p | "Messages" >> beam.Create(messages)
    parsed = raw | "Parse" >> ParseEvents(DEFAULT_VALIDATION)
    # Bounded logs: (seq, bytes) in, (seq, event) out; dead letters alike.
    sequenced = p | "Sequenced" >> beam.Create(list(enumerate(messages)))
    parsed_seq = sequenced | "ParseSeq" >> ParseEvents(DEFAULT_VALIDATION, sequenced=True)
    assert_outputs(
        {
            "events": (parsed[EVENTS], expected_events),
            "letters": (parsed[DEAD_LETTER] | "Key" >> beam.Map(_letter_key), expected_letters),
            "seq_events": (parsed_seq[EVENTS], list(enumerate(expected_events))),
            "seq_letters": (
                parsed_seq[DEAD_LETTER] | "KeySeq" >> beam.Map(_letter_key),
                expected_letters,
            ),
        }
    )

    result = p.run()
    result.wait_until_finish()
    totals = counters(result)
    assert totals["events_valid"] == 2 * len(VALID)
    assert totals["events_invalid"] == 2 * len(INVALID)


def test_dead_letters_round_trip_through_json_with_any_bytes():
    for data in INVALID.values():
        letter = DeadLetter.now("r", "d", data, event_id="e", event_time_ms=5)
        assert DeadLetter.from_json(letter.to_json()) == letter
    with pytest.raises(json.JSONDecodeError):
        DeadLetter.from_json(b"not json")
