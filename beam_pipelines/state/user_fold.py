"""The bounded replay of user state, every user's events at once (NumPy).

Gives what folding each user's events one by one through ``UserState`` (with
lateness and deduplication as ``transforms.state._UserStepper``) gives: the same
accept/late/duplicate decision per event and the state after every applied event
(up to float rounding), as columns for the history table. The decisions are
the stepper's own (``updaters.rejection``, per event); the decayed sums are the
streaming job's scan (``decay.decayed_scan``) over every user at once, the
embeddings split where the table version changes (there they are rebuilt from
the last N events, as ``UserState.rebuild_embeddings`` does).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from beam_pipelines.events import Reason
from beam_pipelines.state.columns import ScoredColumns, key_codes, pick
from beam_pipelines.state.config import StateConfig
from beam_pipelines.state.decay import decayed_scan
from beam_pipelines.state.seen import SeenEvents
from beam_pipelines.state.updaters import rejection
from beam_pipelines.state.user_state import (
    embedding_channels,
    keep_last_n,
    pooled,
    rebuilt_embeddings,
    scalar_channels,
)


class UserHistory(NamedTuple):
    """One row per applied event, users one after another in replay order.

    ``applied``: index into the input columns of each row's event. ``recent_*``:
    each row's last-N list, newest first, as lengths and row indices. Embeddings
    are float32, flat, ``emb_dims`` values per row.
    """

    users: list[str]
    user_of_row: np.ndarray
    applied: np.ndarray
    newest_ms: np.ndarray
    count: np.ndarray
    sums: np.ndarray  # rows × half-lives × (events, reward, engaged)
    emb_short: np.ndarray
    emb_long: np.ndarray
    emb_dims: np.ndarray
    versions: list[str]
    version_of_row: np.ndarray
    recent_lengths: np.ndarray
    recent_rows: np.ndarray
    event_ts: np.ndarray  # each row's own event: time (ms), reward, item
    event_reward: np.ndarray
    event_items: list[str]


class Letter(NamedTuple):
    """An event not applied: ``reason`` late or duplicate, with the user's newest time."""

    reason: Reason
    index: int
    newest_ms: int | None


class Groups(NamedTuple):
    """Event indices grouped by entity, each group in replay order."""

    names: list[str]
    order: np.ndarray  # event indices
    starts: np.ndarray  # where each entity's run in ``order`` begins


def replay_groups(columns: ScoredColumns, order: str, key: Sequence[str]) -> Groups:
    """Group events by ``key`` (user or item ids, entities in order of first
    appearance), each group in replay order: arrival (seq) or event time (ties by seq)."""
    codes, names = key_codes(key)
    seq = np.asarray(columns.seq, dtype=np.int64)
    if order == "time":
        ts = np.asarray(columns.timestamp_ms, dtype=np.int64)
        by = np.lexsort((seq, ts, codes))
    else:
        by = np.lexsort((seq, codes))
    sorted_codes = codes[by]
    starts = np.flatnonzero(np.diff(sorted_codes, prepend=-1))
    return Groups(names, by, starts)


def decide(
    ts: list[int], ids: list[str], indices: list[int], lateness_ms: int
) -> tuple[list[int], list[Letter]]:
    """Applied event indices and letters of one user's events in replay order: the
    streaming stepper's decisions (``updaters.rejection``), event by event."""
    seen, newest = SeenEvents(), None
    applied, letters = [], []
    for i in indices:
        t, event_id = ts[i], ids[i]
        reason = rejection(newest, seen, event_id, t, lateness_ms)
        if reason is not None:
            letters.append(Letter(reason, i, newest))
            continue
        applied.append(i)
        seen.add(event_id, t, lateness_ms)
        if newest is None or t > newest:
            newest = t
    return applied, letters


