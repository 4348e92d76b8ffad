"""Restart-safe keyed state: each stateful stage stores its encoded state beside
the feature row it writes, and loads it back at a key's first event in a job.

The state is ``beam_pipelines.state.keyed``'s bytes (the applied event ids
included) in the ``keyed_state`` view, keyed ``<stage>:<entity id>``. A stage
attaches it to its feature rows under ``STATE_COLUMN``; ``WriteFeatures`` writes
the feature rows first and the state rows after them, so the stored state of a
key is never ahead of its stored features: after a restart a redelivered event
is either in the stored state (a duplicate, its features already stored) or is
applied again to that state and rewrites the features.

``StateRestore`` is what a stage is given: how to reach the store (a picklable
factory of the process's shared client, opened in ``DoFn.setup``) and how to
retry a read while the store is down.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics

from beam_pipelines.transforms.retry import RetryPolicy
from feature_repo.features import (
    ENCODED_STATE,
    EXPERIMENT_METRICS,
    ITEM_COENGAGEMENT,
    ITEM_REALTIME,
    KEYED_STATE,
    USER_COENGAGEMENT,
    USER_EXPERIMENTS,
    USER_REALTIME,
)

STATE_COLUMN = "_state"  # on a feature row: its key's encoded state, stored beside it
PROGRESS = "progress"

# The stage whose state rides on each view's rows: the prefix of its state keys.
STAGES = {
    USER_REALTIME: "user",
    ITEM_REALTIME: "item",
    USER_COENGAGEMENT: "pair_window",
    ITEM_COENGAGEMENT: "neighbours",
    USER_EXPERIMENTS: "experiment_user",
    EXPERIMENT_METRICS: "experiment_day",  # on each experiment's row (variant "")
}


def state_key(view: str, entity: str) -> str:
    return f"{STAGES[view]}:{entity}"


def progress_key(view: str) -> str:
    """Where a view's writer records when its last successful flush began (epoch ms)."""
    return f"{PROGRESS}:{view}"


@dataclasses.dataclass(frozen=True)
class StateRestore:
    """``store``: picklable factory of an object with ``read_bytes(view, feature,
    ids)`` (``beam_pipelines.sinks.FeastSinkFactory``)."""

    store: Callable[[], Any]
    retry: RetryPolicy = dataclasses.field(default_factory=RetryPolicy)


def with_state(to_row: Callable[[str, Any], dict], encode: Callable[[Any], bytes]):
    """``to_row`` that also carries the key's encoded state."""

    def row(key: str, state) -> dict:
        return {**to_row(key, state), STATE_COLUMN: encode(state)}

    return row


class Restorer:
    """Loads one stage's keys from the store (a DoFn's ``setup`` calls ``setup``)."""

    def __init__(self, restore: StateRestore, view: str, decode: Callable[[bytes], Any]):
        self._restore = restore
        self._view = view
        self._decode = decode
        self._loaded = Metrics.counter("rtp", f"state_restored_{STAGES[view]}")
        self._retries = Metrics.counter("rtp", f"state_read_retries_{STAGES[view]}")

    def setup(self) -> None:
        self._store = self._restore.store()

    def load(self, entity: str):
        """The key's stored state, or None (a key the store has never seen)."""
        key = state_key(self._view, entity)
        found = self._restore.retry.call(
            lambda: self._store.read_bytes(KEYED_STATE, ENCODED_STATE, [key]),
            on_retry=lambda _: self._retries.inc(),
        )
        data = found.get(key)
        if data is None:
            return None
        self._loaded.inc()
        return self._decode(data)


class RestoringDoFn(beam.DoFn):
    """Base of a stateful stage's DoFn: with a ``StateRestore``, a key's first event
    in the job starts from the store's state and every row carries the state."""

    def __init__(self, restore: StateRestore | None, view: str, decode: Callable[[bytes], Any]):
        self._restorer = Restorer(restore, view, decode) if restore is not None else None

    @property
    def restoring(self) -> bool:
        return self._restorer is not None

    def setup(self):
        if self._restorer is not None:
            self._restorer.setup()

    def read_state(self, key: str, state):
        """The key's state: the runner's, else (its first event in this job) the store's."""
        stored = state.read()
        if stored is None:
            stored = self.load_stored(key)
            if stored is not None:
                state.write(stored)  # read the store once per key and job
        return stored

    def load_stored(self, key: str):
        """The store's state of ``key`` (decoded), or None: not restoring, or a key
        the store has never seen. For a stage that keeps its state in several cells."""
        return self._restorer.load(key) if self._restorer is not None else None

    def row_builder(self, to_row, encode: Callable[[Any], bytes]):
        """``to_row(key, state)``, with the encoded state on each row when restoring."""
        return with_state(to_row, encode) if self._restorer is not None else to_row
