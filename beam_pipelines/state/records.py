"""The event as the state code sees it: identity, time and its reward."""

from __future__ import annotations

from typing import Any, NamedTuple


class ScoredEvent(NamedTuple):
    """An accepted event with its reward. ``timestamp_ms``: event time, epoch ms."""

    event_id: str
    user_id: str
    item_id: str
    event_type: str
    timestamp_ms: int
    reward: float
    engaged: bool
    exposure: bool
    # Arrival order in a bounded log (file, line); 0 in streaming, where arrival
    # order is the processing order itself.
    seq: int = 0
    # An exposure's success for the item's Beta posterior (RewardConfig.is_conversion).
    conversion: bool = False
    # The parsed event it was scored from (beam_pipelines.events.EngagementEvent):
    # a late or duplicate dead letter carries it in the contract's JSON, so it can
    # be replayed as it came. None where no parsed event exists (tests, replays).
    source: Any = None
