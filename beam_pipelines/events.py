"""The engagement event contract: bytes (Pub/Sub data) in, a typed event out.

``parse_event`` never raises anything but ``EventValidationError``; its
``reason`` is one of the ``Reason`` codes, stable strings that dead letters,
metrics and the simulator's labels share. Times are epoch milliseconds (UTC).
Streaming and the backfill both parse each message with it.

Nearly every message is plainly valid, so ``parse_event`` first tries a lean
check (orjson, type, length and printability tests) that accepts a message only
when it is plainly a valid event; anything else goes through the full checks,
which stay the definition of the contract and give the reason. So the lean check
can only ever accept what the full checks accept, with the same event. Where
orjson and the standard decoder could differ it defers too: orjson rejects lone
surrogates, NaN and non-UTF-8 (all rejected by the contract as well) and reads
integers beyond 64 bits as floats (so a large float falls back).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import math
import re
import time
from typing import Any

import orjson

MAX_MESSAGE_BYTES = 64 * 1024
MAX_ID_CHARS = 128
MAX_CONTEXT_KEYS = 16
MAX_CONTEXT_KEY_CHARS = 64
MAX_CONTEXT_VALUE_CHARS = 256
MIN_TIMESTAMP_MS = 946_684_800_000  # 2000-01-01T00:00:00Z
MAX_FUTURE_MS = 24 * 3600 * 1000
MAX_WATCH_TO_DURATION = 10

DEFAULT_EVENT_TYPES = frozenset(
    {"impression", "view", "like", "share", "follow", "skip", "hide", "stream", "save", "rating"}
)


class Reason(str, enum.Enum):
    """Why an input became a dead letter. Values are stable identifiers."""

    OVERSIZE = "oversize"
    NOT_UTF8 = "not_utf8"
    MALFORMED_JSON = "malformed_json"
    NOT_OBJECT = "not_object"
    MISSING_FIELD = "missing_field"
    EMPTY_FIELD = "empty_field"
    FIELD_TOO_LONG = "field_too_long"
    CONTROL_CHARACTERS = "control_characters"
    BAD_TYPE = "bad_type"
    UNKNOWN_FIELD = "unknown_field"
    UNKNOWN_EVENT_TYPE = "unknown_event_type"
    BAD_TIMESTAMP = "bad_timestamp"
    TIMESTAMP_OUT_OF_RANGE = "timestamp_out_of_range"
    NEGATIVE_WATCH_MS = "negative_watch_ms"
    WATCH_EXCEEDS_DURATION = "watch_exceeds_duration"
    BAD_CONTEXT = "bad_context"
    # Decided by the pipeline, not by the parser:
    DUPLICATE = "duplicate"
    LATE = "late"


class EventValidationError(ValueError):
    """An input that is not a valid engagement event; ``reason`` says why."""

    def __init__(self, reason: Reason, detail: str):
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclasses.dataclass(frozen=True)
class ValidationConfig:
    """Limits of the contract. Times in epoch milliseconds."""

    event_types: frozenset[str] = DEFAULT_EVENT_TYPES
    min_timestamp_ms: int = MIN_TIMESTAMP_MS
    max_future_ms: int = MAX_FUTURE_MS
    max_message_bytes: int = MAX_MESSAGE_BYTES


DEFAULT_VALIDATION = ValidationConfig()


@dataclasses.dataclass(frozen=True, slots=True)
class EngagementEvent:
    """One engagement. ``timestamp_ms`` is the event time (epoch ms, UTC)."""

    event_id: str
    user_id: str
    item_id: str
    event_type: str
    timestamp_ms: int
    watch_ms: int | None = None
    item_duration_ms: int | None = None
    surface: str | None = None
    context: dict[str, str | int | float | bool] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "event_id": self.event_id,
            "user_id": self.user_id,
            "item_id": self.item_id,
            "event_type": self.event_type,
            "timestamp": self.timestamp_ms,
        }
        for name in ("watch_ms", "item_duration_ms", "surface", "context"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False).encode()


# C0 and C1 control characters and lone surrogates.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_REQUIRED_IDS = ("event_id", "user_id", "item_id")
_KNOWN_FIELDS = frozenset(
    (
        *_REQUIRED_IDS,
        "event_type",
        "timestamp",
        "watch_ms",
        "item_duration_ms",
        "surface",
        "context",
    )
)


def parse_event(
    data: bytes | bytearray | memoryview | str,
    config: ValidationConfig = DEFAULT_VALIDATION,
    now_ms: int | None = None,
) -> EngagementEvent:
    """Parse and validate one event; raise ``EventValidationError`` otherwise.
    ``now_ms``: epoch ms bounding future timestamps (default the clock)."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    if type(data) is bytes:
        event = _plain_event(data, config, now + config.max_future_ms)
        if event is not None:
            return event
    return _checked_event(data, config, now)


