"""The state the replay maintains while it walks the event log.

Counts, interaction histories and the seen sets are plain bookkeeping of the
protocol. The rolling user and item features come from the pipeline's own state
code (``beam_pipelines.state.updaters``), so the streaming variants see exactly
the numbers the streaming job would have written to the online store.
"""

from __future__ import annotations

import collections
import copy
import pickle

import numpy as np

from beam_pipelines.state import ItemState, StateConfig, UserState
from beam_pipelines.state.coengagement import CoEngagement, PairWindow
from beam_pipelines.state.updaters import Embeddings, update_item, update_user
from models.evaluation.data import ReplayLog

RECENT_ITEMS = 20


class World:
    """Everything known after the events applied so far (``applied`` of them)."""

    def __init__(
        self,
        log: ReplayLog,
        embeddings: Embeddings | None = None,
        state_config: StateConfig | None = None,
        recent_items: int = RECENT_ITEMS,
        coengagement: bool = False,
    ):
        self.log = log
        self.applied = 0
        self.counts = np.zeros(log.n_items, dtype=np.float64)
        self.train_counts: np.ndarray | None = None
        self.train_events = np.zeros(log.n_users, dtype=np.int64)
        self.seen: list[dict[int, None]] = [{} for _ in range(log.n_users)]
        self.recent: list[collections.deque[int]] = [
            collections.deque(maxlen=recent_items) for _ in range(log.n_users)
        ]
        self.embeddings = embeddings
        self.state_config = state_config or StateConfig()
        self.user_states: dict[str, UserState] = {}
        self.item_states: dict[str, ItemState] = {}
        # The streaming co-engagement source (beam_pipelines.state.coengagement): each
        # user's pair window, every item's pair counts and accepted event counts.
        self.coengagement = CoEngagement(log.n_items) if coengagement else None
        self.windows = [PairWindow() for _ in range(log.n_users)]
        self.item_events = np.zeros(log.n_items, dtype=np.float64)

    def apply(self, k: int) -> None:
        """Feed event ``k`` (the next one in protocol order) into every state."""
        if k != self.applied:
            raise ValueError(f"events apply in order: expected {self.applied}, got {k}")
        log = self.log
        user, item = int(log.user_idx[k]), int(log.item_idx[k])
        if k < log.n_train:
            self.train_events[user] += 1
        self.item_events[item] += 1.0
        if log.interaction[k]:
            self.counts[item] += 1.0
            previous = self.windows[user].push(item)
            if previous is not None and self.coengagement is not None:
                self.coengagement.add_pairs(item, previous)
            self.seen[user][item] = None
            recent = self.recent[user]
            if item in recent:  # distinct items, newest last
                recent.remove(item)
            recent.append(item)
        if self.embeddings is not None:
            event = log.events[k]
            self.user_states[event.user_id] = update_user(
                self.user_states.get(event.user_id), event, self.embeddings, self.state_config
            )
            self.item_states[event.item_id] = update_item(
                self.item_states.get(event.item_id), event, self.state_config
            )
        self.applied += 1
        if self.applied == log.n_train:
            self.train_counts = self.counts.copy()

    def replica(self) -> World:
        """An independent copy of the state that shares the (read-only) log."""
        twin = copy.copy(self)
        twin.counts = self.counts.copy()
        twin.train_events = self.train_events.copy()
        twin.seen = [dict(s) for s in self.seen]
        twin.recent = [collections.deque(r, maxlen=r.maxlen) for r in self.recent]
        twin.windows = copy.deepcopy(self.windows)
        twin.item_events = self.item_events.copy()
        twin.coengagement = copy.deepcopy(self.coengagement)
        # A pickle round trip is an exact deep copy, several times faster than deepcopy.
        twin.user_states = pickle.loads(pickle.dumps(self.user_states, pickle.HIGHEST_PROTOCOL))
        twin.item_states = pickle.loads(pickle.dumps(self.item_states, pickle.HIGHEST_PROTOCOL))
        return twin

    def seen_items(self, user: int) -> np.ndarray:
        """Items ``user`` interacted with so far (indices)."""
        return np.fromiter(self.seen[user], dtype=np.int64, count=len(self.seen[user]))

    def is_warm(self, user: int) -> bool:
        return bool(self.train_events[user] > 0)
