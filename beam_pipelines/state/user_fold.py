"""The bounded replay of user state, every user's events at once (NumPy).

Gives what folding each user's events one by one through ``UserState`` (with
lateness and deduplication as ``transforms.state._UserStepper``) gives: the same
accept/late/duplicate decision per event and the state after every applied event
(up to float rounding), as columns for the history table. The decisions are a
plain loop with the same ``SeenEvents``; the decayed sums are prefix sums
(``state.prefix``), split where the embedding table version changes (there the
embeddings are rebuilt from the last N events, as ``UserState.rebuild_embeddings``
does).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from beam_pipelines.state.columns import ScoredColumns
from beam_pipelines.state.config import StateConfig
from beam_pipelines.state.decay import DecayedSums
from beam_pipelines.state.prefix import decayed_prefix
from beam_pipelines.state.seen import SeenEvents
from beam_pipelines.state.user_state import EMB_WEIGHT, UserState

LATE, DUPLICATE = "late", "duplicate"
_TINY = float(np.finfo(np.float64).tiny)


class UserHistory(NamedTuple):
    """One row per applied event, users one after another in replay order.

    ``applied``: index into the input columns of each row's event. ``recent_*``:
    each row's last-N list, newest first, as lengths and indices into ``applied``.
    Embeddings are float32, flat, ``emb_dims`` values per row.
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


class Letter(NamedTuple):
    """An event not applied: ``reason`` late or duplicate, with the user's newest time."""

    reason: str
    index: int
    newest_ms: int | None


def replay_order(columns: ScoredColumns, order: str, key: Sequence[str]) -> list[int]:
    """Event indices grouped by ``key`` (user or item ids), each group in replay order:
    arrival (seq) or event time (ties by seq)."""
    seq = columns.seq
    if order == "time":
        ts = columns.timestamp_ms
        return sorted(range(len(seq)), key=lambda i: (key[i], ts[i], seq[i]))
    return sorted(range(len(seq)), key=lambda i: (key[i], seq[i]))


def groups(indices: list[int], key: Sequence[str]):
    """``(key, indices)`` runs of equal keys in ``indices``."""
    start = 0
    for stop in range(1, len(indices) + 1):
        if stop == len(indices) or key[indices[stop]] != key[indices[start]]:
            yield key[indices[start]], indices[start:stop]
            start = stop


def decide(
    columns: ScoredColumns, indices: list[int], lateness_ms: int
) -> tuple[list[int], list[Letter]]:
    """Applied event indices and letters of one user's events in replay order."""
    ts, ids = columns.timestamp_ms, columns.event_id
    seen, newest = SeenEvents(), None
    applied, letters = [], []
    for i in indices:
        t = ts[i]
        if newest is not None and newest - t > lateness_ms:
            letters.append(Letter(LATE, i, newest))
        elif ids[i] in seen:
            letters.append(Letter(DUPLICATE, i, newest))
        else:
            applied.append(i)
            seen.add(ids[i], t, lateness_ms)
            if newest is None or t > newest:
                newest = t
    return applied, letters


class _Rows:
    """Column chunks of the history, one per user, joined at the end."""

    def __init__(self):
        self.chunks: dict[str, list[np.ndarray]] = {}
        self.users: list[str] = []
        self.versions: dict[str, int] = {}
        self.rows = 0

    def add(self, **columns: np.ndarray) -> None:
        for name, values in columns.items():
            self.chunks.setdefault(name, []).append(values)

    def join(self, name: str, dtype) -> np.ndarray:
        parts = self.chunks.get(name)
        return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)


def fold_users(
    columns: ScoredColumns,
    config: StateConfig,
    lateness_ms: int,
    embeddings,
    order: str,
) -> tuple[UserHistory, list[Letter]]:
    """Replay every user in ``columns``; ``embeddings`` an ``EmbeddingSource``."""
    rows, letters = _Rows(), []
    half_lives = np.array([config.user_short_half_life_s, config.user_long_half_life_s])
    for user, indices in groups(replay_order(columns, order, columns.user_id), columns.user_id):
        applied, user_letters = decide(columns, indices, lateness_ms)
        letters.extend(user_letters)
        _fold_one(rows, user, applied, columns, config, half_lives, embeddings)
    n_sums = rows.join("sums", np.float64)
    history = UserHistory(
        users=rows.users,
        user_of_row=rows.join("user", np.int64),
        applied=rows.join("applied", np.int64),
        newest_ms=rows.join("newest", np.int64),
        count=rows.join("count", np.int64),
        sums=n_sums.reshape(-1, 2, 3),
        emb_short=rows.join("emb_short", np.float32),
        emb_long=rows.join("emb_long", np.float32),
        emb_dims=rows.join("dims", np.int64),
        versions=list(rows.versions),
        version_of_row=rows.join("version", np.int64),
        recent_lengths=rows.join("recent_lengths", np.int64),
        recent_rows=rows.join("recent_rows", np.int64),
    )
    return history, letters


