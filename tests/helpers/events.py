"""Event builders: contract JSON bytes, parsed events and scored events."""

from __future__ import annotations

import json
from typing import Any

from beam_pipelines.events import EngagementEvent, parse_event
from beam_pipelines.rewards import SHORT_VIDEO, RewardConfig
from beam_pipelines.state.records import ScoredEvent
from beam_pipelines.transforms.rewards import score_event

T0_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z, epoch ms
SECOND_MS = 1000
MINUTE_MS = 60 * SECOND_MS


def event_json(
    event_id: str,
    user_id: str = "u1",
    item_id: str = "i1",
    event_type: str = "like",
    t_ms: int = T0_MS,
    **extra: Any,
) -> bytes:
    """One engagement event as Pub/Sub data (compact JSON, UTF-8)."""
    record = {
        "event_id": event_id,
        "user_id": user_id,
        "item_id": item_id,
        "event_type": event_type,
        "timestamp": t_ms,
        **extra,
    }
    return json.dumps(record, separators=(",", ":")).encode()


def event(
    event_id: str,
    user_id: str = "u1",
    item_id: str = "i1",
    event_type: str = "like",
    t_ms: int = T0_MS,
    **extra: Any,
) -> EngagementEvent:
    """The parsed form of ``event_json`` with the same arguments."""
    return parse_event(event_json(event_id, user_id, item_id, event_type, t_ms, **extra))


def scored(
    event_id: str,
    user_id: str = "u1",
    item_id: str = "i1",
    event_type: str = "like",
    t_ms: int = T0_MS,
    seq: int = 0,
    config: RewardConfig = SHORT_VIDEO,
    **extra: Any,
) -> ScoredEvent:
    """The ScoredEvent ComputeRewards makes of that event (``seq``: arrival order)."""
    return score_event(event(event_id, user_id, item_id, event_type, t_ms, **extra), config, seq)
