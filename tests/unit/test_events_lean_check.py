"""parse_event's lean check ≡ its full checks: the same event or the same reason and
detail per line."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beam_pipelines.events import (
    DEFAULT_VALIDATION,
    EventValidationError,
    ValidationConfig,
    _checked_event,
    parse_event,
)
from rtp.simulator.config import DirtyKind, SimulatorConfig
from rtp.simulator.simulation import simulate
from tests.unit.test_events import NOW_MS, json_values, known_key_dicts, valid_events

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _outcome(parse, line, config):
    try:
        return parse(line, config, NOW_MS)
    except EventValidationError as err:
        return err.reason, err.detail


def _assert_same(lines, config=DEFAULT_VALIDATION):
    got = [_outcome(parse_event, line, config) for line in lines]
    assert got == [_outcome(_checked_event, line, config) for line in lines]


@FUZZ
@given(st.lists(known_key_dicts(), max_size=5), st.booleans())
def test_dicts_with_known_keys_get_the_same_decision(dicts, ascii_only):
    lines = [json.dumps(d, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass") for d in dicts]
    _assert_same(lines)


@FUZZ
@given(st.lists(valid_events(), max_size=5))
def test_valid_events_parse_to_the_same_event(events):
    _assert_same([e.to_json() for e in events])


@FUZZ
@given(st.lists(st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode())))
def test_arbitrary_lines_get_the_same_decision(lines):
    _assert_same(lines)


def test_edge_cases_defer_to_the_full_parser():
    base = b'{"event_id":"e","user_id":"u","item_id":"i","event_type":"like","timestamp":%s%s}'
    cases = [
        (b"1700000000000", b',"context":{"n":123456789012345678901234}'),  # big int
        (b"1700000000000", b',"context":{"n":1e300}'),
        (b"1700000000000.5", b""),
        (b'"2023-11-14T22:13:20Z"', b""),
        (b'"2023-11-14T22:13:20"', b""),
        (b"1700000000000", b',"surface":"a\\u0085b"'),  # C1 control via escape
        (b"1700000000000", b',"surface":"a\xc2\xa0b"'),  # NBSP: valid, not printable
        (b"1700000000000", b',"event_id":"x","event_id":"\\u0001"'),  # duplicate key
        (b"true", b""),
        (b"1700000000000", b',"watch_ms":5.0,"item_duration_ms":4'),
        (b"1700000000000", b',"watch_ms":50,"item_duration_ms":4'),
    ]
    _assert_same([base % case for case in cases])
    _assert_same(["a str line", bytearray(b"{}")])


def test_simulator_lines_with_every_dirty_kind():
    config = SimulatorConfig(n_events=400, seed=3, dirty_fraction=0.3, dirty_kinds=tuple(DirtyKind))
    lines = [record.data for record in simulate(config)]
    limits = ValidationConfig(min_timestamp_ms=0, max_future_ms=10**15)
    _assert_same(lines, limits)
