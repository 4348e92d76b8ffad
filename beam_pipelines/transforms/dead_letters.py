"""The dead-letter record: what failed, why, when, and the raw bytes."""

from __future__ import annotations

import base64
import json
import time
from typing import NamedTuple

DEAD_LETTER = "dead_letter"


class DeadLetter(NamedTuple):
    """An input that was not applied. ``failed_at_ms``: processing time, epoch ms."""

    reason: str
    detail: str
    payload: bytes
    event_id: str | None = None
    event_time_ms: int | None = None
    failed_at_ms: int = 0

    @classmethod
    def now(cls, reason: str, detail: str, payload: bytes, **kwargs) -> DeadLetter:
        return cls(reason, detail, payload, failed_at_ms=int(time.time() * 1000), **kwargs)

    def to_json(self) -> bytes:
        """JSON line; the payload is base64 so any bytes survive."""
        record = self._asdict()
        record["payload"] = base64.b64encode(self.payload).decode("ascii")
        return json.dumps(record, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, line: bytes | str) -> DeadLetter:
        record = json.loads(line)
        record["payload"] = base64.b64decode(record["payload"])
        return cls(**record)
