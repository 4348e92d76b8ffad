"""Reward-weighted decayed pooling of item embeddings: the query tower's main input.

The pipeline keeps, per half-life ``h``, ``Σ r·e·2^(−Δt/h) / Σ |r|·2^(−Δt/h)``
over the user's events whose item has an embedding (``UserState``). Training
computes the same quantity from the user's last-N events (``user_recent_items``,
``user_recent_ts_ms``, ``user_recent_rewards`` of the point-in-time features)
through the item tower being trained, so the exported table pooled by the
pipeline gives exactly the query tower's training input.

The pooled vector is a ratio, so it does not depend on the reference time: ages
are taken relative to the newest listed event (the user's last event), which
avoids underflow for a user who has been away for many short half-lives.
Ages are seconds, half-lives seconds, timestamps epoch milliseconds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from beam_pipelines.state import StateConfig

EmbeddingLookup = Callable[[str], "np.ndarray | None"]


def half_lives_s(config: StateConfig | None = None) -> tuple[float, float]:
    """(short, long) user half-lives in seconds, as the pipeline uses them."""
    config = config or StateConfig()
    return config.user_short_half_life_s, config.user_long_half_life_s


def pooling_coefficients(
    ts_ms: Sequence[int],
    rewards: Sequence[float],
    half_lives: tuple[float, ...],
    known: Sequence[bool] | None = None,
) -> np.ndarray:
    """``[len(half_lives), n]`` weights ``c`` with pooled_h = Σ_k c[h, k] · e_k.

    ``c[h, k] = r_k·2^(−age_k/h) / Σ_j |r_j|·2^(−age_j/h)``, zero for events with
    reward 0 or an item without embedding (``known`` False), and all zero when the
    denominator is (the pipeline then reports a zero vector).
    """
    n = len(ts_ms)
    out = np.zeros((len(half_lives), n), dtype=np.float64)
    if n == 0:
        return out
    ts = np.asarray(ts_ms, dtype=np.float64)
    r = np.asarray(rewards, dtype=np.float64)
    if known is not None:
        r = np.where(np.asarray(known, dtype=bool), r, 0.0)
    age_s = (ts.max() - ts) / 1000.0
    for row, h in enumerate(half_lives):
        decay = np.exp2(-age_s / h)
        norm = np.sum(np.abs(r) * decay)
        if norm > 0:
            out[row] = r * decay / norm
    return out


def pool_user(
    recent_items: Sequence[str],
    recent_ts_ms: Sequence[int],
    recent_rewards: Sequence[float],
    lookup: EmbeddingLookup,
    dim: int,
    half_lives: tuple[float, ...] | None = None,
) -> np.ndarray:
    """``[len(half_lives), dim]`` pooled embeddings of one user's recent events (float32)."""
    half_lives = half_lives or half_lives_s()
    vectors = [lookup(item) for item in recent_items]
    known = [v is not None for v in vectors]
    coef = pooling_coefficients(recent_ts_ms, recent_rewards, half_lives, known)
    matrix = np.zeros((len(vectors), dim), dtype=np.float64)
    for k, v in enumerate(vectors):
        if v is not None:
            matrix[k] = v
    return (coef @ matrix).astype(np.float32)


def _as_list(value: object) -> list:
    """A list feature as a list; missing (None, NaN from a failed join) → empty."""
    if value is None or isinstance(value, float):
        return []
    return list(value)  # type: ignore[call-overload]


def history_arrays(
    recent_items: Sequence[Sequence[str] | None],
    recent_ts_ms: Sequence[Sequence[int] | None],
    recent_rewards: Sequence[Sequence[float] | None],
    index: dict[str, int],
    max_len: int,
    half_lives: tuple[float, ...] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Batch form for training: ``idx [B, L]`` (catalogue rows, 0 where padded) and
    ``coef [B, H, L]`` (float32, 0 where padded) so pooled = einsum(coef, emb[idx]).

    Items missing from ``index`` get coefficient 0, as the pipeline skips items
    without an embedding.
    """
    half_lives = half_lives or half_lives_s()
    batch = len(recent_items)
    idx = np.zeros((batch, max_len), dtype=np.int32)
    coef = np.zeros((batch, len(half_lives), max_len), dtype=np.float32)
    for b in range(batch):
        items = _as_list(recent_items[b])[:max_len]
        if not items:
            continue
        rows = [index.get(i, -1) for i in items]
        known = [r >= 0 for r in rows]
        ts = _as_list(recent_ts_ms[b])[: len(items)]
        rw = _as_list(recent_rewards[b])[: len(items)]
        coef[b, :, : len(items)] = pooling_coefficients(ts, rw, half_lives, known)
        idx[b, : len(items)] = [max(r, 0) for r in rows]
    return idx, coef
