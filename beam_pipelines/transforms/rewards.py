"""ComputeRewards: engagement events → ScoredEvent with (reward, engaged, exposure)."""

from __future__ import annotations

import apache_beam as beam

from beam_pipelines.events import EngagementEvent
from beam_pipelines.rewards import RewardConfig
from beam_pipelines.state.records import ScoredEvent


def score_event(
    event: EngagementEvent, config: RewardConfig, seq: int = 0, keep_source: bool = True
) -> ScoredEvent:
    """``keep_source``: reference the parsed event, for replayable dead letters."""
    reward, engaged = config.reward(event)
    return ScoredEvent(
        event.event_id,
        event.user_id,
        event.item_id,
        event.event_type,
        event.timestamp_ms,
        reward,
        engaged,
        config.is_exposure(event.event_type),
        seq,
        config.is_conversion(event.event_type, engaged),
        event if keep_source else None,
    )


class ComputeRewards(beam.PTransform):
    """Map each event to its reward. The parser already restricted the event types
    to those of ``config``, so every event has a rule."""

    def __init__(self, config: RewardConfig):
        super().__init__()
        self._config = config

    def expand(self, events):
        return events | "Score" >> beam.Map(score_event, self._config)
