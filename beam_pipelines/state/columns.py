"""Scored events as columns: how the backfill moves many events as one element.

One ``ScoredColumns`` holds what a list of ``ScoredEvent`` holds (without the
parsed source), a Python list per field, so a runner encodes a batch in one
pickle rather than one element per event.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from operator import itemgetter
from typing import NamedTuple

import numpy as np

from beam_pipelines.state.records import ScoredEvent


def key_codes(keys: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Integer codes of ``keys`` (in order of first appearance) and the distinct keys."""
    distinct = list(dict.fromkeys(keys))
    code_of = {key: code for code, key in enumerate(distinct)}
    return np.fromiter(map(code_of.__getitem__, keys), np.int64, len(keys)), distinct


def pick(values: Sequence, indices: Sequence[int]) -> list:
    """``[values[i] for i in indices]``, with the loop in C."""
    if len(indices) < 2:  # itemgetter of one index gives the item, not a tuple
        return [values[i] for i in indices]
    return list(itemgetter(*indices)(values))


class ScoredColumns(NamedTuple):
    """Parallel lists, one entry per event (``timestamp_ms``: event time, epoch ms)."""

    event_id: list[str]
    user_id: list[str]
    item_id: list[str]
    event_type: list[str]
    timestamp_ms: list[int]
    reward: list[float]
    engaged: list[bool]
    exposure: list[bool]
    seq: list[int]
    conversion: list[bool]

    @classmethod
    def empty(cls) -> ScoredColumns:
        return cls(*([] for _ in cls._fields))

    @classmethod
    def from_events(cls, events: Iterable[ScoredEvent]) -> ScoredColumns:
        """The events' fields as columns (without ``source``)."""
        fields = zip(*events, strict=True)  # ScoredEvent's fields, ``source`` last
        columns = [list(column) for column in itertools.islice(fields, len(cls._fields))]
        return cls(*columns) if columns else cls.empty()

    @classmethod
    def concat(cls, parts: Iterable[ScoredColumns]) -> ScoredColumns:
        out = cls.empty()
        for part in parts:
            for mine, theirs in zip(out, part, strict=True):
                mine.extend(theirs)
        return out

    def append(self, event: ScoredEvent) -> None:
        for column, value in zip(self, event[:10], strict=True):
            column.append(value)

    @property
    def size(self) -> int:
        """The number of events (``len`` is the number of fields, as for any tuple)."""
        return len(self.event_id)

    def take(self, indices: Sequence[int]) -> ScoredColumns:
        return ScoredColumns(*(pick(column, indices) for column in self))

    def event(self, i: int) -> ScoredEvent:
        """Event ``i`` as a record (no source: a bounded log's letters name it by seq)."""
        return ScoredEvent(*(column[i] for column in self))
