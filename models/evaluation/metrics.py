"""Rank of the target, HR@K and NDCG@K (EVALUATION.md, point 4).

The rank is the number of other candidates scoring at least as high as the
target: ties count against the target, so a constant scorer ranks every target
last. Rank 0 is the top; NDCG@K = 1 / log2(rank + 2) when rank < K.
"""

from __future__ import annotations

import numpy as np


def target_rank(scores: np.ndarray, target: int, excluded: np.ndarray) -> int:
    """Rank of ``target`` among all items except ``excluded`` (which must not hold it).

    NaN scores count as -inf.
    """
    if np.isnan(scores).any():
        scores = np.where(np.isnan(scores), -np.inf, scores)
    score = scores[target]
    at_least = int(np.count_nonzero(scores >= score)) - 1  # minus the target itself
    if excluded.size:
        at_least -= int(np.count_nonzero(scores[excluded] >= score))
    return at_least


def hit_ndcg(ranks: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-event hit (0/1) and NDCG@k gain from integer ranks."""
    ranks = np.asarray(ranks, dtype=np.int64)
    hit = ranks < k
    gain = np.where(hit, 1.0 / np.log2(np.maximum(ranks, 0) + 2.0), 0.0)
    return hit.astype(np.float64), gain


def summarize(ranks: np.ndarray, ks: list[int]) -> dict[str, float | int]:
    """``hr@K`` and ``ndcg@K`` averaged over events, and ``n_events``."""
    ranks = np.asarray(ranks, dtype=np.int64)
    out: dict[str, float | int] = {"n_events": int(ranks.size)}
    for k in ks:
        hit, gain = hit_ndcg(ranks, k)
        out[f"hr@{k}"] = float(hit.mean()) if ranks.size else 0.0
        out[f"ndcg@{k}"] = float(gain.mean()) if ranks.size else 0.0
    return out


def rolling_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over ``window`` events (shorter at the start)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return values
    window = max(1, min(window, values.size))
    csum = np.concatenate(([0.0], np.cumsum(values)))
    idx = np.arange(1, values.size + 1)
    lo = np.maximum(idx - window, 0)
    return (csum[idx] - csum[lo]) / (idx - lo)