def _checked_event(
    data: bytes | bytearray | memoryview | str, config: ValidationConfig, now: int
) -> EngagementEvent:
    """The full checks, in the contract's order: the event or the first reason."""
    obj = _decode(data, config.max_message_bytes)
    unknown = set(obj) - _KNOWN_FIELDS
    if unknown:
        raise EventValidationError(Reason.UNKNOWN_FIELD, f"unknown field(s) {sorted(unknown)}")
    ids = {name: _check_id(obj, name) for name in _REQUIRED_IDS}
    event_type = _check_id(obj, "event_type")
    if event_type not in config.event_types:
        raise EventValidationError(Reason.UNKNOWN_EVENT_TYPE, f"event_type {event_type!r}")
    if "timestamp" not in obj:
        raise EventValidationError(Reason.MISSING_FIELD, "timestamp")
    ts = parse_timestamp_ms(obj["timestamp"])
    if ts < config.min_timestamp_ms or ts > now + config.max_future_ms:
        raise EventValidationError(Reason.TIMESTAMP_OUT_OF_RANGE, f"timestamp {ts} ms")
    watch_ms = _optional_int(obj, "watch_ms")
    duration_ms = _optional_int(obj, "item_duration_ms")
    _check_watch(watch_ms, duration_ms)
    surface = obj.get("surface")
    if surface is not None:
        surface = _check_id(obj, "surface")
    return EngagementEvent(
        event_type=event_type,
        timestamp_ms=ts,
        watch_ms=watch_ms,
        item_duration_ms=duration_ms,
        surface=surface,
        context=_check_context(obj.get("context")),
        **ids,
    )


_MAX_MS = 10**13
_BIG_FLOAT = 2.0**63


def _plain_event(raw: bytes, config: ValidationConfig, latest_ms: int) -> EngagementEvent | None:
    """The event if ``raw`` is plainly valid, else None (the full checks decide)."""
    if len(raw) > config.max_message_bytes:
        return None
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if type(obj) is not dict or not _KNOWN_FIELDS.issuperset(obj):
        return None
    get = obj.get
    event_id, user_id, item_id = get("event_id"), get("user_id"), get("item_id")
    event_type = get("event_type")
    if not (
        _plain_id(event_id)
        and _plain_id(user_id)
        and _plain_id(item_id)
        and _plain_id(event_type)
        and event_type in config.event_types
    ):
        return None
    ts = get("timestamp")
    if type(ts) is not int:
        if type(ts) is str:
            try:
                ts = parse_timestamp_ms(ts)
            except EventValidationError:
                return None
        elif type(ts) is float and _plain_float(ts):
            ts = int(ts)
        else:
            return None
    if ts < config.min_timestamp_ms or ts > latest_ms:
        return None
    watch, duration = get("watch_ms"), get("item_duration_ms")
    if watch is not None and (type(watch) is not int or not 0 <= watch <= _MAX_MS):
        return None
    if duration is not None and (
        type(duration) is not int
        or not 0 < duration <= _MAX_MS
        or (watch or 0) > MAX_WATCH_TO_DURATION * duration
    ):
        return None
    surface = get("surface")
    if surface is not None and not _plain_id(surface):
        return None
    context = get("context")
    if context is not None and not _plain_context(context):
        return None
    # orjson's dict is already a fresh one: no copy as the full checks make.
    return EngagementEvent(
        event_id, user_id, item_id, event_type, ts, watch, duration, surface, context
    )


def _plain_id(value) -> bool:
    # Not printable: control characters (the contract rejects them), and also some
    # valid ones (NBSP, ...), which the full checks then accept.
    return type(value) is str and 0 < len(value) <= MAX_ID_CHARS and value.isprintable()


def _plain_float(value: float) -> bool:
    # orjson reads an integer literal beyond 64 bits as a float, json as an int.
    return math.isfinite(value) and abs(value) < _BIG_FLOAT


def _plain_context(context) -> bool:
    if type(context) is not dict or len(context) > MAX_CONTEXT_KEYS:
        return False
    for key, value in context.items():
        if len(key) > MAX_CONTEXT_KEY_CHARS:
            return False
        kind = type(value)
        if kind is str:
            if len(value) > MAX_CONTEXT_VALUE_CHARS:
                return False
        elif kind is float:
            if not _plain_float(value):
                return False
        elif kind is not int and kind is not bool:
            return False
    return True


