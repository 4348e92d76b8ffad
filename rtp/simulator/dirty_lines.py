"""Dirty lines: a copy of a recent clean line with one defect, a redelivery, or a
valid event far behind its user's newest one; each labelled with the reason the
pipeline must give it (``config.EXPECTED_REASON``)."""

from __future__ import annotations

import collections
from typing import Any, NamedTuple

from beam_pipelines.events import MAX_ID_CHARS, MAX_MESSAGE_BYTES
from rtp.simulator.behaviour import SessionEvent, User
from rtp.simulator.catalogue import Catalogue
from rtp.simulator.config import DAY_MS, SECOND_MS, DirtyKind, SimulatorConfig
from rtp.simulator.encoding import dumps, event_object
from rtp.simulator.randomness import Draws

DUPLICATE_WINDOW_LINES = 50
_TS_1990_MS = 631_152_000_000  # 1990-01-01T00:00:00Z
# These need earlier clean lines; before the first one another kind is drawn.
_NEEDS_HISTORY = frozenset({DirtyKind.DUPLICATE, DirtyKind.LATE})


class CleanLine(NamedTuple):
    line: int
    data: bytes
    user: int
    ts: int
    obj: dict[str, Any]
    item: int


class Dirt:
    """Builds dirty lines from the recent clean history, with its own random stream."""

    def __init__(self, cfg: SimulatorConfig, catalog: Catalogue, draws: Draws):
        self.cfg = cfg
        self.catalog = catalog
        self.draws = draws
        self.left = cfg.dirty_lines
        self.lines_left = cfg.n_events + self.left

    def next_is_dirty(self) -> bool:
        """Sequential sampling: exactly ``left`` dirty slots, uniformly placed."""
        dirty = self.left > 0 and self.draws.uniform() * self.lines_left < self.left
        self.lines_left -= 1
        self.left -= dirty
        return dirty

    def kind(self, has_history: bool) -> DirtyKind:
        kinds = self.cfg.dirty_kinds
        if not has_history:
            kinds = tuple(k for k in kinds if k not in _NEEDS_HISTORY) or (
                DirtyKind.MALFORMED_JSON,
            )
        return self.draws.choice(kinds)

    def mutate(self, kind: DirtyKind, base: CleanLine, event_id: str) -> tuple[bytes, int | None]:
        """A copy of ``base`` with a fresh id and one defect: (line bytes, event time or None)."""
        obj = dict(base.obj, event_id=event_id)
        handler = getattr(self, f"_{kind.value}")
        result = handler(obj, base)
        if isinstance(result, bytes):
            return result, base.ts
        return dumps(obj), result

    def _malformed_json(self, obj: dict[str, Any], base: CleanLine) -> bytes:
        text = dumps(obj)
        return text[: 1 + self.draws.below(len(text) - 2)]

    def _json_array(self, obj: dict[str, Any], base: CleanLine) -> bytes:
        return dumps([obj])

    def _missing_user_id(self, obj: dict[str, Any], base: CleanLine) -> int:
        del obj["user_id"]
        return base.ts

    def _empty_item_id(self, obj: dict[str, Any], base: CleanLine) -> int:
        obj["item_id"] = ""
        return base.ts

    def _id_too_long(self, obj: dict[str, Any], base: CleanLine) -> int:
        name = self.draws.choice(("user_id", "item_id"))
        obj[name] = obj[name] + "x" * (MAX_ID_CHARS + 1 - len(obj[name]) + self.draws.below(200))
        return base.ts

    def _control_char_id(self, obj: dict[str, Any], base: CleanLine) -> int:
        name = self.draws.choice(("user_id", "item_id"))
        char = self.draws.choice(("\x00", "\x07", "\t", "\n", "\x1b", "\x7f", "\x85"))
        obj[name] = obj[name][:3] + char + obj[name][3:]  # json.dumps escapes it: still one line
        return base.ts

    def _unknown_event_type(self, obj: dict[str, Any], base: CleanLine) -> int:
        obj["event_type"] = self.draws.choice(
            ("purchase", "clikc", "VIEW", "impresion", "add_to_cart")
        )
        return base.ts

    def _bad_timestamp(self, obj: dict[str, Any], base: CleanLine) -> None:
        obj["timestamp"] = self.draws.choice(
            (
                "yesterday",
                "2026-13-45T25:61:00Z",
                "2026-01-01",
                "2026-01-01T10:00:00",
                "",
                "1767225600000ms",
                True,
                [2026, 1, 1],
            )
        )

    def _timestamp_1990(self, obj: dict[str, Any], base: CleanLine) -> int:
        obj["timestamp"] = _TS_1990_MS + self.draws.below(365 * DAY_MS)
        return obj["timestamp"]

    def _as_view(self, obj: dict[str, Any], base: CleanLine) -> int:
        obj["event_type"] = "view"
        obj["item_duration_ms"] = self.catalog.duration(base.item)
        return obj["item_duration_ms"]

    def _negative_watch_ms(self, obj: dict[str, Any], base: CleanLine) -> int:
        self._as_view(obj, base)
        obj["watch_ms"] = -(1 + self.draws.below(30_000))
        return base.ts

    def _watch_exceeds_duration(self, obj: dict[str, Any], base: CleanLine) -> int:
        duration = self._as_view(obj, base)
        obj["watch_ms"] = duration * (11 + self.draws.below(40))
        return base.ts

    def _oversize(self, obj: dict[str, Any], base: CleanLine) -> int:
        obj["context"] = {"blob": "x" * (MAX_MESSAGE_BYTES + 1 + self.draws.below(8192))}
        return base.ts

    def _invalid_utf8(self, obj: dict[str, Any], base: CleanLine) -> bytes:
        text = dumps(obj)
        at = text.index(b'"item_id":"') + len(b'"item_id":"')
        bad = self.draws.choice((b"\xff", b"\xfe", b"\xc3\x28", b"\x80", b"\xed\xa0\x80"))
        return text[:at] + bad + text[at:]

    def duplicate(self, recent: collections.deque[CleanLine], line: int) -> CleanLine | None:
        window = [c for c in recent if c.line >= line - DUPLICATE_WINDOW_LINES]
        return self.draws.choice(window) if window else None

    def late_event(self, user: User, newest_ts: int, event_id: str) -> tuple[bytes, int]:
        """A valid, fresh event ``late_by_s`` before the user's newest event time."""
        ts = newest_ts - int(self.cfg.late_by_s * SECOND_MS)
        item = self.catalog.sample_popular(ts, self.draws.uniform())
        event_type = self.draws.choice(("impression", "view", "like"))
        watch = (
            max(1, int(self.catalog.duration(item) * self.draws.uniform()))
            if event_type == "view"
            else None
        )
        event = SessionEvent(ts, event_type, item, watch, "", 0)
        obj = event_object(self.catalog, user, event, event_id, context={"device": user.device})
        return dumps(obj), ts
