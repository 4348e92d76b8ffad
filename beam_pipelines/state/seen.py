"""Which event ids a user has already applied, as far back as lateness lets them return.

A redelivered event is either within the allowed lateness of its user's newest
event time (then its id is still here: a duplicate) or further behind (then it is
late and rejected before its id is looked up). So ids older than the newest event
time minus the allowed lateness can be forgotten without ever applying an event
twice, whatever the delivery delay: memory is bounded by the user's events within
the lateness window, with no timers and no dependence on the watermark.
"""

from __future__ import annotations


class SeenEvents:
    """``event_id → event time (ms)`` of a user's applied events within ``horizon_ms``
    behind the newest one."""

    __slots__ = ("_ids", "_newest_ms", "_oldest_ms")

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}
        self._newest_ms = None
        self._oldest_ms = None

    def __contains__(self, event_id: str) -> bool:
        return event_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, event_id: str, timestamp_ms: int, horizon_ms: int) -> None:
        """Remember an applied event; forget ids more than ``horizon_ms`` behind the newest."""
        self._ids[event_id] = timestamp_ms
        if self._newest_ms is None or timestamp_ms > self._newest_ms:
            self._newest_ms = timestamp_ms
        if self._oldest_ms is None or timestamp_ms < self._oldest_ms:
            self._oldest_ms = timestamp_ms
        cutoff = self._newest_ms - horizon_ms
        # Prune with slack, so a steady stream rebuilds the dict now and then, not
        # at every event; ids between the slack and the cutoff are harmless.
        if self._oldest_ms < cutoff - (horizon_ms // 2 + 1000):
            self._ids = {k: t for k, t in self._ids.items() if t >= cutoff}
            self._oldest_ms = min(self._ids.values())

    def ids(self) -> dict[str, int]:
        """``event_id → event time (ms)``, what an encoding of the state keeps."""
        return self._ids

    @classmethod
    def from_ids(cls, ids: dict[str, int]) -> SeenEvents:
        seen = cls()
        seen._ids = ids
        seen._newest_ms = max(ids.values()) if ids else None
        seen._oldest_ms = min(ids.values()) if ids else None
        return seen

    def __reduce__(self):
        return (SeenEvents.from_ids, (self._ids,))
