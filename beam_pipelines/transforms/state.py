"""UpdateUserState and UpdateItemState: thin Beam wrappers over beam_pipelines.state.

A stateful DoFn per key reads the state, applies one event with the pure-Python
updaters and writes it back; at the end of the bundle it emits the feature row of
each key it updated (its newest state: the online store keeps nothing else). Every
row is stamped with the entity's newest event time. The backfill folds the same
updaters over each key's events in replay order (``transforms.history_graph``).

UpdateUserState also deduplicates: per user it remembers the ids of applied events
within the allowed lateness of the newest one (``beam_pipelines.state.seen``), so a
redelivery is dead-lettered ``duplicate`` (or ``late``, if it is that far behind)
and never applied twice. Keying deduplication by user rather than by event id
saves a shuffle, a state cell and a timer per event (see ARCHITECTURE.md).

Given a ``StateRestore`` (the streaming job's default), each stage loads a key's
state from the online store at its first event in the job and stores it with
every row (``transforms.restore``): a restarted job resumes where the store is.
A redelivery of an event the previous run applied to the user is a duplicate
for the user stage, which still passes it on: the item and co-engagement stages
may not have stored it before the stop, and decide by their own applied ids.
"""

from __future__ import annotations

import json

import apache_beam as beam
from apache_beam import typehints
from apache_beam.metrics import Metrics
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec
from apache_beam.utils.windowed_value import WindowedValue

from beam_pipelines.embedding_source import EmbeddingSource
from beam_pipelines.events import Reason
from beam_pipelines.state import StateConfig
from beam_pipelines.state.keyed import (
    ItemKeyState,
    UserKeyState,
    decode_item_key,
    encode_item_key,
    encode_user,
    restore_user,
)
from beam_pipelines.state.records import ScoredEvent
from beam_pipelines.state.seen import SeenEvents
from beam_pipelines.state.updaters import rejection, update_item, update_user
from beam_pipelines.transforms.dead_letters import DEAD_LETTER, DeadLetter
from beam_pipelines.transforms.restore import RestoringDoFn, StateRestore
from beam_pipelines.transforms.state_coders import item_state_coder, user_state_coder
from feature_repo.features import EVENT_TIMESTAMP, ITEM_KEY, ITEM_REALTIME, USER_KEY, USER_REALTIME

# A str key gets a deterministic coder, which keyed state needs (and which a
# Dataflow --update must keep: change it only with a new job).
STR_KEYED = typehints.KV[str, typehints.Any]

_LATE = Metrics.counter("rtp", "late")
_DUPLICATES = Metrics.counter("rtp", "duplicates")
_USER_UPDATES = Metrics.counter("rtp", "user_updates")
_ITEM_UPDATES = Metrics.counter("rtp", "item_updates")
_ITEM_REPLAYS = Metrics.counter("rtp", "item_replays_skipped")

ROWS = "rows"  # streaming: a key's newest row per bundle
ACCEPTED = "accepted"
HISTORY = "history"  # backfill: one entity's rows
FINAL = "final"  # backfill: the entity's last row


def user_row(user_id: str, state) -> dict:
    return {USER_KEY: user_id, EVENT_TIMESTAMP: state.last_event_ms, **state.features()}


def item_row(item_id: str, state, config: StateConfig) -> dict:
    return {ITEM_KEY: item_id, EVENT_TIMESTAMP: state.sums.t_ref_ms, **state.features(config)}


def _letter(reason: Reason, detail: str, event: ScoredEvent) -> DeadLetter:
    """The event as it came (contract JSON), else the scored record."""
    if event.source is not None:
        payload = event.source.to_json()
    else:
        payload = json.dumps(event._asdict(), separators=(",", ":")).encode()
    return DeadLetter.now(
        reason.value,
        detail,
        payload,
        event_id=event.event_id,
        event_time_ms=event.timestamp_ms,
    )


def late_letter(event: ScoredEvent, newest_ms: int) -> DeadLetter:
    _LATE.inc()
    behind = newest_ms - event.timestamp_ms
    detail = f"event time {event.timestamp_ms} ms is {behind} ms behind the user's newest"
    return _letter(Reason.LATE, detail, event)


def duplicate_letter(event: ScoredEvent) -> DeadLetter:
    _DUPLICATES.inc()
    return _letter(Reason.DUPLICATE, f"event_id {event.event_id} already applied", event)


class _UserStepper:
    """Per-user logic of the stateful DoFn (tests fold it as the backfill's oracle)."""

    def __init__(self, config: StateConfig, allowed_lateness_ms: int, embeddings: EmbeddingSource):
        self.config = config
        self.allowed_lateness_ms = allowed_lateness_ms
        self.embeddings = embeddings

    def step(self, state: UserKeyState | None, event: ScoredEvent):
        """``(state, None)`` after applying ``event``, or ``(state, dead letter)`` if it
        is late or a duplicate (checked in that order: a late one is never looked up)."""
        user, seen, restored = state if state is not None else (None, SeenEvents(), frozenset())
        newest = user.last_event_ms if user is not None else None
        reason = rejection(
            newest, seen, event.event_id, event.timestamp_ms, self.allowed_lateness_ms
        )
        if reason is Reason.LATE:
            return state, late_letter(event, newest)
        if reason is Reason.DUPLICATE:
            return state, duplicate_letter(event)
        _USER_UPDATES.inc()
        # The user's newest event time never decreases, so neither does the version.
        newest = max(event.timestamp_ms, newest or 0)
        user = update_user(user, event, self.embeddings.current(newest), self.config)
        seen.add(event.event_id, event.timestamp_ms, self.allowed_lateness_ms)
        return UserKeyState(user, seen, restored), None


