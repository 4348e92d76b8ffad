"""ComputeFeatureHistory: the bounded graph on batches of events rather than single ones.

The stages of the streaming ``ComputeFeatures`` (parse, reward, user state with
lateness and deduplication, item state, one output of dead letters), with the
same decisions, counters and final values, but each element is a batch: chunks of
log lines (each parsed and scored by the same ``parse_event`` and ``score_event``,
``batch_score``), users and items grouped by a few shards rather than one key
each, and each shard replayed (``state.user_fold``, ``state.item_fold``: the
stepper's ``rejection`` per event, decayed sums as NumPy prefix scans) straight
into Arrow tables. Tests hold the replay to the per-event steppers.
"""

from __future__ import annotations

import zlib

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam import typehints
from apache_beam.metrics import Metrics

from beam_pipelines.batch_score import score_lines
from beam_pipelines.events import Reason, ValidationConfig
from beam_pipelines.history_tables import item_finals, item_table, user_finals, user_table
from beam_pipelines.rewards import RewardConfig
from beam_pipelines.state.columns import ScoredColumns, key_codes
from beam_pipelines.state.item_fold import fold_items
from beam_pipelines.state.records import ScoredEvent
from beam_pipelines.state.user_fold import fold_users
from beam_pipelines.transforms import batch_coders  # noqa: F401  (registers the coders)
from beam_pipelines.transforms.coengagement import (
    ITEM_PAIR_ROWS,
    USER_PAIR_ROWS,
    UpdateCoEngagement,
)
from beam_pipelines.transforms.dead_letters import DEAD_LETTER
from beam_pipelines.transforms.graph import (
    DEAD_LETTERS,
    ITEM_FINAL,
    ITEM_HISTORY,
    USER_FINAL,
    USER_HISTORY,
    CountDeadLetters,
    FeatureSettings,
)
from beam_pipelines.transforms.state import ACCEPTED, FINAL, HISTORY, duplicate_letter, late_letter
from beam_pipelines.transforms.tagged import TaggedParDo

EVENTS_PER_SHARD = 50_000  # events a fold holds at once, on average (see shards_for)
MAX_SHARDS = 4096
_SHARDED = typehints.KV[int, ScoredColumns]
_SHARD_TABLE = typehints.Tuple[int, pa.Table]

_VALID = Metrics.counter("rtp", "events_valid")
_INVALID = Metrics.counter("rtp", "events_invalid")
_USER_UPDATES = Metrics.counter("rtp", "user_updates")
_USERS = Metrics.counter("rtp", "users")
_ITEMS = Metrics.counter("rtp", "items")


class _ParseChunks(beam.DoFn):
    def __init__(self, validation: ValidationConfig, rewards: RewardConfig):
        self._validation = validation
        self._rewards = rewards

    def process(self, chunk):
        seqs, lines = chunk
        columns, letters = score_lines(seqs, lines, self._validation, self._rewards)
        _VALID.inc(columns.size)
        _INVALID.inc(len(letters))
        for letter in letters:
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, letter)
        if columns.size:
            yield columns


