"""After ranking: drop recently seen items, explore with Thompson sampling, diversify (MMR).

Pure functions over NumPy arrays of one request's candidates (row ``i`` of every
array is candidate ``i``); randomness only through an injected ``Generator``.
``arrange`` composes them into the final top-k.
"""

from __future__ import annotations

import dataclasses

import numpy as np

EXPLOIT = "ranked"
EXPLORE = "explore"


def unseen_rows(rows: np.ndarray, recent: np.ndarray) -> np.ndarray:
    """Candidate catalogue ``rows`` (-1: not in the catalogue) that are in the
    catalogue and not among ``recent`` rows, in their order.

    A binary search in the few sorted recent rows: for 500 candidates ~5x cheaper
    than ``np.isin``, which sorts both.
    """
    rows = np.asarray(rows, dtype=np.int64)
    known = rows[rows >= 0]
    recent = np.sort(np.asarray(recent, dtype=np.int64))
    if len(recent) == 0:
        return known
    at = np.minimum(np.searchsorted(recent, known), len(recent) - 1)
    return known[recent[at] != known]


def explore_slots(k: int, share: float) -> int:
    """Slots of a top-k given to exploration: ``floor(k · share)``."""
    return int(np.floor(k * share + 1e-9))


def explore_positions(k: int, n_explore: int) -> list[int]:
    """0-based positions of ``n_explore`` exploration slots spread evenly over a top-k.

    Slot ``j = 1..n`` sits at ``floor(j · k / (n + 1))``: 2 slots of 10 at indices
    3 and 6, 1 slot of 10 at 5. The positions are distinct and below k for n ≤ k.
    """
    if not 0 <= n_explore <= k:
        raise ValueError(f"n_explore must be in [0, {k}], got {n_explore}")
    return [j * k // (n_explore + 1) for j in range(1, n_explore + 1)]


def thompson_pick(
    alpha: np.ndarray, beta: np.ndarray, n: int, rng: np.random.Generator
) -> np.ndarray:
    """Indices of the ``n`` candidates with the highest draw θ ~ Beta(α, β), best first.

    α, β must be > 0 (the pipeline's posteriors include a prior of 1 each).
    """
    if n <= 0 or len(alpha) == 0:
        return np.zeros(0, dtype=np.int64)
    theta = rng.beta(np.maximum(alpha, 1e-9), np.maximum(beta, 1e-9))
    return np.argsort(-theta, kind="stable")[:n]


def normalized(scores: np.ndarray) -> np.ndarray:
    """Scores min-max scaled to [0, 1] (all ones when they are all equal)."""
    if len(scores) == 0:
        return scores.astype(np.float64)
    low, high = float(scores.min()), float(scores.max())
    if high - low <= 0:
        return np.ones(len(scores))
    return (scores - low) / (high - low)


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors, dtype=np.float64), where=norms > 0)


def mmr(
    relevance: np.ndarray,
    embeddings: np.ndarray,
    k: int,
    weight: float,
    *,
    unit: np.ndarray | None = None,
) -> np.ndarray:
    """Maximal marginal relevance: indices of ``k`` candidates in pick order.

    Greedy: pick ``argmax (1 − λ)·rel_i − λ·max_{j picked} cos(e_i, e_j)`` with
    ``rel`` the min-max normalised relevance and λ = ``weight``. λ = 0 is the plain
    relevance order; ties go to the earlier candidate. ``unit``, if given, is
    ``unit_rows(embeddings)`` already computed (float64).
    """
    n = len(relevance)
    k = min(k, n)
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    rel = normalized(np.asarray(relevance, dtype=np.float64))
    if weight <= 0:
        return np.argsort(-rel, kind="stable")[:k]
    if unit is None:
        unit = unit_rows(np.asarray(embeddings, dtype=np.float64))
    # gain = base − λ · penalty, with penalty the max similarity to the picks so far
    # and base (1 − λ)·rel, −inf once picked; updated in place (a pick is ~6 NumPy
    # calls on n values, so call overhead is most of the cost).
    base = (1.0 - weight) * rel
    gain = base.copy()
    penalty = np.full(n, -np.inf)
    scaled = np.empty(n)
    picked = np.empty(k, dtype=np.int64)
    for step in range(k):
        best = int(gain.argmax())
        picked[step] = best
        if step == k - 1:
            break
        base[best] = -np.inf
        np.maximum(penalty, unit @ unit[best], out=penalty)
        np.multiply(penalty, weight, out=scaled)
        np.subtract(base, scaled, out=gain)
    return picked


@dataclasses.dataclass(frozen=True)
class Arranged:
    """The final order: candidate indices and, per slot, ``EXPLOIT`` or ``EXPLORE``."""

    indices: np.ndarray
    sources: list[str]


def arrange(
    relevance: np.ndarray,
    embeddings: np.ndarray,
    alpha: np.ndarray,
    beta: np.ndarray,
    k: int,
    *,
    explore_share: float,
    diversity_weight: float,
    rng: np.random.Generator,
    unit: np.ndarray | None = None,
) -> Arranged:
    """Top-k of already filtered candidates: MMR for the exploit slots, Thompson
    sampling among the rest for the exploration slots (spread by ``explore_positions``).
    ``unit``: the embeddings as unit rows, if already computed (see ``mmr``).
    """
    k = min(k, len(relevance))
    n_explore = explore_slots(k, explore_share)
    exploit = mmr(relevance, embeddings, k - n_explore, diversity_weight, unit=unit)
    taken = np.zeros(len(relevance), dtype=bool)
    taken[exploit] = True
    rest = np.flatnonzero(~taken)  # ascending, as setdiff1d gives
    explore = rest[thompson_pick(alpha[rest], beta[rest], n_explore, rng)]
    slots = set(explore_positions(len(exploit) + len(explore), len(explore)))
    order: list[int] = []
    sources: list[str] = []
    exploit_iter, explore_iter = iter(exploit.tolist()), iter(explore.tolist())
    for position in range(len(exploit) + len(explore)):
        if position in slots:
            order.append(next(explore_iter))
            sources.append(EXPLORE)
        else:
            order.append(next(exploit_iter))
            sources.append(EXPLOIT)
    return Arranged(np.asarray(order, dtype=np.int64), sources)
