"""One step of per-key state: the logic both the streaming DoFns and the batch folds call."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from beam_pipelines.state.config import StateConfig
from beam_pipelines.state.item_state import ItemState
from beam_pipelines.state.records import ScoredEvent
from beam_pipelines.state.user_state import UserState


class Embeddings(Protocol):
    version: str
    dim: int

    def get(self, item_id: str) -> np.ndarray | None: ...


def is_late(state: UserState | None, event: ScoredEvent, allowed_lateness_ms: int) -> bool:
    """Late: more than the allowed lateness behind the newest event already applied.

    Lateness is measured per user, in event time, against the state's own newest
    event: a Python DoFn cannot read the input watermark, and a per-key rule
    gives the same decision in streaming and in a replay of the same arrival order.
    """
    last = state.last_event_ms if state is not None else None
    return last is not None and last - event.timestamp_ms > allowed_lateness_ms


def update_user(
    state: UserState | None, event: ScoredEvent, embeddings: Embeddings, config: StateConfig
) -> UserState:
    """Apply an accepted event, rebuilding the embeddings on a table version change."""
    if state is None:
        state = UserState(config, embeddings.dim, embeddings.version)
    elif state.embedding_version != embeddings.version:
        state.rebuild_embeddings(embeddings.get, embeddings.version, embeddings.dim)
    state.push(event, embeddings.get(event.item_id), config.recent_events)
    return state


def update_item(state: ItemState | None, event: ScoredEvent, config: StateConfig) -> ItemState:
    if state is None:
        state = ItemState(config)
    state.push(event)
    return state
