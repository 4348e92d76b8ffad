"""Expected feature rows from the pure state code, applied in a given order."""

from __future__ import annotations

from collections.abc import Iterable

from beam_pipelines.embedding_source import EmbeddingSource
from beam_pipelines.state import StateConfig
from beam_pipelines.state.records import ScoredEvent
from beam_pipelines.state.updaters import is_late, update_item, update_user
from feature_repo.features import EVENT_TIMESTAMP, ITEM_KEY, USER_KEY


def user_fold(
    events: Iterable[ScoredEvent],
    config: StateConfig,
    lateness_ms: int,
    embeddings: EmbeddingSource | None = None,
) -> tuple[list[dict], list[ScoredEvent], list[str]]:
    """user_realtime rows, accepted events and late event ids of applying ``events``
    in this order (what UpdateUserState does per user)."""
    source = embeddings or EmbeddingSource()
    states, rows, accepted, late = {}, [], [], []
    for e in events:
        state = states.get(e.user_id)
        if is_late(state.last_event_ms if state else None, e.timestamp_ms, lateness_ms):
            late.append(e.event_id)
            continue
        newest = max(e.timestamp_ms, state.last_event_ms if state else 0)
        state = states[e.user_id] = update_user(state, e, source.current(newest), config)
        rows.append({USER_KEY: e.user_id, EVENT_TIMESTAMP: state.last_event_ms, **state.features()})
        accepted.append(e)
    return rows, accepted, late


def item_fold(events: Iterable[ScoredEvent], config: StateConfig) -> list[dict]:
    """item_realtime rows of applying ``events`` in this order."""
    states, rows = {}, []
    for e in events:
        state = states[e.item_id] = update_item(states.get(e.item_id), e, config)
        rows.append(
            {ITEM_KEY: e.item_id, EVENT_TIMESTAMP: state.sums.t_ref_ms, **state.features(config)}
        )
    return rows