def decide_all(
    columns: ScoredColumns, groups: Groups, lateness_ms: int
) -> tuple[np.ndarray, np.ndarray, list[Letter]]:
    """``decide`` for every user: applied event indices (users one after another),
    applied events per user, and the letters."""
    order, ts, ids = groups.order.tolist(), columns.timestamp_ms, columns.event_id
    bounds = [*groups.starts.tolist(), len(order)]
    applied, sizes, letters = [], [], []
    for start, stop in itertools.pairwise(bounds):
        rows, user_letters = decide(ts, ids, order[start:stop], lateness_ms)
        applied.extend(rows)
        sizes.append(len(rows))
        letters.extend(user_letters)
    return np.array(applied, dtype=np.int64), np.array(sizes, dtype=np.int64), letters


def fold_users(
    columns: ScoredColumns,
    config: StateConfig,
    lateness_ms: int,
    embeddings,
    order: str,
) -> tuple[UserHistory, list[Letter]]:
    """Replay every user in ``columns``; ``embeddings`` an ``EmbeddingSource``."""
    groups = replay_groups(columns, order, columns.user_id)
    applied, sizes, letters = decide_all(columns, groups, lateness_ms)
    rows = _Rows(columns, applied, sizes)
    half_lives = np.array([config.user_short_half_life_s, config.user_long_half_life_s])
    scalars = scalar_channels(rows.reward, rows.engaged)
    sums, newest = decayed_scan(rows.ts, scalars, half_lives, rows.starts)
    recent_lengths, recent_rows = _recent(rows, config.recent_events)
    emb = _Embeddings(rows, newest, half_lives, recent_lengths, recent_rows)
    for start, stop in zip(rows.starts.tolist(), rows.stops.tolist(), strict=True):
        for first, last, table in _segments(newest, start, stop, embeddings):
            emb.add(first, last, start, table)
    history = UserHistory(
        users=groups.names,
        user_of_row=np.repeat(np.arange(len(sizes)), sizes),
        applied=rows.applied,
        newest_ms=newest,
        count=np.arange(len(applied)) - np.repeat(rows.starts, sizes) + 1,
        sums=sums,
        versions=emb.versions,
        recent_lengths=recent_lengths,
        recent_rows=recent_rows,
        event_ts=rows.ts,
        event_reward=rows.reward,
        event_items=rows.items,
        **emb.join(),
    )
    return history, letters


class _Rows:
    """The applied events' columns, users one after another (``starts``/``stops``)."""

    def __init__(self, columns: ScoredColumns, applied: np.ndarray, sizes: np.ndarray):
        self.applied = applied
        self.stops = np.cumsum(sizes)
        self.starts = self.stops - sizes
        take = applied.tolist()
        self.ts = np.asarray(columns.timestamp_ms, dtype=np.int64)[applied]
        self.reward = np.asarray(columns.reward, dtype=np.float64)[applied]
        self.engaged = np.asarray(columns.engaged, dtype=np.float64)[applied]
        self.event_ids = pick(columns.event_id, take)
        self.items = pick(columns.item_id, take)


def _segments(newest: np.ndarray, start: int, stop: int, embeddings):
    """``(first, last, table)``: runs of one user's rows under one table version. The
    version only moves forward with the user's newest time, so boundaries are bisected."""
    while start < stop:
        table = embeddings.current(int(newest[start]))
        lo, hi = start + 1, stop
        if embeddings.current(int(newest[stop - 1])).version == table.version:
            lo = stop
        while lo < hi:
            mid = (lo + hi) // 2
            if embeddings.current(int(newest[mid])).version == table.version:
                lo = mid + 1
            else:
                hi = mid
        yield start, lo, table
        start = lo