def shards_for(events: int, events_per_shard: int = EVENTS_PER_SHARD) -> int:
    """Shards of a log of about ``events`` events: ``ceil(events / events_per_shard)``,
    at least 1 and at most ``MAX_SHARDS``.

    A fold holds one shard's events as one element (one ``ScoredColumns``), so this
    bounds an element at about ``events_per_shard`` events, a few MB, and gives a
    distributed runner ``events / events_per_shard`` tasks per stage. Keys are
    hashed to shards, so a shard's size varies around the mean; one key (a user,
    an item) never splits, so a key with more events than that makes its shard
    larger (its state is one replay).
    """
    if events_per_shard < 1:
        raise ValueError(f"events_per_shard must be >= 1, got {events_per_shard}")
    return min(MAX_SHARDS, max(1, -(-events // events_per_shard)))


def _by_shard(columns: ScoredColumns, field: str, n_shards: int):
    """``(shard, columns)`` per shard present, events in their order; the shard of a
    key is stable across processes (crc32, not ``hash``)."""
    keys = getattr(columns, field)
    codes, distinct = key_codes(keys)
    shard_of_key = np.fromiter((zlib.crc32(k.encode()) % n_shards for k in distinct), np.int64)
    shards = shard_of_key[codes]
    by = np.argsort(shards, kind="stable")
    bounds = np.searchsorted(shards[by], np.arange(n_shards + 1)).tolist()
    for shard in range(n_shards):
        if bounds[shard + 1] > bounds[shard]:
            yield shard, columns.take(by[bounds[shard] : bounds[shard + 1]].tolist())


class _FoldShard(beam.DoFn):
    """Replays one shard's events; ``finals`` also emits each entity's last row."""

    def __init__(self, settings: FeatureSettings, finals: bool):
        self._settings = settings
        self._finals = finals


class _FoldUsers(_FoldShard):
    def process(self, element):
        shard, parts = element
        s = self._settings
        columns = ScoredColumns.concat(parts)
        lateness_ms = int(s.allowed_lateness_s * 1000)
        history, letters = fold_users(columns, s.state, lateness_ms, s.embeddings, s.replay_order)
        for letter in letters:
            event = columns.event(letter.index)
            if letter.reason is Reason.LATE:
                dead = late_letter(event, letter.newest_ms)
            else:
                dead = duplicate_letter(event)
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, dead)
        _USERS.inc(len(history.users))
        _USER_UPDATES.inc(len(history.applied))
        # The item stage sorts again: with nothing dropped, no need to reorder.
        yield columns if not letters else columns.take(history.applied.tolist())
        yield beam.pvalue.TaggedOutput(HISTORY, (shard, user_table(history)))
        for row in user_finals(history) if self._finals else ():
            yield beam.pvalue.TaggedOutput(FINAL, row)


class _FoldItems(_FoldShard):
    def process(self, element):
        shard, parts = element
        s = self._settings
        history = fold_items(ScoredColumns.concat(parts), s.state, s.replay_order)
        _ITEMS.inc(len(history.items))
        yield beam.pvalue.TaggedOutput(HISTORY, (shard, item_table(history, s.state)))
        for row in item_finals(history, s.state) if self._finals else ():
            yield beam.pvalue.TaggedOutput(FINAL, row)


class ComputeFeatureHistory(beam.PTransform):
    """``(seqs, lines)`` chunks of a bounded log → ``{user_history, item_history}``
    (``(shard, table)``, Arrow tables in ``history.arrow_schema``, one per shard),
    ``{user_final, item_final}`` (the last row of each entity) and ``dead_letters``.
    ``finals=False`` leaves the final outputs empty, for a job that does not write
    them; with finals the final co-engagement rows come too
    (``{user_pair_rows, item_pair_rows}``). ``shards``: groups per stage
    (``shards_for``)."""

    def __init__(self, settings: FeatureSettings, finals: bool = True, shards: int = 1):
        super().__init__()
        if not 1 <= shards <= MAX_SHARDS:
            raise ValueError(f"shards must be in 1..{MAX_SHARDS}, got {shards}")
        self._settings = settings
        self._finals = finals
        self._shards = shards

    def expand(self, chunks):
        s, n = self._settings, self._shards
        parsed = chunks | "ParseChunks" >> _par_do(
            _ParseChunks(s.validation(), s.rewards), ScoredColumns, DEAD_LETTER, main=ACCEPTED
        )
        users = (
            parsed[ACCEPTED]
            | "ShardByUser" >> beam.FlatMap(_by_shard, "user_id", n).with_output_types(_SHARDED)
            | "GroupByUserShard" >> beam.GroupByKey()
            | "FoldUsers"
            >> _par_do(
                _FoldUsers(s, self._finals),
                ScoredColumns,
                HISTORY,
                FINAL,
                DEAD_LETTER,
                main=ACCEPTED,
            )
        )
        items = (
            users[ACCEPTED]
            | "ShardByItem" >> beam.FlatMap(_by_shard, "item_id", n).with_output_types(_SHARDED)
            | "GroupByItemShard" >> beam.GroupByKey()
            | "FoldItems"
            >> _par_do(_FoldItems(s, self._finals), typehints.Any, HISTORY, FINAL, main="none")
        )
        dead = (
            (parsed[DEAD_LETTER], users[DEAD_LETTER])
            | "MergeDeadLetters" >> beam.Flatten()
            | "CountDeadLetters" >> beam.ParDo(CountDeadLetters()).with_output_types(typehints.Any)
        )
        pairs = {}
        if self._finals:  # co-engagement has no history: final rows for the online store
            pairs = (
                users[ACCEPTED]
                | "Events" >> beam.FlatMap(_events).with_output_types(ScoredEvent)
                | "UpdateCoEngagement" >> UpdateCoEngagement(s.rewards, s.replay_order)
            )
            pairs = {USER_PAIR_ROWS: pairs[USER_PAIR_ROWS], ITEM_PAIR_ROWS: pairs[ITEM_PAIR_ROWS]}
        return {
            **pairs,
            USER_HISTORY: users[HISTORY],
            ITEM_HISTORY: items[HISTORY],
            USER_FINAL: users[FINAL],
            ITEM_FINAL: items[FINAL],
            DEAD_LETTERS: dead,
        }


def _events(columns: ScoredColumns):
    return (columns.event(i) for i in range(columns.size))


def _par_do(fn: beam.DoFn, main_type, *tags: str, main: str):
    """A multi-output ParDo that every runner keeps apart (``TaggedParDo``), with
    declared output types: otherwise Beam infers them from process's bytecode at
    construction (over a second for these DoFns), and the history tables get a
    coder that sizes them without pickling (``batch_coders``)."""
    types = {tag: _SHARD_TABLE if tag == HISTORY else typehints.Any for tag in tags}
    return TaggedParDo(fn, *tags, main=main, types={**types, main: main_type})