class NewestRows:
    """The newest state of each key updated in a bundle, as feature rows at its end.

    The store keeps only an entity's newest row, so building (and shuffling) a
    row for every event of a key in a bundle would be thrown away downstream.
    Each row keeps the timestamp and window of the key's last applied event.
    """

    def __init__(self, to_row):
        self._to_row = to_row
        self._newest: dict[str, tuple] = {}

    def update(self, key: str, state, timestamp, window) -> None:
        self._newest[key] = (state, timestamp, window)

    def flush(self):
        newest, self._newest = self._newest, {}
        for key, (state, timestamp, window) in newest.items():
            yield WindowedValue(self._to_row(key, state), timestamp, (window,))


class _UserStateFn(RestoringDoFn):
    STATE = ReadModifyWriteStateSpec("user_state", user_state_coder())

    def __init__(self, stepper: _UserStepper, restore: StateRestore | None = None):
        super().__init__(restore, USER_REALTIME, restore_user)
        self._stepper = stepper

    def start_bundle(self):
        self._rows = NewestRows(self.row_builder(lambda key, s: user_row(key, s.user), encode_user))

    def process(
        self,
        element,
        state=beam.DoFn.StateParam(STATE),
        timestamp=beam.DoFn.TimestampParam,
        window=beam.DoFn.WindowParam,
    ):
        user_id, event = element
        stored = self.read_state(user_id, state)
        new_state, letter = self._stepper.step(stored, event)
        if letter is not None:
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, letter)
            if letter.reason == Reason.DUPLICATE.value and event.event_id in stored.restored:
                yield event  # applied before a restart: the other stages check their own ids
            return
        state.write(new_state)
        self._rows.update(user_id, new_state, timestamp, window)
        yield event

    def finish_bundle(self):
        for row in self._rows.flush():
            yield beam.pvalue.TaggedOutput(ROWS, row)


def replay_key(order: str):
    """Sort key of a bounded replay: arrival (seq) or event time (ties by arrival)."""
    if order == "time":
        return lambda e: (e.timestamp_ms, e.seq)
    return lambda e: e.seq


class UpdateUserState(beam.PTransform):
    """ScoredEvent → ``accepted`` events, user_realtime rows and ``dead_letter`` (late,
    duplicate).

    ``allowed_lateness_s``: how far behind the user's newest event time an event
    may be and still apply; later ones become dead letters with reason ``late``.
    An event_id already applied to the user becomes a dead letter ``duplicate``.
    Emits each updated user's newest row per bundle as ``rows``. ``restore``: load
    each user's state from the store at its first event and carry it on the rows.
    """

    def __init__(
        self,
        config: StateConfig,
        embeddings: EmbeddingSource,
        allowed_lateness_s: float = 600.0,
        restore: StateRestore | None = None,
    ):
        super().__init__()
        if allowed_lateness_s < 0:
            raise ValueError(f"allowed_lateness_s must be >= 0 seconds, got {allowed_lateness_s}")
        self._stepper = _UserStepper(config, int(allowed_lateness_s * 1000), embeddings)
        self._restore = restore

    def expand(self, events):
        key_by_user = beam.Map(lambda e: (e.user_id, e)).with_output_types(STR_KEYED)
        keyed = events | "KeyByUser" >> key_by_user
        apply = beam.ParDo(_UserStateFn(self._stepper, self._restore))
        return keyed | "ApplyEvents" >> apply.with_outputs(ROWS, DEAD_LETTER, main=ACCEPTED)


class _ItemStateFn(RestoringDoFn):
    STATE = ReadModifyWriteStateSpec("item_state", item_state_coder())

    def __init__(self, config: StateConfig, lateness_ms: int, restore: StateRestore | None):
        super().__init__(restore, ITEM_REALTIME, decode_item_key)
        self._config = config
        self._lateness_ms = lateness_ms

    def start_bundle(self):
        config = self._config
        to_row = lambda item_id, s: item_row(item_id, s.item, config)  # noqa: E731
        self._rows = NewestRows(self.row_builder(to_row, encode_item_key))

    def process(
        self,
        element,
        state=beam.DoFn.StateParam(STATE),
        timestamp=beam.DoFn.TimestampParam,
        window=beam.DoFn.WindowParam,
    ):
        item_id, event = element
        item, seen = self.read_state(item_id, state) or (None, SeenEvents())
        if event.event_id in seen:  # restoring: the user stage passes its restored duplicates
            _ITEM_REPLAYS.inc()
            return
        item = update_item(item, event, self._config)
        if self.restoring:  # only a restored duplicate can come twice
            seen.add(event.event_id, event.timestamp_ms, self._lateness_ms)
        new_state = ItemKeyState(item, seen)
        state.write(new_state)
        _ITEM_UPDATES.inc()
        self._rows.update(item_id, new_state, timestamp, window)

    def finish_bundle(self):
        yield from self._rows.flush()


class UpdateItemState(beam.PTransform):
    """Accepted ScoredEvents → each updated item's newest row per bundle.
    ``restore``: as in UpdateUserState; an item remembers the ids it applied
    within ``allowed_lateness_s`` of its newest event, to skip a restored duplicate."""

    def __init__(
        self,
        config: StateConfig,
        restore: StateRestore | None = None,
        allowed_lateness_s: float = 600.0,
    ):
        super().__init__()
        self._config = config
        self._restore = restore
        self._lateness_ms = int(allowed_lateness_s * 1000)

    def expand(self, events):
        key_by_item = beam.Map(lambda e: (e.item_id, e)).with_output_types(STR_KEYED)
        keyed = events | "KeyByItem" >> key_by_item
        apply = _ItemStateFn(self._config, self._lateness_ms, self._restore)
        return keyed | "ApplyEvents" >> beam.ParDo(apply)
