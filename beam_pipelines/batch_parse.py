"""Parse many event lines at once, with exactly the decisions of ``parse_event``.

The backfill reads millions of lines that are almost all clean. A lean check
(orjson, type, length and printability tests) accepts a line only when it is
plainly a valid event; anything else goes to ``parse_event``, which stays the one
definition of the contract and gives the reason. So the fast path can only ever
accept what ``parse_event`` accepts, with the same event. Where orjson and the
standard decoder could differ it defers too: orjson rejects lone surrogates,
NaN and non-UTF-8 (all rejected by the contract as well) and reads integers
beyond 64 bits as floats (so a large float falls back).
"""

from __future__ import annotations

import math
import time
from typing import Any, NamedTuple

import orjson

from beam_pipelines.events import (
    MAX_CONTEXT_KEY_CHARS,
    MAX_CONTEXT_KEYS,
    MAX_CONTEXT_VALUE_CHARS,
    MAX_ID_CHARS,
    MAX_WATCH_TO_DURATION,
    EngagementEvent,
    EventValidationError,
    ValidationConfig,
    parse_event,
    parse_timestamp_ms,
)

_KNOWN = frozenset(
    (
        "event_id",
        "user_id",
        "item_id",
        "event_type",
        "timestamp",
        "watch_ms",
        "item_duration_ms",
        "surface",
        "context",
    )
)
_MAX_MS = 10**13
_BIG_FLOAT = 2.0**63


class EventFields(NamedTuple):
    """An ``EngagementEvent``'s fields, same names and order, without its (costly)
    frozen-dataclass construction: what the reward function reads."""

    event_id: str
    user_id: str
    item_id: str
    event_type: str
    timestamp_ms: int
    watch_ms: int | None = None
    item_duration_ms: int | None = None
    surface: str | None = None
    context: dict[str, Any] | None = None

    def to_event(self) -> EngagementEvent:
        return EngagementEvent(*self)


def parse_lines(
    lines: list[bytes], config: ValidationConfig, now_ms: int | None = None
) -> list[EventFields | EventValidationError]:
    """One event or validation error per line, as ``parse_event(line, config, now_ms)``
    would give (``now_ms``: epoch ms bounding future timestamps, default the clock)."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    latest = now + config.max_future_ms
    out: list[EventFields | EventValidationError] = []
    for line in lines:
        fields = _fast(line, config, latest) if type(line) is bytes else None
        if fields is None:
            try:
                event = parse_event(line, config, now)
            except EventValidationError as err:
                out.append(err)
                continue
            fields = EventFields(
                event.event_id,
                event.user_id,
                event.item_id,
                event.event_type,
                event.timestamp_ms,
                event.watch_ms,
                event.item_duration_ms,
                event.surface,
                event.context,
            )
        out.append(fields)
    return out


def _fast(raw: bytes, config: ValidationConfig, latest_ms: int) -> EventFields | None:
    """The event if ``raw`` is plainly valid, else None (let ``parse_event`` decide)."""
    if len(raw) > config.max_message_bytes:
        return None
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if type(obj) is not dict or not _KNOWN.issuperset(obj):
        return None
    get = obj.get
    ids = (get("event_id"), get("user_id"), get("item_id"), get("event_type"))
    for value in ids:
        if not _plain_id(value):
            return None
    if ids[3] not in config.event_types:
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
    if not (_plain_ms(watch) and _plain_ms(duration)):
        return None
    if watch is not None and watch < 0:
        return None
    if duration is not None and (duration <= 0 or (watch or 0) > MAX_WATCH_TO_DURATION * duration):
        return None
    surface = get("surface")
    if surface is not None and not _plain_id(surface):
        return None
    context = get("context")
    if context is not None:
        if not _plain_context(context):
            return None
        context = dict(context)
    return EventFields(ids[0], ids[1], ids[2], ids[3], ts, watch, duration, surface, context)


def _plain_id(value) -> bool:
    # Not printable: control characters (the contract rejects them), and also some
    # valid characters (NBSP, ...), which the full parser then accepts.
    return type(value) is str and 0 < len(value) <= MAX_ID_CHARS and value.isprintable()


def _plain_float(value: float) -> bool:
    # orjson reads an integer literal beyond 64 bits as a float, json as an int.
    return math.isfinite(value) and abs(value) < _BIG_FLOAT


def _plain_ms(value) -> bool:
    return value is None or (type(value) is int and -_MAX_MS <= value <= _MAX_MS)


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
