"""ComputeFeatures: the streaming graph, and the settings the backfill shares.

raw messages → ParseEvents → ComputeRewards → UpdateUserState (lateness,
deduplication by event_id, user state) → UpdateItemState, with every dead letter
(invalid, duplicate, late) in one output. The backfill
(``transforms.history_graph``) runs the same per-key steps over a bounded log.
"""

from __future__ import annotations

import dataclasses

import apache_beam as beam
from apache_beam.metrics import Metrics

from beam_pipelines.embedding_source import EmbeddingSource
from beam_pipelines.events import ValidationConfig
from beam_pipelines.rewards import RewardConfig
from beam_pipelines.state import StateConfig
from beam_pipelines.transforms.coengagement import (
    ITEM_PAIR_ROWS,
    USER_PAIR_ROWS,
    UpdateCoEngagement,
)
from beam_pipelines.transforms.dead_letters import DEAD_LETTER, DeadLetter
from beam_pipelines.transforms.parse import EVENTS, ParseEvents
from beam_pipelines.transforms.restore import StateRestore
from beam_pipelines.transforms.rewards import ComputeRewards
from beam_pipelines.transforms.state import ACCEPTED, ROWS, UpdateItemState, UpdateUserState

USER_ROWS = "user_rows"
ITEM_ROWS = "item_rows"
USER_HISTORY = "user_history"
ITEM_HISTORY = "item_history"
USER_FINAL = "user_final"
ITEM_FINAL = "item_final"
DEAD_LETTERS = "dead_letters"
ACCEPTED_EVENTS = "accepted_events"


@dataclasses.dataclass(frozen=True)
class FeatureSettings:
    """Plain values the graph needs; validated where they come in (CLI, options)."""

    rewards: RewardConfig
    state: StateConfig = dataclasses.field(default_factory=StateConfig)
    embeddings: EmbeddingSource = dataclasses.field(default_factory=EmbeddingSource)
    allowed_lateness_s: float = 600.0
    min_timestamp_ms: int | None = None
    # Bounded logs only: "time" replays event-time order (a bounded log has no late
    # data); "arrival" replays file order, reproducing a stream's decisions.
    replay_order: str = "time"
    # Streaming only: each stage resumes a key's state from the online store at its
    # first event in the job, and its rows carry the state to store (transforms.restore).
    restore: StateRestore | None = None

    def __post_init__(self):
        if self.replay_order not in ("arrival", "time"):
            raise ValueError(f"replay_order must be 'arrival' or 'time', got {self.replay_order!r}")

    def validation(self) -> ValidationConfig:
        limits = {"event_types": self.rewards.event_types}
        if self.min_timestamp_ms is not None:
            limits["min_timestamp_ms"] = self.min_timestamp_ms
        return ValidationConfig(**limits)


class CountDeadLetters(beam.DoFn):
    """One counter per reason, created once per reason rather than per letter."""

    def setup(self):
        self._counters: dict[str, object] = {}

    def process(self, letter: DeadLetter):
        counter = self._counters.get(letter.reason)
        if counter is None:
            counter = self._counters[letter.reason] = Metrics.counter(
                "rtp", f"dead_letter_{letter.reason}"
            )
        counter.inc()
        yield letter


class ComputeFeatures(beam.PTransform):
    """Raw messages → ``{user_rows, item_rows, user_pair_rows, item_pair_rows,
    dead_letters, accepted_events}``, each key's newest row dict per bundle (the store
    keeps only the newest); the pair rows are ``user_coengagement`` and
    ``item_coengagement``; ``accepted_events`` the ScoredEvents applied to the users
    (not late, not duplicate), for branches that need the same decisions.
    """

    def __init__(self, settings: FeatureSettings):
        super().__init__()
        self._settings = settings

    def expand(self, raw):
        s = self._settings
        parsed = raw | "ParseEvents" >> ParseEvents(s.validation())
        scored = parsed[EVENTS] | "ComputeRewards" >> ComputeRewards(s.rewards)
        lateness = s.allowed_lateness_s
        users = scored | "UpdateUserState" >> UpdateUserState(
            s.state, s.embeddings, lateness, s.restore
        )
        accepted = users[ACCEPTED]
        item_rows = accepted | "UpdateItemState" >> UpdateItemState(s.state, s.restore, lateness)
        pairs = accepted | "UpdateCoEngagement" >> UpdateCoEngagement(
            s.rewards, restore=s.restore, allowed_lateness_s=lateness
        )
        dead = (
            (parsed[DEAD_LETTER], users[DEAD_LETTER])
            | "MergeDeadLetters" >> beam.Flatten()
            | "CountDeadLetters" >> beam.ParDo(CountDeadLetters())
        )
        return {
            USER_ROWS: users[ROWS],
            ITEM_ROWS: item_rows,
            USER_PAIR_ROWS: pairs[USER_PAIR_ROWS],
            ITEM_PAIR_ROWS: pairs[ITEM_PAIR_ROWS],
            DEAD_LETTERS: dead,
            ACCEPTED_EVENTS: accepted,
        }
