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
_new_fields = tuple.__new__  # EventFields without its Python-level __new__
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
    types = frozenset(t for t in config.event_types if _plain_id(t))
    out: list[EventFields | EventValidationError] = []
    for line in lines:
        fields = _fast(line, config, latest, types) if type(line) is bytes else None
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


def _fast(raw: bytes, config: ValidationConfig, latest_ms: int, types) -> EventFields | None:
    """The event if ``raw`` is plainly valid, else None (let ``parse_event`` decide).
    ``types``: the configured event types that are themselves valid ids."""
    if len(raw) > config.max_message_bytes:
        return None
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if type(obj) is not dict or not _KNOWN.issuperset(obj):
        return None
    get = obj.get
    event_id, user_id, item_id = get("event_id"), get("user_id"), get("item_id")
    event_type = get("event_type")
    if not (
        type(event_id) is str
        and type(user_id) is str
        and type(item_id) is str
        and type(event_type) is str
        and event_type in types
        and 0 < len(event_id) <= MAX_ID_CHARS
        and 0 < len(user_id) <= MAX_ID_CHARS
        and 0 < len(item_id) <= MAX_ID_CHARS
        # Not printable: control characters (the contract rejects them), and also
        # some valid ones (NBSP, ...), which the full parser then accepts.
        and event_id.isprintable()
        and user_id.isprintable()
        and item_id.isprintable()
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
    # orjson's dict is already a fresh one: no copy as parse_event makes.
    return _new_fields(
        EventFields,
        (event_id, user_id, item_id, event_type, ts, watch, duration, surface, context),
    )


def _plain_id(value) -> bool:
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
