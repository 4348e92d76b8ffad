"""What the simulator hands out: one ``SimRecord`` per output line, and the
ground truth of items (``ItemInfo``) and of interest changes (``InterestShift``)."""

from __future__ import annotations

import dataclasses
from typing import Any

from beam_pipelines.events import Reason


@dataclasses.dataclass(frozen=True, slots=True)
class SimRecord:
    """One output line (``data`` has no trailing newline) and its label.

    ``kind`` is ``"clean"`` or a ``DirtyKind`` value; ``expected_reason`` is None for
    clean lines. ``event_time_ms`` is the event time to publish as ``event_ts``, None
    when the line carries no usable one (unparseable timestamp).
    """

    line: int
    data: bytes
    kind: str
    expected_reason: Reason | None
    event_time_ms: int | None

    @property
    def is_clean(self) -> bool:
        return self.expected_reason is None

    def label(self) -> dict[str, Any]:
        """The ``<out>.labels.jsonl`` entry of a dirty line."""
        reason = self.expected_reason.value if self.expected_reason else None
        return {"line": self.line, "kind": self.kind, "expected_reason": reason}


@dataclasses.dataclass(frozen=True, slots=True)
class ItemInfo:
    """Ground truth of one item. ``quality`` is the latent engagement bonus (logit)."""

    item_id: str
    topic: str
    topic_weights: dict[str, float]
    duration_ms: int
    title: str
    base_popularity: float
    release_ms: int
    popularity_decay_h: float
    quality: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True, slots=True)
class InterestShift:
    """A change of a user's top topic, effective from the session starting at ``time_ms``.

    ``kind``: ``"shift"`` (abrupt) or ``"drift"`` (gradual). ``event_index`` is the
    0-based index among clean events, ``line`` the 0-based output line, of that
    session's first event.
    """

    user_id: str
    time_ms: int
    event_index: int
    line: int
    kind: str
    old_topic: str
    new_topic: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
