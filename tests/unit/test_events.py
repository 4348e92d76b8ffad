"""The engagement event contract: each reason, boundaries, round trip, robustness."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beam_pipelines.events import (
    DEFAULT_EVENT_TYPES,
    MAX_CONTEXT_KEY_CHARS,
    MAX_CONTEXT_KEYS,
    MAX_CONTEXT_VALUE_CHARS,
    MAX_FUTURE_MS,
    MAX_ID_CHARS,
    MAX_MESSAGE_BYTES,
    MIN_TIMESTAMP_MS,
    EngagementEvent,
    EventValidationError,
    Reason,
    ValidationConfig,
    parse_event,
)

# 2023-11-14T22:13:20Z, fixed so the tests do not depend on the clock.
NOW_MS = 1_700_000_000_000
DAY_MS = 24 * 3600 * 1000
_DROP = object()

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ROUND_TRIP = settings(FUZZ, max_examples=150)


def _fields(**overrides) -> dict:
    """A valid event as a dict; an override of ``_DROP`` removes the key."""
    fields = {
        "event_id": "e-1",
        "user_id": "u-1",
        "item_id": "i-1",
        "event_type": "view",
        "timestamp": NOW_MS - 1000,
    }
    fields.update(overrides)
    return {k: v for k, v in fields.items() if v is not _DROP}


def _raw(**overrides) -> bytes:
    return json.dumps(_fields(**overrides)).encode()


def _parse(data, **kwargs) -> EngagementEvent:
    return parse_event(data, now_ms=NOW_MS, **kwargs)


def _reason(data) -> Reason:
    with pytest.raises(EventValidationError) as info:
        _parse(data)
    return info.value.reason


# --- one hand-made input per reason -------------------------------------------------

REASON_CASES = [
    (Reason.OVERSIZE, b" " * (MAX_MESSAGE_BYTES + 1)),
    (Reason.NOT_UTF8, b'{"event_id": "\xff\xfe"}'),
    (Reason.NOT_UTF8, '{"event_id": "\ud800"}'),  # lone surrogate in a str message
    (Reason.MALFORMED_JSON, b'{"event_id": "e-1",'),
    (Reason.MALFORMED_JSON, b""),
    (Reason.MALFORMED_JSON, _raw(timestamp=_DROP)[:-1] + b',"timestamp":NaN}'),
    (Reason.NOT_OBJECT, b"[1, 2, 3]"),
    (Reason.NOT_OBJECT, b'"an event"'),
    (Reason.NOT_OBJECT, b"null"),
    (Reason.MISSING_FIELD, _raw(user_id=_DROP)),
    (Reason.MISSING_FIELD, _raw(event_id=None)),
    (Reason.MISSING_FIELD, _raw(event_type=_DROP)),
    (Reason.MISSING_FIELD, _raw(timestamp=_DROP)),
    (Reason.EMPTY_FIELD, _raw(item_id="")),
    (Reason.FIELD_TOO_LONG, _raw(event_id="x" * 129)),
    (Reason.CONTROL_CHARACTERS, _raw(user_id="a\nb")),
    (Reason.CONTROL_CHARACTERS, _raw(item_id="a\x7fb")),
    (Reason.CONTROL_CHARACTERS, _raw(item_id="a\x85b")),  # C1 control (NEL)
    (
        Reason.CONTROL_CHARACTERS,
        _raw(item_id="a\ud800b"),
    ),  # lone surrogate via \u escape
    (Reason.CONTROL_CHARACTERS, _raw(surface="feed\t")),
    (Reason.BAD_TYPE, _raw(user_id=42)),
    (Reason.BAD_TYPE, _raw(watch_ms="1000")),
    (Reason.BAD_TYPE, _raw(watch_ms=1.5)),
    (Reason.BAD_TYPE, _raw(item_duration_ms=0)),
    (Reason.UNKNOWN_FIELD, _raw(price=3)),
    (Reason.UNKNOWN_EVENT_TYPE, _raw(event_type="purchase")),
    (Reason.BAD_TIMESTAMP, _raw(timestamp="yesterday")),
    (Reason.BAD_TIMESTAMP, _raw(timestamp="2023-11-14T10:00:00")),  # no offset
    (Reason.BAD_TIMESTAMP, _raw(timestamp="2023-11-14")),  # no time
    (Reason.TIMESTAMP_OUT_OF_RANGE, _raw(timestamp=0)),
    (Reason.TIMESTAMP_OUT_OF_RANGE, _raw(timestamp="1999-12-31T23:59:59Z")),
    (Reason.NEGATIVE_WATCH_MS, _raw(watch_ms=-1)),
    (Reason.WATCH_EXCEEDS_DURATION, _raw(watch_ms=10_001, item_duration_ms=1_000)),
    (Reason.BAD_CONTEXT, _raw(context={"a": {"b": 1}})),
    (Reason.BAD_CONTEXT, _raw(context=["a"])),
    (Reason.BAD_CONTEXT, _raw(context={"a": None})),
    (Reason.BAD_CONTEXT, _raw(context={"a": "\ud800"})),  # could not be re-encoded
    (Reason.BAD_CONTEXT, _raw(context={"\udfff": 1})),
    (
        Reason.BAD_CONTEXT,
        _raw(context={str(i): i for i in range(MAX_CONTEXT_KEYS + 1)}),
    ),
    (Reason.BAD_CONTEXT, _raw(context={"k" * (MAX_CONTEXT_KEY_CHARS + 1): 1})),
    (Reason.BAD_CONTEXT, _raw(context={"k": "v" * (MAX_CONTEXT_VALUE_CHARS + 1)})),
]


@pytest.mark.parametrize(
    ("reason", "data"),
    REASON_CASES,
    ids=[f"{r.value}-{i}" for i, (r, _) in enumerate(REASON_CASES)],
)
def test_each_reason_from_a_hand_made_input(reason, data):
    with pytest.raises(EventValidationError) as info:
        _parse(data)
    assert info.value.reason is reason
    assert isinstance(info.value, ValueError)
    assert str(info.value).startswith(reason.value)


def test_every_parser_reason_has_a_case():
    decided_by_the_pipeline = {Reason.DUPLICATE, Reason.LATE}
    assert {reason for reason, _ in REASON_CASES} == set(Reason) - decided_by_the_pipeline


def test_a_message_of_another_type_is_bad_type():
    with pytest.raises(EventValidationError) as info:
        _parse(12345)
    assert info.value.reason is Reason.BAD_TYPE


def test_valid_event_with_every_field():
    event = _parse(
        _raw(
            event_type="view",
            watch_ms=1500,
            item_duration_ms=3000,
            surface="home_feed",
            context={"device": "ios", "rating": 4, "score": 0.5, "first": True},
        )
    )
    assert event == EngagementEvent(
        event_id="e-1",
        user_id="u-1",
        item_id="i-1",
        event_type="view",
        timestamp_ms=NOW_MS - 1000,
        watch_ms=1500,
        item_duration_ms=3000,
        surface="home_feed",
        context={"device": "ios", "rating": 4, "score": 0.5, "first": True},
    )


def test_bytearray_memoryview_and_str_inputs_are_accepted():
    raw = _raw()
    expected = _parse(raw)
    assert _parse(bytearray(raw)) == expected
    assert _parse(memoryview(raw)) == expected
    assert _parse(raw.decode()) == expected


def test_configured_event_types_replace_the_default_set():
    config = ValidationConfig(event_types=frozenset({"purchase"}))
    assert _parse(_raw(event_type="purchase"), config=config).event_type == "purchase"
    with pytest.raises(EventValidationError) as info:
        _parse(_raw(event_type="view"), config=config)
    assert info.value.reason is Reason.UNKNOWN_EVENT_TYPE


# --- boundaries --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["event_id", "user_id", "item_id"])
def test_id_of_exactly_128_chars_is_accepted_129_is_not(name):
    assert getattr(_parse(_raw(**{name: "x" * MAX_ID_CHARS})), name) == "x" * 128
    assert _reason(_raw(**{name: "x" * (MAX_ID_CHARS + 1)})) is Reason.FIELD_TOO_LONG


def test_id_length_counts_characters_not_bytes():
    four_byte = "\U0001f600" * MAX_ID_CHARS  # 512 bytes of UTF-8, 128 characters
    assert _parse(_raw(item_id=four_byte)).item_id == four_byte


def _padded(total_bytes: int) -> bytes:
    raw = _raw()
    return raw[:-1] + b" " * (total_bytes - len(raw)) + b"}"


def test_message_of_exactly_64_kib_is_accepted_one_byte_more_is_not():
    assert len(_padded(MAX_MESSAGE_BYTES)) == 65536
    assert _parse(_padded(MAX_MESSAGE_BYTES)).event_id == "e-1"
    assert _reason(_padded(MAX_MESSAGE_BYTES + 1)) is Reason.OVERSIZE


def test_size_of_a_str_message_counts_utf8_bytes():
    raw = _raw()
    text = raw[:-1].decode() + " " * (MAX_MESSAGE_BYTES - len(raw) - 1) + "é}"  # é is 2 bytes
    assert len(text) == MAX_MESSAGE_BYTES
    assert _reason(text) is Reason.OVERSIZE


@pytest.mark.parametrize(
    ("timestamp", "expected_ms"),
    [
        ("2000-01-01T00:00:00Z", MIN_TIMESTAMP_MS),
        ("2000-01-01T00:00:00.000z", MIN_TIMESTAMP_MS),
        ("2000-01-01T01:00:00+01:00", MIN_TIMESTAMP_MS),
        (MIN_TIMESTAMP_MS, MIN_TIMESTAMP_MS),
    ],
)
def test_timestamp_exactly_2000_01_01_is_accepted(timestamp, expected_ms):
    assert _parse(_raw(timestamp=timestamp)).timestamp_ms == expected_ms


@pytest.mark.parametrize(
    "timestamp",
    ["1999-12-31T23:59:59.999Z", "2000-01-01T00:59:59.999+01:00", MIN_TIMESTAMP_MS - 1],
)
def test_timestamp_one_ms_before_2000_is_out_of_range(timestamp):
    assert _reason(_raw(timestamp=timestamp)) is Reason.TIMESTAMP_OUT_OF_RANGE


def test_timestamp_one_day_ahead_is_accepted_one_ms_more_is_not():
    assert MAX_FUTURE_MS == DAY_MS
    assert _parse(_raw(timestamp=NOW_MS + DAY_MS)).timestamp_ms == NOW_MS + DAY_MS
    assert _reason(_raw(timestamp=NOW_MS + DAY_MS + 1)) is Reason.TIMESTAMP_OUT_OF_RANGE


@pytest.mark.parametrize(
    ("timestamp", "expected_ms"),
    [
        ("2023-11-14T22:13:20Z", NOW_MS),
        ("2023-11-14T22:13:20.123Z", NOW_MS + 123),
        ("2023-11-14T22:13:20.5Z", NOW_MS + 500),
        ("2023-11-15T00:13:20.250+02:00", NOW_MS + 250),
        ("2023-11-14T17:43:20-04:30", NOW_MS),
        ("2023-11-14t22:13:20z", NOW_MS),
        (NOW_MS, NOW_MS),
        (1_700_000_000_000.0, NOW_MS),
    ],
)
def test_rfc3339_and_epoch_ms_timestamps(timestamp, expected_ms):
    event = _parse(_raw(timestamp=timestamp))
    assert event.timestamp_ms == expected_ms
    assert type(event.timestamp_ms) is int


@pytest.mark.parametrize(
    "literal",
    [
        b"true",
        b"false",
        b"null",
        b'"NaN"',
        b'"Infinity"',
        b"1e400",
        b"-1e400",
        b'""',
        b"[]",
        b"{}",
    ],
)
def test_timestamp_of_a_non_time_value_is_bad_timestamp(literal):
    raw = _raw(timestamp=_DROP)[:-1] + b',"timestamp":' + literal + b"}"
    assert _reason(raw) is Reason.BAD_TIMESTAMP


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity"])
def test_non_standard_json_constants_are_malformed(literal):
    raw = _raw(timestamp=_DROP)[:-1] + b',"timestamp":' + literal + b"}"
    assert _reason(raw) is Reason.MALFORMED_JSON


def test_watch_of_exactly_ten_times_the_duration_is_accepted_more_is_not():
    assert _parse(_raw(watch_ms=10_000, item_duration_ms=1_000)).watch_ms == 10_000
    assert _reason(_raw(watch_ms=10_001, item_duration_ms=1_000)) is Reason.WATCH_EXCEEDS_DURATION


def test_watch_zero_and_watch_without_duration_are_accepted():
    assert _parse(_raw(watch_ms=0, item_duration_ms=1)).watch_ms == 0
    assert _parse(_raw(watch_ms=10**9)).item_duration_ms is None


def test_whole_float_watch_ms_becomes_an_int():
    event = _parse(_raw(watch_ms=1500.0, item_duration_ms=3000.0))
    assert (event.watch_ms, event.item_duration_ms) == (1500, 3000)
    assert type(event.watch_ms) is int


def test_deeply_nested_json_is_malformed_not_a_crash():
    assert _reason(b"[" * 100_000 + b"]" * 100_000) in {
        Reason.OVERSIZE,
        Reason.MALFORMED_JSON,
    }
    assert _reason(b"[" * 30_000 + b"]" * 30_000) is Reason.MALFORMED_JSON


# --- round trip --------------------------------------------------------------------

_ID_CHARS = st.characters(exclude_categories=("Cc", "Cs"), exclude_characters="\x7f")
ids = st.text(_ID_CHARS, min_size=1, max_size=MAX_ID_CHARS).filter(
    lambda s: not any(127 <= ord(c) < 160 for c in s)
)
context_values = st.one_of(
    st.text(max_size=MAX_CONTEXT_VALUE_CHARS),
    st.integers(min_value=-(2**63), max_value=2**63),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
)


@st.composite
def valid_events(draw) -> EngagementEvent:
    duration = draw(st.none() | st.integers(1, 10**9))
    if duration is None:
        watch = draw(st.none() | st.integers(0, 10**12))
    else:
        watch = draw(st.none() | st.integers(0, 10 * duration))
    return EngagementEvent(
        event_id=draw(ids),
        user_id=draw(ids),
        item_id=draw(ids),
        event_type=draw(st.sampled_from(sorted(DEFAULT_EVENT_TYPES))),
        timestamp_ms=draw(st.integers(MIN_TIMESTAMP_MS, NOW_MS + DAY_MS)),
        watch_ms=watch,
        item_duration_ms=duration,
        surface=draw(st.none() | ids),
        context=draw(
            st.none()
            | st.dictionaries(
                st.text(max_size=MAX_CONTEXT_KEY_CHARS),
                context_values,
                max_size=MAX_CONTEXT_KEYS,
            )
        ),
    )


@ROUND_TRIP
@given(valid_events())
def test_to_json_then_parse_gives_an_equal_event(event):
    data = event.to_json()
    assert isinstance(data, bytes)
    assert _parse(data) == event
    assert _parse(data.decode()) == event


# --- robustness: any input → an event or EventValidationError, nothing else --------

# Lone surrogates, controls and odd separators are rare in st.characters(); mix them in.
_ODD_CHARS = st.one_of(
    st.integers(0xD800, 0xDFFF).map(chr),
    st.characters(categories=["Cc"]),
    st.sampled_from("\u2028\ufeff\U0001f600"),
)
any_text = st.text(st.characters() | _ODD_CHARS)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(),  # NaN and ±inf serialize to non-standard constants
    any_text,
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


EDGE_TIMESTAMPS = [
    "2023-11-14T22:13:20Z",
    "2023-11-14T22:13:20.5+01:00",
    "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59-23:59",
    "2023-02-30T00:00:00Z",
    "2023-11-14T24:00:00Z",
    "2023-11-14T22:13:60Z",
]


def _timestamps():
    return st.one_of(
        st.integers(MIN_TIMESTAMP_MS - 10, NOW_MS + DAY_MS + 10),
        st.floats(MIN_TIMESTAMP_MS, NOW_MS + DAY_MS),
        st.sampled_from(EDGE_TIMESTAMPS),
    )


_KNOWN = {
    "event_id": ids,
    "user_id": ids,
    "item_id": ids,
    "event_type": st.sampled_from(sorted(DEFAULT_EVENT_TYPES)),
    "timestamp": _timestamps(),
    "watch_ms": st.integers(-5, 10**6),
    "item_duration_ms": st.integers(-5, 10**6),
    "surface": ids,
    "context": st.dictionaries(any_text, context_values | any_text, max_size=4),
}
_REQUIRED = ("event_id", "user_id", "item_id", "event_type", "timestamp")


@st.composite
def known_key_dicts(draw) -> dict:
    """Mostly valid events with a few known keys dropped or set to any JSON value.

    Starting from valid values makes the later checks (watch, context, re-encoding)
    reachable; an all-random dict would almost always stop at the first id.
    """
    optional = draw(st.sets(st.sampled_from(sorted(set(_KNOWN) - set(_REQUIRED)))))
    fields = {name: draw(_KNOWN[name]) for name in (*_REQUIRED, *sorted(optional))}
    for name in draw(st.sets(st.sampled_from(sorted(_KNOWN)), max_size=3)):
        if draw(st.booleans()):
            fields[name] = draw(json_values)
        else:
            fields.pop(name, None)
    return fields


def _accepts_or_rejects(data) -> None:
    try:
        event = _parse(data)
    except EventValidationError as err:
        assert isinstance(err.reason, Reason)
        return
    assert isinstance(event, EngagementEvent)
    assert _parse(event.to_json()) == event  # whatever is accepted can be re-emitted


@FUZZ
@given(st.binary(max_size=512))
def test_arbitrary_bytes_never_crash(data):
    _accepts_or_rejects(data)


@ROUND_TRIP
@given(valid_events(), st.integers(0, 10**6), st.binary(max_size=8), st.integers(0, 8))
def test_valid_messages_with_bytes_spliced_in_never_crash(event, at, junk, cut):
    data = event.to_json()
    at %= len(data) + 1
    _accepts_or_rejects(data[:at] + junk + data[at + cut :])


@FUZZ
@given(st.text(st.characters() | _ODD_CHARS, max_size=256))
def test_arbitrary_text_never_crashes(text):
    _accepts_or_rejects(text)


@FUZZ
@given(json_values)
def test_arbitrary_json_values_never_crash(value):
    _accepts_or_rejects(json.dumps(value).encode())


@FUZZ
@given(known_key_dicts(), st.booleans())
def test_dicts_with_known_keys_of_any_value_never_crash(fields, ascii_only):
    text = json.dumps(fields, ensure_ascii=ascii_only)
    data = text.encode("utf-8", errors="surrogatepass")
    _accepts_or_rejects(data)
    _accepts_or_rejects(text)