def _decode(data: bytes | bytearray | memoryview | str, max_bytes: int) -> dict[str, Any]:
    if type(data) is bytes:  # the common case, without a copy
        raw = data
    elif isinstance(data, str):
        raw = data.encode("utf-8", errors="surrogatepass")
    elif isinstance(data, (bytes, bytearray, memoryview)):
        raw = bytes(data)
    else:
        raise EventValidationError(Reason.BAD_TYPE, f"message is {type(data).__name__}")
    if len(raw) > max_bytes:
        raise EventValidationError(Reason.OVERSIZE, f"{len(raw)} bytes > {max_bytes}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise EventValidationError(Reason.NOT_UTF8, str(err)) from None
    try:
        obj = _JSON.decode(text)
    except (ValueError, RecursionError) as err:
        raise EventValidationError(Reason.MALFORMED_JSON, str(err)[:200]) from None
    if not isinstance(obj, dict):
        raise EventValidationError(Reason.NOT_OBJECT, f"JSON {type(obj).__name__}")
    return obj


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


# One decoder for every message (json.loads with options builds one per call).
_JSON = json.JSONDecoder(parse_constant=_reject_constant)


def _check_id(obj: dict[str, Any], name: str) -> str:
    if name not in obj or obj[name] is None:
        raise EventValidationError(Reason.MISSING_FIELD, name)
    value = obj[name]
    if not isinstance(value, str):
        raise EventValidationError(Reason.BAD_TYPE, f"{name} must be a string")
    if not value:
        raise EventValidationError(Reason.EMPTY_FIELD, name)
    if len(value) > MAX_ID_CHARS:
        raise EventValidationError(Reason.FIELD_TOO_LONG, f"{name} has {len(value)} chars")
    if _CONTROL.search(value):
        raise EventValidationError(Reason.CONTROL_CHARACTERS, name)
    return value


def parse_timestamp_ms(value: Any) -> int:
    """Epoch milliseconds from an RFC 3339 string or an epoch-ms number."""
    if isinstance(value, bool):
        raise EventValidationError(Reason.BAD_TIMESTAMP, "boolean timestamp")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise EventValidationError(Reason.BAD_TIMESTAMP, "non-finite timestamp")
        return int(value)
    if isinstance(value, str):
        return _parse_rfc3339(value)
    raise EventValidationError(Reason.BAD_TIMESTAMP, f"timestamp of type {type(value).__name__}")


def _parse_rfc3339(text: str) -> int:
    candidate = text.strip()
    if candidate.endswith(("Z", "z")):
        candidate = candidate[:-1] + "+00:00"
    try:
        parsed = dt.datetime.fromisoformat(candidate)
    except ValueError:
        raise EventValidationError(Reason.BAD_TIMESTAMP, f"not RFC 3339: {text[:64]!r}") from None
    if parsed.tzinfo is None or "T" not in candidate.upper():
        raise EventValidationError(
            Reason.BAD_TIMESTAMP, f"RFC 3339 needs date, time and offset: {text[:64]!r}"
        )
    try:
        return round(parsed.timestamp() * 1000)
    except (OverflowError, OSError, ValueError):
        raise EventValidationError(Reason.BAD_TIMESTAMP, f"out of range: {text[:64]!r}") from None


def _optional_int(obj: dict[str, Any], name: str) -> int | None:
    value = obj.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise EventValidationError(Reason.BAD_TYPE, f"{name} must be a number")
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        raise EventValidationError(Reason.BAD_TYPE, f"{name} must be whole milliseconds")
    if abs(value) > 10**13:
        raise EventValidationError(Reason.BAD_TYPE, f"{name} out of range")
    return int(value)


def _check_watch(watch_ms: int | None, duration_ms: int | None) -> None:
    if watch_ms is not None and watch_ms < 0:
        raise EventValidationError(Reason.NEGATIVE_WATCH_MS, f"watch_ms {watch_ms}")
    if duration_ms is not None and duration_ms <= 0:
        raise EventValidationError(Reason.BAD_TYPE, f"item_duration_ms {duration_ms} must be > 0")
    too_long = duration_ms is not None and (watch_ms or 0) > MAX_WATCH_TO_DURATION * duration_ms
    if too_long:
        raise EventValidationError(
            Reason.WATCH_EXCEEDS_DURATION,
            f"watch_ms {watch_ms} > {MAX_WATCH_TO_DURATION} x duration {duration_ms}",
        )


def _check_context(context: Any) -> dict[str, str | int | float | bool] | None:
    if context is None:
        return None
    if not isinstance(context, dict):
        raise EventValidationError(Reason.BAD_CONTEXT, "context must be an object")
    if len(context) > MAX_CONTEXT_KEYS:
        raise EventValidationError(Reason.BAD_CONTEXT, f"{len(context)} keys > {MAX_CONTEXT_KEYS}")
    for key, value in context.items():
        if len(key) > MAX_CONTEXT_KEY_CHARS:
            raise EventValidationError(Reason.BAD_CONTEXT, f"key of {len(key)} chars")
        if _has_surrogate(key):
            raise EventValidationError(Reason.BAD_CONTEXT, "key with a lone surrogate")
        if isinstance(value, str):
            if len(value) > MAX_CONTEXT_VALUE_CHARS:
                raise EventValidationError(Reason.BAD_CONTEXT, f"value of {key!r} too long")
            if _has_surrogate(value):
                # A "\ud800" escape parses but could never be re-encoded as UTF-8.
                raise EventValidationError(
                    Reason.BAD_CONTEXT, f"value of {key!r} has a lone surrogate"
                )
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise EventValidationError(Reason.BAD_CONTEXT, f"value of {key!r} not finite")
        elif not isinstance(value, (int, bool)):
            raise EventValidationError(Reason.BAD_CONTEXT, f"value of {key!r} is not flat")
    return dict(context)


_SURROGATE = re.compile("[\ud800-\udfff]")


def _has_surrogate(text: str) -> bool:
    return _SURROGATE.search(text) is not None