def _recent(rows: _Rows, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's last-N rows (``keep_last_n``, as the streaming job keeps them),
    newest first: lengths and flat row indices. A user's rows in time order insert
    each at the end, so the window is the last N rows; users with events out of
    order (or at equal times) are folded through ``keep_last_n``."""
    m = len(rows.ts)
    position = np.arange(m) - np.repeat(rows.starts, rows.stops - rows.starts)
    lengths = np.minimum(position + 1, n)
    offsets = np.cumsum(lengths) - lengths
    flat = np.repeat(np.arange(m), lengths) - (
        np.arange(lengths.sum()) - np.repeat(offsets, lengths)
    )
    unordered = np.flatnonzero((np.diff(rows.ts, prepend=0) <= 0) & (position > 0))
    users = np.unique(np.searchsorted(rows.stops, unordered, side="right"))
    for user in users.tolist():
        start, stop = int(rows.starts[user]), int(rows.stops[user])
        kept = _sorted_last_n(rows, start, stop, n)
        first = int(offsets[start])
        flat[first : first + len(kept)] = kept
    return lengths, flat


def _sorted_last_n(rows: _Rows, start: int, stop: int, n: int) -> list[int]:
    ts, ids = rows.ts.tolist(), rows.event_ids
    kept: list[tuple] = []
    flat: list[int] = []
    for j in range(start, stop):
        keep_last_n(kept, (ts[j], ids[j], j), n)
        flat.extend(row for _, _, row in reversed(kept))
    return flat


class _Embeddings:
    """Pooled embedding columns. Rows are gathered per table version (usually one),
    so item lookups and pooling run once per version; the decayed sums run per
    user segment (a segment after a version change starts from the rebuilt state)."""

    def __init__(self, rows, newest, half_lives, recent_lengths, recent_rows):
        self.rows, self.newest, self.half_lives = rows, newest, half_lives
        self.recent_ends = np.cumsum(recent_lengths)
        self.recent_lengths, self.recent_rows = recent_lengths, recent_rows
        self.tables: dict[str, tuple] = {}  # version → (table, [(first, last, user_start)])

    @property
    def versions(self) -> list[str]:
        return list(self.tables)

    def add(self, first: int, last: int, user_start: int, table) -> None:
        self.tables.setdefault(table.version, (table, []))[1].append((first, last, user_start))

    def join(self) -> dict[str, np.ndarray]:
        n = len(self.rows.ts)
        dims = np.zeros(n, dtype=np.int64)
        version_of_row = np.zeros(n, dtype=np.int64)
        pooled = []
        for version, (table, segments) in enumerate(self.tables.values()):
            rows = np.concatenate([np.arange(first, last) for first, last, _ in segments])
            dims[rows], version_of_row[rows] = table.dim, version
            pooled.append((rows, self._pooled(table, segments, rows)))
        starts = np.cumsum(dims) - dims
        short = np.zeros(int(dims.sum()), dtype=np.float32)
        long = np.zeros_like(short)
        for rows, (pooled_short, pooled_long) in pooled:
            at = (starts[rows][:, None] + np.arange(pooled_short.shape[1])).reshape(-1)
            short[at], long[at] = pooled_short.reshape(-1), pooled_long.reshape(-1)
        return dict(emb_short=short, emb_long=long, emb_dims=dims, version_of_row=version_of_row)

    def _pooled(self, table, segments, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = _channels([self.rows.items[i] for i in rows.tolist()], self.rows.reward[rows], table)
        sizes = [last - first for first, last, _ in segments]
        starts = np.cumsum([0, *sizes[:-1]])
        ts = self.rows.ts[rows]
        carry, carry_t = np.zeros((len(segments), 2, x.shape[1])), ts[starts]
        for k, (first, _, user_start) in enumerate(segments):
            if first > user_start:  # a version change: rebuild from the last N, as the fold does
                carry[k], carry_t[k] = self._rebuilt(first - 1, table), self.newest[first - 1]
        sums, _ = decayed_scan(ts, x, self.half_lives, starts, carry, carry_t)
        return pooled(sums[:, 0, 1:], sums[:, 0, 0]), pooled(sums[:, 1, 1:], sums[:, 1, 0])

    def _rebuilt(self, row: int, table) -> np.ndarray:
        """The embedding channels ``UserState.rebuild_embeddings`` gives after ``row``."""
        stop = int(self.recent_ends[row])
        kept = self.recent_rows[stop - int(self.recent_lengths[row]) : stop][::-1].tolist()
        rows = self.rows
        return rebuilt_embeddings(
            rows.ts[kept].tolist(),
            pick(rows.items, kept),
            rows.reward[kept],
            table.get,
            table.dim,
            self.half_lives,
            int(self.newest[row]),
        )


def _channels(items: list[str], reward: np.ndarray, table) -> np.ndarray:
    codes, distinct = key_codes(items)  # items repeat: look each up once
    return embedding_channels(codes, [table.get(item) for item in distinct], reward, table.dim)