def _fold_one(rows, user, applied, columns, config, half_lives, embeddings):
    m, base = len(applied), rows.rows
    ts = np.fromiter((columns.timestamp_ms[i] for i in applied), np.int64, m)
    reward = np.fromiter((columns.reward[i] for i in applied), np.float64, m)
    engaged = np.fromiter((columns.engaged[i] for i in applied), np.float64, m)
    scalars = np.stack([np.ones(m), reward, engaged], axis=1)
    sums, newest = decayed_prefix(ts, scalars, half_lives)
    recent_lengths, recent_local = _recent(ts, [columns.event_id[i] for i in applied], config)
    items = [columns.item_id[i] for i in applied]
    emb = _Embeddings(rows, newest, items, reward, ts, applied, columns, half_lives, recent_local)
    for start, stop, table in _segments(newest, embeddings):
        emb.segment(start, stop, table, recent_lengths)
    rows.users.append(user)
    rows.add(
        user=np.full(m, len(rows.users) - 1),
        applied=np.asarray(applied, dtype=np.int64),
        newest=newest,
        count=np.arange(1, m + 1),
        sums=sums.reshape(-1),
        recent_lengths=recent_lengths,
        recent_rows=recent_local + base,
    )
    rows.rows += m


def _segments(newest: np.ndarray, embeddings):
    """``(start, stop, table)``: runs of rows under one table version. The version
    only moves forward with the user's newest time, so boundaries are bisected."""
    start, m = 0, len(newest)
    while start < m:
        table = embeddings.current(int(newest[start]))
        lo, hi = start + 1, m
        if embeddings.current(int(newest[-1])).version == table.version:
            lo = m
        while lo < hi:
            mid = (lo + hi) // 2
            if embeddings.current(int(newest[mid])).version == table.version:
                lo = mid + 1
            else:
                hi = mid
        yield start, lo, table
        start = lo


def _recent(ts: np.ndarray, ids: list[str], config: StateConfig) -> tuple[np.ndarray, np.ndarray]:
    """Each row's last-N events (by time, then event_id), newest first: lengths and
    flat row indices within the user."""
    n, m = config.recent_events, len(ts)
    lengths = np.minimum(np.arange(1, m + 1), n)
    if m < 2 or bool(np.all(ts[1:] > ts[:-1])):
        # In time order the last N rows are the last N events.
        starts = np.cumsum(lengths) - lengths
        flat = np.repeat(np.arange(m), lengths) - (
            np.arange(lengths.sum()) - np.repeat(starts, lengths)
        )
        return lengths, flat
    keys = sorted(range(m), key=lambda j: (int(ts[j]), ids[j]))
    rank = np.empty(m, dtype=np.int64)
    rank[keys] = np.arange(m)
    kept: list[int] = []
    flat: list[int] = []
    for j in range(m):
        bisect.insort(kept, int(rank[j]))
        if len(kept) > n:
            del kept[0]
        flat.extend(reversed(kept))
    return lengths, np.asarray(keys, dtype=np.int64)[np.asarray(flat, dtype=np.int64)]


class _Embeddings:
    """Pooled embedding columns of one user, one table version segment at a time."""

    def __init__(self, rows, newest, items, reward, ts, applied, columns, half_lives, recent):
        self.rows, self.newest, self.items = rows, newest, items
        self.reward, self.ts, self.half_lives = reward, ts, half_lives
        self.ids = [columns.event_id[i] for i in applied]
        self.recent = recent

    def segment(self, start: int, stop: int, table, recent_lengths: np.ndarray) -> None:
        dim = table.dim
        carry, carry_t = None, None
        if start > 0:  # a version change: rebuild from the last N events, as the fold does
            carry, carry_t = (
                self._rebuilt(start, table, recent_lengths),
                int(self.newest[start - 1]),
            )
        x = _channels(self.items[start:stop], self.reward[start:stop], table)
        sums, _ = decayed_prefix(self.ts[start:stop], x, self.half_lives, carry, carry_t)
        rows = self.rows
        version = rows.versions.setdefault(table.version, len(rows.versions))
        rows.add(
            emb_short=_pooled(sums[:, 0]).reshape(-1),
            emb_long=_pooled(sums[:, 1]).reshape(-1),
            dims=np.full(stop - start, dim),
            version=np.full(stop - start, version),
        )

    def _rebuilt(self, start: int, table, recent_lengths: np.ndarray) -> np.ndarray:
        """The embedding channels ``UserState.rebuild_embeddings`` gives before row ``start``."""
        before = start - 1
        offset = int(recent_lengths[:before].sum())
        kept = self.recent[offset : offset + int(recent_lengths[before])][::-1]  # oldest first
        width = EMB_WEIGHT + 1 + table.dim  # the scalars, then the embedding
        fresh = DecayedSums(tuple(self.half_lives.tolist()), width)
        for j in kept:
            x = UserState._channels_for(
                table.dim, float(self.reward[j]), False, table.get(self.items[j])
            )
            fresh.push(int(self.ts[j]), x)
        fresh.push(int(self.newest[before]), np.zeros(width))
        return fresh.values[:, EMB_WEIGHT:]


def _channels(items: list[str], reward: np.ndarray, table) -> np.ndarray:
    """Rows of (|r|, r·e) as ``UserState`` pushes them: zero without an embedding or reward."""
    vectors = [table.get(item) for item in items]
    x = np.zeros((len(items), 1 + table.dim))
    has = np.fromiter((v is not None for v in vectors), bool, len(items)) & (reward != 0.0)
    if has.any():
        found = np.array([v for v, h in zip(vectors, has, strict=True) if h], dtype=np.float64)
        x[has, 0] = np.abs(reward[has])
        x[has, 1:] = reward[has, None] * found
    return x


def _pooled(sums: np.ndarray) -> np.ndarray:
    """Rows × (weight, weighted sum…) → float32 pooled embeddings (0 where no weight)."""
    weight = sums[:, :1]
    ok = weight >= _TINY
    pooled = np.divide(sums[:, 1:], weight, out=np.zeros_like(sums[:, 1:]), where=ok)
    return pooled.astype(np.float32)
