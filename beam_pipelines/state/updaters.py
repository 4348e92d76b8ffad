"""One step of per-key state: the logic both the streaming DoFns and the backfill's folds call."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from beam_pipelines.events import Reason
from beam_pipelines.state.config import StateConfig
from beam_pipelines.state.item_state import ItemState
from beam_pipelines.state.records import ScoredEvent
from beam_pipelines.state.seen import SeenEvents
from beam_pipelines.state.user_state import UserState


class Embeddings(Protocol):
    version: str
    dim: int

    def get(self, item_id: str) -> np.ndarray | None: ...


def is_late(newest_ms: int | None, timestamp_ms: int, allowed_lateness_ms: int) -> bool:
    """Late: more than the allowed lateness behind the newest event already applied
    (``newest_ms`` None: nothing applied yet). All in milliseconds.

    Lateness is measured per user, in event time, against the state's own newest
    event: a Python DoFn cannot read the input watermark, and a per-key rule
    gives the same decision in streaming and in a replay of the same arrival order.
    """
    return newest_ms is not None and newest_ms - timestamp_ms > allowed_lateness_ms


def rejection(
    newest_ms: int | None,
    seen: SeenEvents,
    event_id: str,
    timestamp_ms: int,
    allowed_lateness_ms: int,
) -> Reason | None:
    """Why a user does not apply an event: ``LATE`` (checked first: a late one is never
    looked up, its id may be forgotten) or ``DUPLICATE`` (its id already applied);
    None to apply it, after which the caller adds its id to ``seen``."""
    if is_late(newest_ms, timestamp_ms, allowed_lateness_ms):
        return Reason.LATE
    if event_id in seen:
        return Reason.DUPLICATE
    return None


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
